"""`lvjob status` from run directories alone (the local executor: no SLURM): a hung run shows as stalled."""

import dataclasses
import json
import os
import time

from lvjob.core.paths import RunDir
from lvjob.orchestrate.status import status_rows
from lvjob.study.choices import job_for, study_nodes


def _heartbeat(study, profile, node: str, silent_s: float, longest_gap_s: float) -> None:
    job = job_for(study, profile, next(n for n in study_nodes(study) if n.key == node))
    path = RunDir(job.resolved_run_dir()).heartbeat
    path.write_text(json.dumps({"what": "step 12", "longest_gap_s": longest_gap_s}))
    then = time.time() - silent_s
    os.utime(path, (then, then))


def test_a_running_run_silent_past_the_watchdogs_limit_shows_stalled_and_for_how_long(study_runs):
    study, profile = study_runs
    profile = dataclasses.replace(profile, watchdog_floor_s=60, watchdog_multiple=10)
    _heartbeat(study, profile, "default", silent_s=50, longest_gap_s=2.0)  # within the floor: still running
    assert {r["node"]: r["state"] for r in status_rows(study, profile)}["default"] == "running"
    _heartbeat(study, profile, "default", silent_s=300, longest_gap_s=2.0)  # past max(60 s, 10 x 2 s)
    assert {r["node"]: r["state"] for r in status_rows(study, profile)}["default"] == "stalled (5m00s silent)"
    _heartbeat(study, profile, "default", silent_s=300, longest_gap_s=40.0)  # slow steps: the limit is 400 s
    assert {r["node"]: r["state"] for r in status_rows(study, profile)}["default"] == "running"


def _at(minute: int, second: int = 0):
    from datetime import datetime, timezone

    return datetime(2026, 12, 6, 12, minute, second, tzinfo=timezone.utc)


def test_the_makespan_splits_into_time_with_a_job_running_and_time_only_queued():
    from lvjob.cluster.slurm import Allocation
    from lvjob.orchestrate.status import makespan_lines

    allocations = {"1": Allocation("COMPLETED", _at(0), _at(0), _at(10), _at(20)),  # queued 10 min, ran 10
                   "2": Allocation("COMPLETED", _at(0), _at(0), _at(15), _at(25)),  # overlaps job 1 by 5 min
                   "3": Allocation("RUNNING", _at(20), _at(26), _at(30), None)}  # waited for job 1, then queued 4 min
    lines = makespan_lines(allocations, {"3": "packed"}, now=_at(40))
    assert lines[0] == ("allocations: 3, queued 29m00s in all (longest 15m00s, job 2); makespan 40m00s: "
                        "25m00s with a job running, 15m00s only queued")
    assert lines[1] == "packed job 3: RUNNING, queued 4m00s, held 10m00s"
