"""SPEC §6: a training run killed at any point and resumed ends bit-identical to an uninterrupted one.

Each run is a real `lvjob run` process. Faults: SIGKILL between checkpoints, SIGKILL in the middle of
writing a checkpoint (a driver that kills its own process once the adapter file of that checkpoint
is written), and the polite SIGUSR2 (checkpoint, exit 3).
"""

import json
import signal
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from helpers import RESUME_JOB, RESUME_STEPS, finish, metrics_rows, start_run, wait_for_step

pytestmark = pytest.mark.slow


# Kills its own process with SIGKILL right after writing the adapter file of checkpoint `step`,
# leaving a half-written checkpoint folder behind.
KILL_MID_CHECKPOINT = """
import os, signal, sys
import lvjob.run.checkpoint as ck
real = ck.save_file
kill_at = sys.argv.pop(1)
def save_then_die(tensors, path, *a, **k):
    real(tensors, path, *a, **k)
    if "step-" + kill_at.zfill(7) in str(path):
        os.kill(os.getpid(), signal.SIGKILL)
ck.save_file = save_then_die
from lvjob.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _job_file(tmp_path: Path, small_data: Path) -> Path:
    job = dict(RESUME_JOB, data={"path": str(small_data), "systems": 20, "points": 30})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _cmd(job: Path, run_dir: Path, device: str = "cpu") -> list[str]:
    return ["run", str(job), f"run_dir={run_dir}", f"device={device}"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_data, device):
    tmp = tmp_path_factory.mktemp("reference")
    job = _job_file(tmp, small_data)
    code, out = finish(start_run(_cmd(job, tmp / "run", device)))
    assert code == 0, out
    return tmp / "run"


def _assert_same_result(run_dir: Path, reference: Path) -> None:
    a = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(reference / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and (a[k] == b[k]).all(), f"{k} differs"
    rows, ref = metrics_rows(run_dir), metrics_rows(reference)
    assert [r["step"] for r in rows] == list(range(1, RESUME_STEPS + 1))  # one row per step, none twice
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref]
    assert [r.get("val_loss") for r in rows] == [r.get("val_loss") for r in ref]


def test_resumed_run_after_kills_is_bit_identical_to_an_uninterrupted_run(tmp_path, small_data, reference, device):
    job, run_dir = _job_file(tmp_path, small_data), tmp_path / "run"

    proc = start_run(_cmd(job, run_dir, device))  # SIGKILL between checkpoints (after 4, before 8)
    wait_for_step(proc, run_dir, 6)
    proc.send_signal(signal.SIGKILL)
    finish(proc)

    code, out = finish(start_run(["8", *_cmd(job, run_dir, device)], driver=KILL_MID_CHECKPOINT))  # SIGKILL mid-checkpoint
    assert code == -signal.SIGKILL, out
    assert "resuming from step-0000004" in out

    proc = start_run(_cmd(job, run_dir, device))  # the polite signal: checkpoint at the next step, exit 3
    wait_for_step(proc, run_dir, 9)
    proc.send_signal(signal.SIGUSR2)
    code, out = finish(proc)
    assert code == 3, out

    code, out = finish(start_run(_cmd(job, run_dir, device)))
    assert code == 0, out
    _assert_same_result(run_dir, reference)

    ledger = json.loads((run_dir / "ledger.json").read_text())
    # Lost: attempt 1's steps 5..6+ and attempt 2's steps 5..8 (it died writing checkpoint 8).
    assert ledger["resumes"] == 3 and ledger["lost_steps"] >= 6 and ledger["lost_to_preemption"] > 0
    ref_ledger = json.loads((reference / "ledger.json").read_text())
    assert ledger["train"] == ref_ledger["train"] + ledger["lost_steps"] * (ref_ledger["train"] // RESUME_STEPS)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, small_data, reference, device):
    job, run_dir = _job_file(tmp_path, small_data), tmp_path / "run"
    proc = start_run(_cmd(job, run_dir, device))
    wait_for_step(proc, run_dir, 10)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    newest = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    assert newest.name == "step-0000008"
    blob = bytearray((newest / "optimizer.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte
    (newest / "optimizer.pt").write_bytes(bytes(blob))

    code, out = finish(start_run(_cmd(job, run_dir, device)))
    assert code == 0, out
    assert "WARNING: checkpoint" in out and "step-0000008 is damaged" in out
    assert "resuming from step-0000004" in out
    _assert_same_result(run_dir, reference)


def test_steps_of_a_run_killed_before_its_first_checkpoint_are_booked_as_lost(tmp_path, small_data, device):
    job, run_dir = _job_file(tmp_path, small_data), tmp_path / "run"
    args = _cmd(job, run_dir, device) + [f"checkpoint_every={RESUME_STEPS}"]  # the only checkpoint: at the end
    proc = start_run(args)
    wait_for_step(proc, run_dir, 2)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    done = len(metrics_rows(run_dir))
    assert 2 <= done < RESUME_STEPS and not list(run_dir.glob("checkpoints/step-*"))

    code, out = finish(start_run(args))
    assert code == 0, out
    assert f"resuming from the start (no checkpoint yet); {done} step(s) after it are re-done" in out
    ledger = json.loads((run_dir / "ledger.json").read_text())
    assert (ledger["resumes"], ledger["lost_steps"]) == (1, done) and ledger["lost_to_preemption"] > 0
