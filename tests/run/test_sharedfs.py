"""Shared filesystems: run locks where flock is unsupported, and atomic writes that keep the umask's mode."""

import errno
import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lvjob.core import atomic
from lvjob.cluster import slurm
from lvjob.run import lock
from lvjob.cli import main
from lvjob.cluster.slurm import read_squeue
from lvjob.run.lock import Holder, LockHeld, RunBusy, run_lock
from helpers import JOBS



# --- atomic writes keep the mode the umask gives -------------------------------------------------


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_atomically_written_file_has_the_mode_of_the_umask(tmp_path, umask):
    atomic.write_text(tmp_path / "eval.json", "{}")
    assert mode(tmp_path / "eval.json") == 0o666 & ~umask


def test_an_atomically_written_folder_has_the_mode_of_the_umask(tmp_path, umask):
    with atomic.atomic_dir(tmp_path / "adapter") as tmp:
        (tmp / "weights").write_text("w")
    assert mode(tmp_path / "adapter") == 0o777 & ~umask


def test_files_a_library_writes_0600_into_an_atomic_folder_get_the_mode_of_the_umask(tmp_path, umask):
    import numpy as np
    from safetensors.numpy import save_file

    with atomic.atomic_dir(tmp_path / "checkpoint") as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        save_file({"w": np.zeros(2, dtype=np.float32)}, str(tmp / "sub" / "adapter.safetensors"))
    assert (mode(tmp_path / "checkpoint" / "sub"), mode(tmp_path / "checkpoint" / "sub" / "adapter.safetensors")) == \
        (0o777 & ~umask, 0o666 & ~umask)


# --- the run lock where flock is unsupported ------------------------------------------------------


