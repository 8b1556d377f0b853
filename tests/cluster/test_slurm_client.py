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
