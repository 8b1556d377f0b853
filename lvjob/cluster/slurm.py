"""The SLURM client: squeue, sacct, scontrol and scancel, always as argument lists (no shell).

Job ids are strings: `123` for a job, `123_4` for task 4 of array 123. A command that fails (no
SLURM here, the controller down) raises ClusterError saying which and how.
"""

from __future__ import annotations

import getpass
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple


class ClusterError(RuntimeError):
    """A cluster command (sbatch, squeue, sacct, scontrol, scancel, rsync) failed; the message says which and how."""



# States of a job that is queued or running (or will be again): it still holds its node's place.
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT"}
# The state of a job a user cancelled (`scancel`, before or after it started). A job no command lists
# yet is UNKNOWN, never a cancel: sacct learns of a job's end from slurmdbd a moment after it ends.
CANCELLED = frozenset({"CANCELLED"})
# An array task neither squeue nor sacct lists while sacct knows other tasks of its array: cancelled
# before it started (SLURM keeps no record of it), or ended a moment ago and not yet recorded. Only
# the run's own records tell which (lvjob.orchestrate.retries).
UNSEEN = "UNSEEN"
SETTLE_S = (1, 2, 4, 8, 16)  # waits before asking again about jobs still UNKNOWN, when the answer decides a retry
TIMEOUT_S = 60
# squeue states in which the job has no process left: it ended, or it waits to (re)start.
# Everything else (RUNNING, COMPLETING, SUSPENDED, CONFIGURING, STOPPED, SIGNALING, ...) may still
# have the holder alive.
GONE_STATES = frozenset({
    "PENDING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "REQUEUE_HOLD", "SPECIAL_EXIT", "REVOKED",
})
JOB_ID = re.compile(r"\d+(_\d+)?")
DEPENDENCY = re.compile(r"after\w*:(\d+(?:_\d+)?)(?:_\*)?\((?!failed)")  # afterany:7_*(unfulfilled) -> 7
ARRAY_TASKS = re.compile(r"(\d+)_\[([^\]]+)\]")  # sacct's line for array tasks that never started: 7_[3-5,8%2]


def array_id(job_id: str) -> str:
    return str(job_id).split("_")[0]


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ClusterError(f"{cmd[0]} failed ({e}); is SLURM_CONF set and the cluster up?") from None


def _table(cmd: list[str]) -> dict[str, str]:
    """{job id: state} from a `JobID|State` listing (squeue or sacct)."""
    table = {}
    for line in _run(cmd).splitlines():
        jid, _, state = line.strip().partition("|")
        table[jid] = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return table


def states(job_ids: list[str], settle: tuple[float, ...] = ()) -> dict[str, str]:
    """{job id: state}: queued and running jobs from squeue (immediate), ended ones from sacct.

    A job neither lists yet is UNKNOWN; with `settle` (e.g. SETTLE_S) those are asked about again
    after each wait in turn, and whatever is still unknown at the end stays UNKNOWN.
    """
    found = _states(job_ids)
    for wait in settle:
        unknown = [j for j, state in found.items() if state == "UNKNOWN"]
        if not unknown:
            break
        time.sleep(wait)
        found |= _states(unknown)
    return found


def _states(job_ids: list[str]) -> dict[str, str]:
    if not job_ids:
        return {}
    queue = _table(["squeue", "--me", "-h", "-r", "-o", "%i|%T"])  # this user's jobs; -r: one line per array task
    ended = [j for j in job_ids if j not in queue]
    history = _history(ended) if ended else {}
    return {j: queue.get(j) or _ended_state(j, history) for j in job_ids}


def _history(job_ids: list[str]) -> dict[str, str]:
    bases = sorted({array_id(j) for j in job_ids})
    return _table(["sacct", "-n", "-P", "-X", "-u", getpass.getuser(), "-j", ",".join(bases), "--format=JobID,State"])


