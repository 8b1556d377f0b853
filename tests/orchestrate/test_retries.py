"""The retry gates' policy (lvjob.orchestrate.retries): which runs a gate submits again, given how their jobs ended."""

from collections import Counter

import pytest

from helpers import index_entry
from lvjob.orchestrate import retries

NODE = "stage1-r2-lr0.0001"
SUBMITTED = "2026-12-06T03:00:00.000+00:00"
LATEST = {NODE: {"job_id": "7_3", "at": SUBMITTED}}


def due(state: str | None, used: int = 0, max_retries: int = 2, status: str = "running", **fields) -> list[retries.Retry]:
    states = {"7_3": state} if state else {}
    run = index_entry(NODE, "runs/r", status, **{"step": 2, "steps": 4} | fields)
    return retries.due([run], LATEST, states, Counter({NODE: used}), max_retries)


@pytest.mark.parametrize("state", ["FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "TIMEOUT", "PREEMPTED", "UNKNOWN"])
def test_a_run_whose_job_crashed_or_was_lost_is_retried(state):
    assert [(r.node, r.job_id, r.state) for r in due(state)] == [(NODE, "7_3", state)]


def test_a_retry_says_how_the_job_ended_and_where_it_left_its_run():
    assert due("FAILED")[0].why == "job 7_3 FAILED; run left running at step 2/4"


def test_a_retry_of_a_run_that_failed_carries_the_runners_error():
    assert due("FAILED", status="failed", error="IsADirectoryError: job.yaml")[0].why == "job 7_3 FAILED; run left failed at step 2/4: IsADirectoryError: job.yaml"


def test_a_users_cancel_is_never_retried():
    assert due("CANCELLED") == []


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "REQUEUED", "COMPLETING"])
def test_a_run_whose_job_is_queued_or_running_is_left_to_it(state):
    assert due(state) == []


def test_a_run_out_of_retries_is_not_retried():
    assert due("FAILED", used=1, max_retries=2) != [] and due("FAILED", used=2, max_retries=2) == []


def test_a_complete_run_is_not_retried_whatever_its_job_says():
    assert due("FAILED", status="complete") == []


def test_a_local_job_that_ended_without_its_run_complete_is_retried():
    assert [r.state for r in due(None)] == ["ended"]  # the local backend knows no states: its jobs have all ended


def test_a_node_never_submitted_is_not_retried():
    assert retries.due([index_entry(NODE, "runs/r", "running")], {}, {}, Counter(), 2) == []


def test_an_unseen_array_task_whose_run_never_started_was_cancelled_before_it_started():
    assert due("UNSEEN", last_start=None) == [] and due("UNSEEN", last_start="2026-12-06T02:00:00.000+00:00") == []


def test_an_unseen_array_task_whose_run_started_after_it_was_submitted_ran_and_is_retried():
    assert [r.state for r in due("UNSEEN", last_start="2026-12-06T03:00:05.000+00:00")] == ["UNSEEN"]
