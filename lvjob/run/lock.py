"""The run directory's lock: one process at a time works in a run directory.

Two processes training into one directory (a job resubmitted while its first copy still runs, a
run started by hand beside the cluster's) would corrupt it. `run_lock` takes the kernel's lock
(flock on `run_dir/.lock`): it goes with the process, however the process dies. Then it takes a
lock file recording its holder: where the filesystem has no flock (some Lustre and NFS mounts) that
file is the lock, and where flock is node-local (Lustre `localflock`, NFS `local_lock=flock`: each
node's flock succeeds on its own) it is what finds a holder on another node.

The kernel's flock goes with its process; a lock file does not: a job killed with SIGKILL, or lost
with its node, leaves it behind. So the file (created with O_CREAT|O_EXCL, atomic on NFSv3+ and
Lustre) records who holds it: host, pid, SLURM job id and a random token. It is broken only when
that holder is provably gone:

- on this host, its pid is not alive;
- it ran as this very SLURM job on another host (an earlier run of a requeued job: SLURM runs one
  copy of a job at a time);
- SLURM says its job has ended (lvjob.cluster.slurm.job_gone: ended or pending, or no longer known);
- it ran on this host and this process holds the flock (which its holder would hold if alive).

Anything less clear (another host without a SLURM job, squeue missing or failing) refuses: two
processes in one run directory would corrupt it, while a refusal only costs a resubmission.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from lvjob.cluster import slurm
from lvjob.core.paths import RunDir
from lvjob.run.rundir import read_status

TAKE_ATTEMPTS = 3
# flock errors that mean "this filesystem does not do flock" (some Lustre and NFS mounts), not "held".
FLOCK_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK})
_warned_no_flock = False


class LockHeld(RuntimeError):
    """The lock file is held by a holder that may be alive; `holder` is None when its file is unreadable."""

    def __init__(self, message: str, holder: "Holder | None") -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds a lock file; `token` tells two holders with the same host and pid apart."""

    host: str
    pid: int
    slurm_job_id: str | None
    token: str

    @classmethod
    def me(cls) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), os.environ.get("SLURM_JOB_ID"), uuid.uuid4().hex)

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        return f"pid {self.pid} on {self.host}{job}"


class RunBusy(RuntimeError):
    """Another live process holds the run directory."""


@contextmanager
def run_lock(run_dir: Path):
    """Hold the run directory exclusively while the block runs (see the module's docstring); RunBusy if another process does."""
    import fcntl

    with open(RunDir(run_dir).lock, "a+") as f:
        flocked = _flock(f, run_dir)
        try:
            with _lock_file(run_dir, flocked):
                yield
        finally:
            if flocked:
                fcntl.flock(f, fcntl.LOCK_UN)


def _flock(f, run_dir: Path) -> bool:
    """Take the kernel lock on open file `f`; False where the filesystem does not do flock."""
    import fcntl

    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_status(run_dir)
        raise RunBusy(_busy_message(run_dir, holder.get("pid", "?"), holder.get("host", "?"))) from None
    except OSError as e:
        if e.errno not in FLOCK_UNSUPPORTED:
            raise
        _warn_no_flock(run_dir, e)
        return False
    return True


def _busy_message(run_dir: Path, pid, host) -> str:
    return f"{run_dir} is in use by another process (pid {pid} on {host}); nothing was changed"


def _warn_no_flock(run_dir: Path, error: OSError) -> None:
    global _warned_no_flock
    if not _warned_no_flock:  # once per process: a study's runs all live on the same filesystem
        print(f"warning: {run_dir}: this filesystem does not support flock ({error.strerror}); run directories "
              f"are locked with a .lock.held file instead", file=sys.stderr, flush=True)
        _warned_no_flock = True


@contextmanager
def _lock_file(run_dir: Path, flocked: bool):
    """The lock file beside the flock. Holding the flock, a record of this host is a dead process's (every
    process here takes the flock first), and one of a live holder on another host means a node-local flock."""
    path, me = RunDir(run_dir).held_lock, Holder.me()
    try:
        take(path, me, this_host_gone=flocked)
    except LockHeld as e:
        if e.holder is None:
            raise RunBusy(f"{e}; nothing was changed") from None
        local = (": this node's flock succeeded, so this filesystem's flock is node-local (Lustre localflock, NFS "
                 f"local_lock=flock); if nothing runs there, delete {path}") if flocked else ""
        raise RunBusy(f"{_busy_message(run_dir, e.holder.pid, e.holder.host)}: {e}{local}") from None
    try:
        yield
    finally:
        release(path, me)


