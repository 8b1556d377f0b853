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
