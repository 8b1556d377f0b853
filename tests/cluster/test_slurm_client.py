"""The SLURM client's job states (lvjob.cluster.slurm.states) against scripted `squeue` and `sacct` on PATH.

The scripts answer as SLURM does; `sacct` can answer differently on each call (slurmdbd learning of
a job's end a moment after it ended), which a live cluster cannot be made to do on demand.
"""

import os

import pytest

from lvjob.cluster import slurm


@pytest.fixture
def sacct_answers(tmp_path, monkeypatch):
    """Give `sacct` the listing of each call in turn (the last one again after that); squeue lists nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sacct").write_text(f"""#!/bin/sh
n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/calls
f={tmp_path}/answer.$n; [ -f "$f" ] || f=$(ls {tmp_path}/answer.* | sort -t. -k2 -n | tail -n 1)
cat "$f"
""")
    for tool in ("squeue", "sacct"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def answers(*listings: str):
        for i, listing in enumerate(listings):
            (tmp_path / f"answer.{i}").write_text(listing)
    return answers


def test_an_array_task_sacct_does_not_list_beside_its_siblings_is_unseen_not_cancelled(sacct_answers):
    sacct_answers("7_0|COMPLETED\n7_1|COMPLETED\n")  # task 2 just failed (slurmdbd has not heard), or never started
    assert slurm.states(["7_2", "8"]) == {"7_2": slurm.UNSEEN, "8": "UNKNOWN"}


def test_a_state_that_decides_a_retry_is_asked_for_again_until_sacct_knows_it(sacct_answers, monkeypatch):
    monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
    sacct_answers("", "", "7_2|FAILED\n")
    assert slurm.states(["7_2"], settle=slurm.SETTLE_S) == {"7_2": "FAILED"}


def test_array_tasks_cancelled_before_they_started_are_cancelled(sacct_answers):
    sacct_answers("7_0|COMPLETED\n7_[2-4,6%2]|CANCELLED by 0\n")
    assert slurm.states(["7_3", "7_6", "7_5"]) == {"7_3": "CANCELLED", "7_6": "CANCELLED", "7_5": slurm.UNSEEN}


def test_a_dependency_update_keeps_the_jobs_the_job_still_waits_for(tmp_path, monkeypatch):
    # What scontrol shows for a job waiting on array 7, task 9_2 and job 11 (fulfilled ones are no longer listed).
    shown = "JobId=12 JobName=x Dependency=afterany:7_*(unfulfilled),afterany:9_2(unfulfilled),afterany:11(unfulfilled) Req"
    (tmp_path / "scontrol").write_text(f'#!/bin/sh\n[ "$1" = show ] && echo "{shown}"\n'
                                       f'[ "$1" = update ] && echo "$@" > {tmp_path}/update\nexit 0\n')
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    slurm.set_dependency("12", ["13", "7"])
    assert (tmp_path / "update").read_text().split() == ["update", "JobId=12", "Dependency=afterany:11:13:7:9_2"]


def test_a_job_without_dependencies_waits_for_nothing():
    assert slurm.read_dependency("JobId=12 JobName=x Dependency=(null) Requeue=1") == []
