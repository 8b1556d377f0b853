"""Checkpoints kept by validity, named when they cannot be read, and a full disk named without losing one."""

import errno
import json
import signal

import pytest
import torch

from lvjob.core.atomic import DiskFull
from lvjob.core.stops import StopRequest
from lvjob.data.dataset import DataSpec
from lvjob.run import checkpoint
from lvjob.run.job import Job
from lvjob.run.rundir import read_status
from lvjob.run.runner import EXIT_PREEMPTED, run

WEIGHTS = {"lora_A": torch.ones(2, 3)}


def _save(run_dir, step: int):
    return checkpoint.save(run_dir, step, WEIGHTS, {"state": {}, "param_groups": []}, {}, {"step": step}, [], keep=2)


def _unusable(run_dir, step: int) -> None:
    folder = checkpoint.folder(run_dir) / f"{checkpoint.PREFIX}{step:07d}"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")


def test_a_new_save_beside_two_unloadable_checkpoints_survives_and_is_the_one_resumed_from(tmp_path):
    for step in (100, 200):  # e.g. left by another version, or damaged
        _unusable(tmp_path, step)
    _save(tmp_path, 10)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-0000010"]
    assert checkpoint.load_latest(tmp_path).step == 10


def test_pruning_keeps_the_newest_intact_checkpoints(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    (checkpoint.folder(tmp_path) / "step-0000003" / "rng.pt").write_bytes(b"damaged")
    _save(tmp_path, 4)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-0000002", "step-0000004"]


def test_an_intact_checkpoint_this_version_cannot_read_is_called_that_not_damaged(tmp_path, capsys):
    _save(tmp_path, 1)
    newer = _save(tmp_path, 2)
    torch.save({"optimizer": object(), "scheduler": {}}, newer / "optimizer.pt", _use_new_zipfile_serialization=True)
    # The manifest matches the new bytes: nothing is damaged, this version just cannot read them.
    manifest = {name: checkpoint._sha256(newer / name) for name in checkpoint.FILES}
    (newer / "manifest.json").write_text(json.dumps(manifest))
    assert checkpoint.load_latest(tmp_path).step == 1
    err = capsys.readouterr().err
    assert "step-0000002 is intact but was written by another version" in err and "damaged" not in err


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_checkpoint_names_the_path_and_the_free_space_and_keeps_the_older_one(tmp_path, monkeypatch):
    _save(tmp_path, 1)
    monkeypatch.setattr(checkpoint, "save_file", _no_space)
    with pytest.raises(DiskFull) as e:
        _save(tmp_path, 2)
    assert "no space left to write" in str(e.value) and "step-0000002" in str(e.value) and "MiB free there" in str(e.value)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-0000001"]
    assert checkpoint.load_latest(tmp_path).step == 1


class _StopAfterFirstCheckpoint(StopRequest):
    """A stop request that arrives right after the first checkpoint is written; the disk is full from then on."""

    def __init__(self, monkeypatch):
        super().__init__()
        real = checkpoint.save_file

        def save_then_fill(*args, **kwargs):
            real(*args, **kwargs)
            self.signals.append(signal.SIGUSR2)
            monkeypatch.setattr(checkpoint, "save_file", _no_space)

        monkeypatch.setattr(checkpoint, "save_file", save_then_fill)


def test_a_stop_whose_checkpoint_finds_the_disk_full_still_ends_preempted_from_the_previous_one(tmp_path, small_data, monkeypatch):
    job = Job(kind="train", name="full", model="tiny", data=DataSpec(path=str(small_data), systems=20, points=30),
              context=48, steps=8, batch_size=2, rank=2, val_every=4, val_chunks=2, checkpoint_every=2, series=2,
              eval_batch_size=2, temperature=0.0, device="cpu", run_dir=str(tmp_path / "run"))
    assert run(job, log=lambda m: None, stop=_StopAfterFirstCheckpoint(monkeypatch)) == EXIT_PREEMPTED
    status = read_status(tmp_path / "run")
    assert status["status"] == "preempted" and "without its checkpoint (no space left to write" in status["stopped"]
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "run")] == ["step-0000002"]
    monkeypatch.undo()
    assert run(job, log=lambda m: None, stop=StopRequest()) == 0
