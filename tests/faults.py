"""Disturbing a study while it runs on the local SLURM (tests/orchestrate/test_slurm.py): every kind of fault, at random.

Kinds, and what each stands for on a real cluster:

- `usr2`: `scancel --signal=USR2` (a preemption, or a time limit ahead);
- `usr2-at-start-up`: the same while the job starts: its runner is not yet ready to take it (the host holds it);
- `usr2-in-evaluation`: the same while the runner evaluates (it stops after the batch, the requeued job resumes);
- `requeue`: `scontrol requeue` (an admin, a node drained);
- `sigkill`: SIGKILL of a training run's runner (an OOM kill, a segfault);
- `kill-in-checkpoint`: SIGKILL while the runner writes a checkpoint (its temporary folder exists);
- `kill-in-evaluation`: SIGKILL while the runner evaluates (no eval.json yet);
- `hang`: SIGSTOP of a runner (a CUDA, NCCL or NFS hang): silent, it is found and killed by the host's
  watchdog (the faulted study's profile sets a short floor) and retried as a crash.

The first fault is always `sigkill` on a stage-1 run (so stage 2's choice is at stake); the others,
every kind once more and one kind drawn again, come in a seeded random order, the kills before the
signals: the first of them with a target at that moment goes next, each on a run drawn from those
running at that moment (one killed fewer times first), after a random pause. A study this small
trains each run for seconds, so its kills cannot all find a run not yet killed: a run may be killed
as often as the profile retries it (`max_retries`), and it still completes. The runs whose retries a
test counts (the first fault's, the hung one, the one a USR2 hit in its evaluation) are hit by no
later fault (a requeue of the hung job would hide the hang from the watchdog), and a hang hits only
a run never killed. The kills need the test cluster's `RequeueExit` off (`requeue_exit_off`):
with it on, SLURM requeues a SIGKILLed job itself and the retry gates are never tested.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lvjob.core.atomic import read_jsonl
from lvjob.orchestrate import records
from lvjob.study.choices import study_dir
from lvjob.cluster import slurm
from lvjob.results.index import run_index
from lvjob.core.paths import RunDir
from lvjob.run.rundir import read_status

KINDS = ("usr2", "usr2-at-start-up", "usr2-in-evaluation", "requeue", "sigkill", "kill-in-checkpoint",
         "kill-in-evaluation", "hang")
KILLS = {"sigkill", "kill-in-checkpoint", "kill-in-evaluation", "hang", "usr2-at-start-up"}  # may need a retry


@dataclass(frozen=True)
class Running:
    """A run whose job is running now, and its runner's process."""

    node: str
    stage: str
    job_id: str
    run_dir: Path
    pid: int

    def evaluating(self) -> bool:
        """Training is over (or there is none) and the forecasts are not written yet."""
        status = read_status(self.run_dir)
        trained = status.get("kind") == "evaluate" or RunDir(self.run_dir).adapter.exists()
        return trained and not RunDir(self.run_dir).evaluation.exists()

    def training(self) -> bool:
        return read_status(self.run_dir).get("kind") == "train" and not RunDir(self.run_dir).adapter.exists()


def plan(seed: int) -> list[str]:
    rng = random.Random(seed)
    rest = list(KINDS) + [rng.choice(KINDS)]
    rng.shuffle(rest)
    return ["sigkill"] + rest


def _alive(pid: int, node: str) -> bool:
    """`pid` is the runner of `node` now: not a process that ended, nor another run's that took its pid since."""
    try:
        return f"{node}.yaml" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def running(study, profile) -> list[Running]:
    """The study's runs whose job is RUNNING and whose runner is alive, in study order."""
    subs = records.read_submissions(study, profile)
    states = slurm.states([s["job_id"] for s in subs.values()])
    out = []
    for entry in run_index(study, profile).runs:
        sub = subs.get(entry.node)
        if not sub or states.get(sub["job_id"]) != "RUNNING" or entry.run.status != "running":
            continue
        pid = read_status(Path(entry.run.run_dir)).get("pid")
        if pid and _alive(pid, entry.node):
            out.append(Running(entry.node, entry.stage, sub["job_id"], Path(entry.run.run_dir), pid))
    return out


