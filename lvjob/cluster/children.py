"""A task run as a child process of this one: how the local executor (a laptop, or inside one packed allocation) runs jobs.

The parent pickles the task (a callable of the package: plain pickle, no code in the file) into the
study's job folder and starts `python -m lvjob.cluster.children FOLDER TASK`. The child writes its
stdout and stderr to `FOLDER/<pid>_0_log.out|err` (the job log layout SLURM's jobs have too, so
`lvjob status` reads both the same way), runs the task, and leaves `FOLDER/<pid>_0_result.json`
with its error, if any. The pid is the job id.

The child dies with this process (`die_with_parent`), and starts with USR2 and TERM ignored: a stop signal SLURM sends to every process of an
allocation must not kill a child between its start and the moment the task's own supervisor takes
the signals (lvjob.cluster.supervise); the parent repeats its stop to the children until they end.
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import signal
import subprocess
import sys
import traceback
import uuid
from pathlib import Path

from lvjob.core.stops import STOP_SIGNALS


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PRCTL = getattr(ctypes.CDLL(None), "prctl", None)  # resolved here: no dlopen between fork and exec


def die_with_parent() -> None:
    """In a child, before exec: the kernel SIGKILLs it when its parent dies (Linux; elsewhere nothing). A job's
    host killed without warning takes its children with it, as SLURM's cgroup would: none lives on unwatched to
    collide with the same run in the next allocation."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def _start_quietly() -> None:
    die_with_parent()
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class ChildJob:
    """One task in a child process: `job_id` (its pid), `done()`, `state`, `error`, as a job of any executor."""

    def __init__(self, folder: Path, task):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name = folder, getattr(task, "name", "task")
        spec = folder / f"{uuid.uuid4().hex}_task.pkl"
        spec.write_bytes(pickle.dumps(task))
        self.proc = subprocess.Popen([sys.executable, "-m", "lvjob.cluster.children", str(folder), str(spec)],
                                     preexec_fn=_start_quietly, stdin=subprocess.DEVNULL)
        self.job_id = str(self.proc.pid)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def signal(self, signum: int) -> None:
        if not self.done():
            self.proc.send_signal(signum)

    @property
    def state(self) -> str:
        """FINISHED, FAILED, or RUNNING (submitit's names for a local job)."""
        code = self.proc.poll()
        return "RUNNING" if code is None else "FINISHED" if code == 0 else "FAILED"

    @property
    def error(self) -> str | None:
        """Why it failed: the task's exception (last line), or how the process ended; None if it succeeded."""
        code = self.proc.poll()
        if code in (None, 0):
            return None
        try:
            return json.loads(result_file(self.folder, self.job_id).read_text())["error"]
        except (OSError, ValueError, KeyError):
            return f"the process ended with {code}" + (f" (signal {-code})" if code < 0 else "")


def result_file(folder: Path, job_id: str) -> Path:
    return folder / f"{job_id}_0_result.json"


def _main(folder: Path, spec: Path) -> int:
    """In the child: logs to the job's files, run the task, write its outcome."""
    pid = str(os.getpid())
    result_file(folder, pid).unlink(missing_ok=True)  # an earlier process's, with the same pid
    for fd, suffix in ((1, "out"), (2, "err")):
        with open(folder / f"{pid}_0_log.{suffix}", "a") as f:
            os.dup2(f.fileno(), fd)
    try:
        task = pickle.loads(spec.read_bytes())
        spec.unlink(missing_ok=True)
        task()
    except BaseException as e:  # the job's outcome, whatever ended it; the traceback goes to its log
        traceback.print_exc()
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        result_file(folder, pid).write_text(json.dumps({"error": last}))
        return 1
    result_file(folder, pid).write_text(json.dumps({"error": None}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(Path(sys.argv[1]), Path(sys.argv[2])))