@pytest.fixture
def no_flock(monkeypatch):
    """flock as a Lustre or NFS mount without lock support answers it."""
    def unsupported(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", unsupported)
    monkeypatch.setattr(lock, "_warned_no_flock", False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def write_lock(run_dir: Path, host: str, pid: int, job: str | None = None) -> Path:
    path = run_dir / ".lock.held"
    path.write_text(json.dumps({"host": host, "pid": pid, "slurm_job_id": job, "token": "t"}))
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_without_flock_the_lock_file_records_host_pid_and_slurm_job(tmp_path, no_flock, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    with run_lock(tmp_path):
        record = json.loads((tmp_path / ".lock.held").read_text())
    assert (record["host"], record["pid"], record["slurm_job_id"]) == (socket.gethostname(), os.getpid(), "4711")


def test_without_flock_the_lock_file_is_removed_on_release(tmp_path, no_flock):
    with run_lock(tmp_path):
        pass
    assert not (tmp_path / ".lock.held").exists()


def test_without_flock_a_warning_is_printed_once_per_process(tmp_path, no_flock, capsys):
    for _ in range(2):
        with run_lock(tmp_path):
            pass
    assert capsys.readouterr().err.count("does not support flock") == 1


def test_a_flock_error_other_than_unsupported_is_raised(tmp_path, monkeypatch):
    def failing(fd, op):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fcntl, "flock", failing)
    with pytest.raises(OSError, match="Input/output error"):
        with run_lock(tmp_path):
            pass


def test_a_lock_file_left_by_a_dead_pid_on_this_host_is_broken(tmp_path, no_flock, capsys):
    write_lock(tmp_path, socket.gethostname(), dead_pid())
    with run_lock(tmp_path):
        assert json.loads((tmp_path / ".lock.held").read_text())["pid"] == os.getpid()
    assert "broke stale lock" in capsys.readouterr().err


def test_a_lock_file_of_a_live_pid_refuses_the_run_with_exit_4_and_changes_nothing(tmp_path, no_flock, live_pid):
    lock = write_lock(tmp_path, socket.gethostname(), live_pid)
    (tmp_path / "run.json").write_text('{"status": "running"}')
    code = main(["run", str(JOBS / "zero_shot_plain.yaml"), f"run_dir={tmp_path}", "model=tiny"])
    assert code == 4
    assert json.loads(lock.read_text())["pid"] == live_pid and (tmp_path / "run.json").read_text() == '{"status": "running"}'


def test_the_refusal_names_the_holder(tmp_path, no_flock, live_pid):
    write_lock(tmp_path, socket.gethostname(), live_pid, job="99")
    with pytest.raises(RunBusy, match=f"in use by another process \\(pid {live_pid} on {socket.gethostname()}\\)"):
        with run_lock(tmp_path):
            pass


def test_a_lock_file_of_another_host_without_a_slurm_job_is_kept(tmp_path, no_flock):
    write_lock(tmp_path, "login2", 123)
    with pytest.raises(RunBusy, match="pid 123 on login2"):
        with run_lock(tmp_path):
            pass


def test_a_lock_file_of_this_slurm_job_on_another_host_is_broken(tmp_path, no_flock, monkeypatch):
    # The job was requeued after its node failed; SLURM runs one copy of a job at a time.
    monkeypatch.setenv("SLURM_JOB_ID", "555")
    write_lock(tmp_path, "node-that-died", 123, job="555")
    with run_lock(tmp_path):
        assert json.loads((tmp_path / ".lock.held").read_text())["host"] == socket.gethostname()


def test_a_second_holder_in_the_same_process_is_refused(tmp_path):
    with lock.held(tmp_path / "l"):
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
            with lock.held(tmp_path / "l"):
                pass


def test_an_unreadable_lock_file_is_refused_naming_it(tmp_path, no_flock):
    (tmp_path / ".lock.held").write_text("garbage")
    with pytest.raises(RunBusy, match="unreadable lock record 'garbage'.*delete the file"):
        with run_lock(tmp_path):
            pass


def test_release_leaves_a_lock_file_another_holder_wrote(tmp_path):
    me = Holder.me()
    path = write_lock(tmp_path, "elsewhere", 1)
    lock.release(path, me)
    assert path.exists()


# --- the lock file beside a flock that works -----------------------------------------------------


@pytest.mark.parametrize("pid", ["dead", "alive"])
def test_holding_the_flock_a_record_of_this_host_is_broken_quietly(tmp_path, capsys, pid, request):
    # Alive: a pid reused by an unrelated process; the record's holder would hold the flock if it still ran.
    write_lock(tmp_path, socket.gethostname(), dead_pid() if pid == "dead" else request.getfixturevalue("live_pid"))
    with run_lock(tmp_path):
        assert json.loads((tmp_path / ".lock.held").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock.held").exists() and "broke" not in capsys.readouterr().err


# --- asking SLURM whether a holder's job is gone ---------------------------------------------------


def fake_squeue(tmp_path: Path, monkeypatch, script: str) -> Path:
    """A `squeue` first on PATH (no SLURM here to hold a job in a chosen state); it logs its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "squeue"
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\n{script}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return tmp_path / "argv"


def test_a_lock_of_another_hosts_slurm_job_that_ended_is_broken(tmp_path, no_flock, monkeypatch):
    argv = fake_squeue(tmp_path, monkeypatch, "echo COMPLETED")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_lock(run_dir, "node9", 123, job="812_3")
    with run_lock(run_dir):
        pass
    assert argv.read_text().split() == ["-h", "-t", "all", "-j", "812_3", "-o", "%T"]


@pytest.mark.parametrize("flock", ["unsupported", "node-local"])  # node-local: this node's flock succeeds all the same
def test_a_lock_of_another_hosts_slurm_job_still_running_is_kept(tmp_path, monkeypatch, request, flock):
    if flock == "unsupported":
        request.getfixturevalue("no_flock")
    fake_squeue(tmp_path, monkeypatch, "echo RUNNING")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_lock(run_dir, "node9", 123, job="812")
    with pytest.raises(RunBusy, match="pid 123 on node9.*SLURM job 812" + (".*flock is node-local" if flock == "node-local" else "")):
        with run_lock(run_dir):
            pass


def test_a_lock_of_another_hosts_slurm_job_is_kept_when_squeue_is_missing(tmp_path, no_flock, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    write_lock(tmp_path, "node9", 123, job="812")
    with pytest.raises(RunBusy):
        with run_lock(tmp_path):
            pass


@pytest.mark.parametrize("state", ["COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "PENDING"])
def test_squeue_states_without_a_process_mean_gone(state):
    assert read_squeue("7", 0, f"{state}\n", "") == f"SLURM job 7 is {state}"


@pytest.mark.parametrize("state", ["RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING", "STOPPED", "SOMETHING_NEW"])
def test_squeue_states_that_may_have_a_process_mean_alive(state):
    assert read_squeue("7", 0, f"{state}\n", "") is None


def test_a_job_squeue_no_longer_knows_is_gone():
    assert "no longer knows" in read_squeue("7", 1, "", "slurm_load_jobs error: Invalid job id specified\n")


@pytest.mark.parametrize("stderr", ["slurm_load_jobs error: Unable to contact slurm controller", ""])
def test_a_failing_or_silent_squeue_proves_nothing(stderr):
    assert read_squeue("7", 1, "", stderr) is None and read_squeue("7", 0, "", "") is None


def test_a_job_id_that_is_not_a_slurm_id_is_never_passed_to_squeue(tmp_path, monkeypatch):
    argv = fake_squeue(tmp_path, monkeypatch, "echo COMPLETED")
    assert slurm.job_gone("-u root") is None and not argv.exists()


# --- a complete run's eval.json seen late (another node renamed it in; NFS caches the folder) ------------------


def _complete_run(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "complete", "kind": "zero-shot", "attempts": 1}))


def test_a_complete_run_whose_eval_json_shows_up_late_is_read_with_its_scores(tmp_path):
    import threading

    from lvjob.run.rundir import RunStatus, summarize

    _complete_run(tmp_path / "run")
    late = threading.Timer(1.5, (tmp_path / "run" / "eval.json").write_text, [json.dumps({"model": {"mae": 0.25}})])
    late.start()
    run = summarize(tmp_path / "run")
    late.join()
    assert (run.status, run.value("eval_mae")) == (RunStatus.COMPLETE, 0.25)


def test_a_complete_run_whose_eval_json_never_shows_up_reads_as_failed_saying_so(tmp_path, monkeypatch):
    from lvjob.run import rundir

    monkeypatch.setattr(rundir, "EVAL_SETTLE_S", 1.0)
    _complete_run(tmp_path / "run")
    run = rundir.summarize(tmp_path / "run")
    assert run.status == rundir.RunStatus.FAILED and "run.json says complete but" in run.error