def starting(study, profile) -> list[Running]:
    """The study's runs whose job is RUNNING but whose runner has not yet said so in run.json (pid 0: no runner yet):
    the host's and the runner's start-up (interpreter, imports, lock), when a signal used to kill the job."""
    subs = records.read_submissions(study, profile)
    states = slurm.states([s["job_id"] for s in subs.values()])
    out = []
    for entry in run_index(study, profile).runs:
        sub = subs.get(entry.node)
        if not sub or states.get(sub["job_id"]) != "RUNNING":
            continue
        pid = read_status(Path(entry.run.run_dir)).get("pid") if entry.run.run_dir else None
        if entry.run.status != "running" or not (pid and _alive(pid, entry.node)):
            out.append(Running(entry.node, entry.stage, sub["job_id"], Path(entry.run.run_dir or "."), 0))
    return out


def kill_in_checkpoint(target: Running, limit_s: float = 20) -> bool:
    """SIGKILL the runner while a checkpoint's temporary folder exists; False if training ended first."""
    folder = RunDir(target.run_dir).checkpoints
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and _alive(target.pid, target.node) and target.training():
        if _writing(folder):
            os.kill(target.pid, signal.SIGSTOP)  # frozen mid-write: check it still is, then kill
            if _writing(folder):
                os.kill(target.pid, signal.SIGKILL)
                return True
            os.kill(target.pid, signal.SIGCONT)
        time.sleep(0.001)
    return False


def _writing(folder: Path) -> bool:
    try:
        return any(e.name.startswith(".step-") and e.name.endswith(".tmp") for e in os.scandir(folder))
    except OSError:
        return False


class Injector:
    """Injects the faults of `plan(seed)` into a running study, one after the other."""

    def __init__(self, study, profile, seed: int, log=print):
        self.study, self.profile, self.log = study, profile, log
        self.rng = random.Random(seed)
        self.faults = plan(seed)
        self.kills: Counter = Counter()  # by node
        self.once: set[str] = set()  # nodes whose retries a test counts
        self.done: list[dict] = []

    def eligible(self, kind: str, now: dict | None = None) -> list[Running]:
        """The runs `kind` may hit now; `now` caches what `running` and `starting` said for one look."""
        now = {} if now is None else now
        which = starting if kind == "usr2-at-start-up" else running
        runs = now[which] if which in now else now.setdefault(which, which(self.study, self.profile))
        runs = [r for r in runs if r.node not in self.once]
        if kind in KILLS:
            limit = 1 if kind == "hang" else self.profile.max_retries
            runs = [r for r in runs if self.kills[r.node] < limit]
        if kind == "sigkill" and not self.done:  # the first fault: stage 2's choice is at stake
            runs = [r for r in runs if r.stage == "stage1"]
        if kind in ("kill-in-checkpoint", "sigkill", "hang"):  # mid-training: the run cannot complete before the fault lands
            runs = [r for r in runs if r.training()]
        if kind in ("kill-in-evaluation", "usr2-in-evaluation"):
            runs = [r for r in runs if r.evaluating()]
        if kind in KILLS and runs:  # one killed fewer times first
            fewest = min(self.kills[r.node] for r in runs)
            runs = [r for r in runs if self.kills[r.node] == fewest]
        return runs

    def inject(self, kind: str, target: Running) -> bool:
        if kind.startswith("usr2"):
            return subprocess.run(["scancel", "--signal=USR2", target.job_id]).returncode == 0
        if kind == "hang":
            os.kill(target.pid, signal.SIGSTOP)
            return True
        if kind == "requeue":
            return subprocess.run(["scontrol", "requeue", target.job_id]).returncode == 0
        if kind == "kill-in-checkpoint":
            return kill_in_checkpoint(target)
        os.kill(target.pid, signal.SIGKILL)
        return True

    def run(self, still_running, t0: float) -> list[dict]:
        """Inject every planned fault while `still_running()`; the faults injected, in order. The first waits for its
        target; after it, the first fault of the plan that has a target now goes next (a small study runs out of
        some kinds of target before others: waiting for each in turn left the last ones none)."""
        pending = self.faults[:1] + sorted(self.faults[1:], key=lambda kind: kind not in KILLS)
        while pending and still_running():
            time.sleep(self.rng.uniform(1.0, 4.0))
            while still_running() and not (kind := self._next(pending, t0)):
                time.sleep(0.1)
            if kind:
                pending.remove(kind)
        return self.done

    def _next(self, pending: list[str], t0: float) -> str | None:
        """Inject the first pending fault that has a target now (only the first fault while none is done)."""
        now: dict = {}  # one look at the cluster for every kind
        for kind in pending[:1] if not self.done else pending:
            if self._one(kind, t0, now):
                return kind
        return None

    def _one(self, kind: str, t0: float, now: dict | None = None) -> bool:
        targets = self.eligible(kind, now)
        if not targets:
            return False
        target = self.rng.choice(targets)
        if not self.inject(kind, target):
            return False
        self.kills[target.node] += kind in KILLS
        if not self.done or kind in ("hang", "usr2-in-evaluation"):
            self.once.add(target.node)
        self.done.append({"kind": kind, "node": target.node, "job": target.job_id, "at_s": round(time.monotonic() - t0, 1)})
        self.log(f"fault {len(self.done)}/{len(self.faults)}: {kind} on {target.node} (job {target.job_id}) "
                 f"at +{self.done[-1]['at_s']} s")
        return True


