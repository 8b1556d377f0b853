"""`lvjob status` while a stage runs on a real SLURM (slurm/local/): steps/s and the time left of a training job.

One training job (the study's default fine-tune, 400 steps of the tiny model) is submitted and
recorded as `lvjob submit` records it; once it has taken a few steps, status is asked, in process
and through the CLI's `--watch`; then the job is cancelled. About 30 s on 2 cores.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from lvjob.orchestrate import records
from lvjob.study.choices import study_nodes
from lvjob.orchestrate.status import format_status, stage_lines, status_rows
from lvjob.study.spec import load_study
from lvjob.run.throughput import duration
from helpers import STUDY, default_job_on, last_step, make_profile, small_overrides, wait_for, wait_until

STEPS = 400  # far more than the test waits for: the job is still running when status is asked
OVERRIDES = [f"default.steps={STEPS}", f"training.checkpoint_every={STEPS}", f"training.val_every={STEPS}"]


@pytest.fixture(scope="module")
def running(slurm, small_data, tmp_path_factory):
    """(study overrides, profile, its path, job id, rows of `status`) while the default fine-tune runs."""
    tmp = tmp_path_factory.mktemp("status")
    profile = make_profile(tmp)
    overrides = small_overrides(small_data) + OVERRIDES
    study = load_study(STUDY, scale="demo", overrides=overrides)
    job, run_dir = default_job_on(profile, study)
    node = next(n for n in study_nodes(study) if n.key == "default")
    records.record_submissions(study, profile, "default", [node], [job])  # as `lvjob submit` records it
    try:
        wait_until(lambda: last_step(run_dir) >= 6, 120, "the default fine-tune to take 6 steps")
        rows = {r["node"]: r for r in status_rows(study, profile)}
        print(format_status(list(rows.values())))
        yield overrides, profile, tmp / "ci.yaml", job.job_id, rows
    finally:
        subprocess.run(["scancel", job.job_id], check=True)
        wait_for([job.job_id], limit_s=60)


def test_a_running_training_job_shows_its_steps_per_second_and_the_time_it_has_left(running):
    _, _, _, job_id, rows = running
    row = rows["default"]
    assert (row["job"], row["state"]) == (job_id, "running")  # the state is SLURM's, through sacct
    step, rate = int(row["step"].split("/")[0]), float(row["steps/s"])
    assert rate > 0 and row["eta"] == duration(row["_eta_s"])
    assert row["_eta_s"] == pytest.approx((STEPS - step) / rate, rel=0.01)  # rate as shown, rounded to 2 decimals


def test_the_stage_of_a_running_job_says_what_runs_and_when_it_will_be_done(running):
    *_, rows = running
    line = next(s for s in stage_lines(list(rows.values())) if s.startswith("default:"))
    assert line == f"default: 0 done, 1 running, 0 waiting; done in about {rows['default']['eta']}"


def test_status_watch_redraws_the_table_with_the_running_jobs_eta(running):
    overrides, _, profile_path, job_id, _ = running
    proc = subprocess.Popen([sys.executable, "-m", "lvjob", "status", str(STUDY), "--profile", str(profile_path),
                             "--scale", "demo", "--watch", "0.5", *overrides], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
    try:
        frames = _frames(proc, count=2, limit_s=60)
    finally:
        proc.send_signal(signal.SIGINT)  # how a user leaves --watch: Ctrl-C, exit 0
        proc.communicate(timeout=30)  # read what it still writes, or its final flush blocks on a full pipe
        assert proc.returncode == 0
    print(frames[0])  # with -s: the view README.md shows
    for frame in frames:
        assert re.search(rf"\| default \| {job_id} \| running \| \d+/{STEPS} \| [\d.]+ \| (\d+h\d\dm|(\d+m)?\d+s) \|", frame), frame


def _interruptible() -> None:
    """Ctrl-C as at a terminal: a test run in the background (CI, `cmd &`) inherits SIGINT ignored, and a
    Python started with it ignored never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _frames(proc: subprocess.Popen, count: int, limit_s: float) -> list[str]:
    """The first `count` complete screens `--watch` drew (each begins by homing the cursor and clearing)."""
    clear, out, deadline = "\033[H\033[2J", "", time.monotonic() + limit_s
    while out.count(clear) <= count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    return [f for f in out.split(clear)[1:count + 1]]