def _ended_state(job_id: str, history: dict[str, str]) -> str:
    """A job's own sacct line, or that of the never-started array tasks it is one of; UNSEEN for an array task
    whose siblings sacct knows; else UNKNOWN."""
    if job_id in history:
        return history[job_id]
    base, _, task = job_id.partition("_")
    for key, state in history.items():
        tasks = ARRAY_TASKS.fullmatch(key)
        if task and tasks and tasks[1] == base and int(task) in _task_ids(tasks[2]):
            return state
    return UNSEEN if task and any(array_id(k) == base for k in history) else "UNKNOWN"


def _task_ids(spec: str) -> set[int]:
    """The task ids of an array range as sacct writes it: `3-5,8%2` (after % : how many at once)."""
    ids = set()
    for part in spec.split("%")[0].split(","):
        first, _, last = part.partition("-")
        ids |= set(range(int(first), int(last or first) + 1))
    return ids


def times(job_ids: list[str]) -> dict[str, Allocation]:
    """{job id: its allocation's state and times} from sacct, one line per allocation (array tasks by themselves)."""
    if not job_ids:
        return {}
    bases = sorted({array_id(j) for j in job_ids})
    out = _run(["sacct", "-n", "-P", "-X", "-u", getpass.getuser(), "-j", ",".join(bases),
                "--format=JobID,State,Submit,Eligible,Start,End"])
    rows = (line.strip().split("|") for line in out.splitlines() if line.count("|") == 5)
    return {jid: Allocation(state.split()[0] if state else "UNKNOWN", *map(_when, times)) for jid, state, *times in rows}


class Allocation(NamedTuple):
    """One job's allocation as sacct has it; a time SLURM does not know yet (not started, not ended) is None."""

    state: str
    submit: datetime | None
    eligible: datetime | None  # its dependencies met: from here on it waits for resources only
    start: datetime | None
    end: datetime | None


def _when(text: str) -> datetime | None:
    """sacct's local time (`2026-12-06T04:34:15`) as UTC; None for `Unknown`, `None` and the like."""
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


def queued_from(folder: Path) -> set[str]:
    """This user's queued or running jobs whose batch script lies in `folder` (squeue's %o), by job id; a pending
    array's tasks as one entry, e.g. `7_[2-5]`."""
    rows = _run(["squeue", "--me", "-h", "-o", "%i|%o"]).splitlines()
    return {jid for jid, _, script in (r.partition("|") for r in rows) if Path(script).is_relative_to(folder)}


def set_dependency(job_id: str, after: list[str]) -> None:
    """Make a pending job also wait (afterany) for every job in `after`. `scontrol update Dependency=` replaces
    the whole list, so the jobs it still waits for are read first and kept: a caller's stale view of what the job
    should wait for can add to the list, never drop from it."""
    ids = sorted(set(waits_for(job_id)) | set(after))
    _run(["scontrol", "update", f"JobId={job_id}", f"Dependency=afterany:{':'.join(ids)}"])


def waits_for(job_id: str) -> list[str]:
    """The jobs a pending job still waits for."""
    return read_dependency(_run(["scontrol", "show", "job", "-o", job_id]))


def read_dependency(shown: str) -> list[str]:
    """The unfulfilled dependencies in `scontrol show job -o`: `Dependency=afterany:7_*(unfulfilled),...` -> ["7", ...]."""
    found = re.search(r"\bDependency=(\S+)", shown)
    return [m.group(1) for m in DEPENDENCY.finditer(found.group(1))] if found else []


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])


def job_gone(job_id: str) -> str | None:
    """Why SLURM job `job_id` has certainly no process left, or None if squeue cannot say so."""
    if not JOB_ID.fullmatch(job_id):
        return None
    try:
        r = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                           capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return read_squeue(job_id, r.returncode, r.stdout, r.stderr)


def read_squeue(job_id: str, returncode: int, stdout: str, stderr: str) -> str | None:
    """squeue's answer about one job: why it is gone, or None when it may be running or the answer is unclear."""
    if returncode != 0:
        # The controller forgets ended jobs after MinJobAge; then it answers exactly this.
        return f"SLURM no longer knows job {job_id} (it ended)" if "invalid job id" in stderr.lower() else None
    states = {s.strip() for s in stdout.splitlines() if s.strip()}
    if states and states <= GONE_STATES:
        return f"SLURM job {job_id} is {', '.join(sorted(states))}"
    return None