@contextmanager
def requeue_exit_off(slurm_conf: str):
    """The test cluster without `RequeueExit` (as real clusters run): a SIGKILLed job ends FAILED."""
    conf = Path(slurm_conf)
    original = conf.read_text()
    conf.write_text(re.sub(r"(?m)^RequeueExit=.*$", "", original))
    _reconfigure()
    try:
        yield
    finally:
        conf.write_text(original)
        _reconfigure()


def _reconfigure() -> None:
    subprocess.run(["scontrol", "reconfigure"], check=True, capture_output=True, timeout=60)
    time.sleep(1)  # slurmctld re-reads the file and pushes it to slurmd


# A packed study (`pack: study`): the faults come to one allocation, in this order, each once:
# USR2 to the packed job while two runs are active (both checkpoint, the job requeues itself), SIGKILL
# of one runner inside it (retried in place), SIGKILL of the job's host process with RequeueExit off
# (the allocation dies without warning: the watcher submits the study again).
PACKED_KINDS = ("usr2-to-the-job", "sigkill-a-run", "sigkill-the-host")


def active_runs(study, profile) -> list[Running]:
    """The study's runs whose runner is alive and training, by their own records (inside one allocation)."""
    out = []
    for entry in run_index(study, profile).runs:
        pid = read_status(Path(entry.run.run_dir)).get("pid") if entry.run.run_dir else None
        if entry.run.status == "running" and pid and _alive(pid, entry.node):
            run = Running(entry.node, entry.stage, "", Path(entry.run.run_dir), pid)
            out += [run] if run.training() else []
    return out


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def disturb_packed(study, profile, job_id: str, log=print, limit_s: float = 300) -> list[dict]:
    """Inject PACKED_KINDS into the packed study's job `job_id`; what was done, in order."""
    done = []

    def when(predicate, what: str):
        deadline = time.monotonic() + limit_s
        while not (found := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {limit_s} s waiting for {what}: {done}")
            time.sleep(0.05)
        return found

    two = when(lambda: (lambda runs: runs if len(runs) >= 2 else None)(active_runs(study, profile)), "two active runs")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    done.append({"kind": "usr2-to-the-job", "nodes": sorted(r.node for r in two), "job": job_id})
    hit = {r.node for r in two}
    run = when(lambda: [r for r in active_runs(study, profile) if r.node not in hit], "a run after the requeue")[0]
    os.kill(run.pid, signal.SIGKILL)
    done.append({"kind": "sigkill-a-run", "nodes": [run.node], "job": job_id})
    hit.add(run.node)
    when(lambda: any(r["node"] == run.node for r in read_jsonl(study_dir(study, profile).retries)), "its retry in place")
    run = when(lambda: [r for r in active_runs(study, profile) if r.node not in hit], "another run")[0]
    os.kill(parent(parent(run.pid)), signal.SIGKILL)  # runner <- its task's process <- the packed job's host
    done.append({"kind": "sigkill-the-host", "nodes": [run.node], "job": job_id})
    for d in done:
        log(f"packed fault: {d}")
    return done