# --- the lock file, where there is no flock ------------------------------------------------------


@contextmanager
def held(path: Path) -> Iterator[Holder]:
    """Hold lock file `path` while the block runs; raise LockHeld if a holder that may be alive has it."""
    me = Holder.me()
    take(path, me)
    try:
        yield me
    finally:
        release(path, me)


def take(path: Path, me: Holder, this_host_gone: bool = False) -> None:
    """Create lock file `path` for `me`, breaking a stale one; raise LockHeld if its holder may be alive.
    `this_host_gone`: the caller knows no live process of this host holds it (it holds the flock)."""
    for _ in range(TAKE_ATTEMPTS):
        if _create(path, me):
            return
        holder = read_holder(path)
        if holder is None:  # released between our create and our read
            continue
        held_here = this_host_gone and holder.host == me.host
        reason = f"its pid {holder.pid} on this host does not hold the flock" if held_here else gone_because(holder, me)
        if reason is None:
            raise LockHeld(f"{path} is held by {holder.describe()}, which may still be running", holder)
        _break(path, holder, reason, quiet=held_here)
    raise LockHeld(f"{path}: the lock changed hands {TAKE_ATTEMPTS} times while being taken; try again", None)


def release(path: Path, me: Holder) -> None:
    """Remove the lock file if it is still ours (never one a later holder wrote)."""
    try:
        if read_holder(path) == me:
            path.unlink()
    except (FileNotFoundError, LockHeld):
        pass


def _create(path: Path, me: Holder) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides who may read it
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(me), f)
        f.flush()
        os.fsync(f.fileno())
    return True


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in `path`; None if there is no such file. An unreadable record raises
    LockHeld: it cannot be told from a live holder's, so only a person may remove it."""
    try:
        text = path.read_text() or _read_again(path)
    except FileNotFoundError:
        return None
    try:
        fields = json.loads(text)
        job = fields.get("slurm_job_id")
        return Holder(str(fields["host"]), int(fields["pid"]), None if job is None else str(job), str(fields["token"]))
    except (ValueError, KeyError, TypeError):
        raise LockHeld(f"{path}: unreadable lock record {text[:80]!r}; if no process works in this "
                       f"run directory, delete the file and start again", None) from None


def _read_again(path: Path) -> str:
    """An empty lock file is one being written (created, not yet filled): read it once more shortly after."""
    time.sleep(0.2)
    return path.read_text()


def gone_because(holder: Holder, me: Holder) -> str | None:
    """Why `holder` is certainly gone, or None if it may be alive."""
    if holder.slurm_job_id and holder.slurm_job_id == me.slurm_job_id and holder.host != me.host:
        return f"it ran as this SLURM job ({holder.slurm_job_id}) on {holder.host} before a requeue"
    if holder.host == me.host:
        return None if pid_alive(holder.pid) else f"pid {holder.pid} is not running on {holder.host}"
    if holder.slurm_job_id:
        return slurm.job_gone(holder.slurm_job_id)
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _break(path: Path, holder: Holder, reason: str, quiet: bool = False) -> None:
    """Remove a stale lock file, never a live one that replaced it in the meantime.

    The file is first renamed aside (atomic: of two processes breaking it, one gets it) and checked
    to be the stale record judged; a newer record taken by mistake is put back.
    """
    aside = path.with_name(f"{path.name}.breaking.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process broke it first
        return
    try:
        if _same_holder(aside, holder):
            if not quiet:  # a killed run's record, found by its own resumption: nothing to tell
                print(f"lvjob: broke stale lock {path} of {holder.describe()}: {reason}", file=sys.stderr, flush=True)
            return
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    finally:
        aside.unlink(missing_ok=True)


def _same_holder(path: Path, holder: Holder) -> bool:
    try:
        return read_holder(path) == holder
    except LockHeld:
        return False
