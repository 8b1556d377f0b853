"""Where a study's jobs run, behind one small interface, as submitit does it: one backend per executor.

A backend runs the jobs of one wave of stages (lvjob.orchestrate.submission decides which) and says which of the
study's earlier jobs are still queued or running:

- `SlurmBackend`: one job array per stage, chained to the stages it waits for with `afterany`
  dependencies, submitted and recorded at once; it returns without waiting (`detached`).
- `LocalBackend`: the whole wave as child processes of this one, at most `max_parallel` at a time,
  waiting for it to end; nothing is ever left running, so nothing is ever active or cancellable. On a
  laptop, and inside a packed study's one allocation (lvjob.orchestrate.pack): a stop signal then
  reaches every running job, none starts after it, and the wave raises `Stopped` once they ended.

A batch whose jobs need no accelerator (a CPU-only stage, the aggregation, a retry gate) asks for
no GPU. Tasks are named by their `name` (a node's key, or a stage's gate).

`Backend` is the interface, written; `backend(profile)` picks one by the profile's executor, and the
orchestration never asks which.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ClassVar, NamedTuple, Protocol

import submitit

from lvjob.cluster import slurm
from lvjob.cluster.children import ChildJob
from lvjob.cluster.profile import Profile
from lvjob.core.stops import STOP_SIGNALS

POLL_S = 0.5


class Batch(NamedTuple):
    """One job array of a wave: what squeue calls it, its tasks, the job ids it waits for (afterany)."""

    stage: str
    tasks: list
    after: list[str]
    gpu: bool = True  # False: no GPU is asked for


Record = Callable[[str, list], None]  # called with (stage, its submitted jobs) once their ids are known


class Backend(Protocol):
    """What the orchestration asks of an executor; every backend is this and nothing more."""

    detached: ClassVar[bool]  # True: submit_wave returns while its jobs are queued (SLURM); False: once they end
    verb: ClassVar[str]  # how the log says a job was handed over: "submitted", "run"

    def submit_wave(self, folder: Path, batches: list[Batch], record: Record, log: Callable[[str], None]) -> list[list]:
        """Hand over every batch of one wave, `record` each batch's jobs once their ids are known; the jobs, by batch."""

    def states(self, job_ids: list[str], settle: bool = False) -> dict[str, str]:
        """{job id: SLURM state} of the jobs the executor still knows (none, for jobs that ran in the foreground).
        `settle`: the answer decides a retry, so a job the executor does not know yet is asked about again."""

    def active(self, job_ids: list[str]) -> set[str]:
        """The jobs among `job_ids` still queued or running."""

    def live_from(self, folder: Path) -> set[str]:
        """Every job queued or running whose batch script is in `folder`: the executor's own view, records or not."""

    def times(self, job_ids: list[str]) -> dict[str, slurm.Allocation]:
        """{job id: its allocation's state, submit, start and end} of the jobs the executor keeps accounts of."""

    def dependency_ids(self, job_ids: list[str]) -> list[str]:
        """The ids a job that waits for `job_ids` names in its dependency."""

    def wait_also(self, pending_by_stage: dict[str, list[str]], after: dict[str, list[str]]) -> None:
        """Make the still-pending jobs of each stage also wait for `after[stage]`."""

    def cancel(self, job_ids: list[str]) -> str:
        """Cancel the jobs; what was done, in words."""


def job_name(label: str, stage: str) -> str:
    """What squeue shows: the suite, the study (name and scale), the stage: `lvjob:lv-study-demo:stage1`."""
    return f"lvjob:{label}:{stage}" if label else f"lvjob:{stage}"


def _parameters(profile: Profile, stage: str, label: str = "", gpu: bool = True) -> dict:
    params = dict(name=job_name(label, stage), timeout_min=profile.timeout_min, cpus_per_task=profile.cpus_per_task,
                  gpus_per_node=profile.gpus_per_node if gpu else None, mem_gb=profile.mem_gb)
    return {k: v for k, v in params.items() if v is not None}


class Stopped(RuntimeError):
    """A stop signal reached the local executor (USR2: a preemption or a time limit ahead; TERM): it started no
    more jobs, passed the signal on to the running ones (each checkpoints) and waited for them to end."""

    def __init__(self, signals: list[int]):
        self.signals = signals
        super().__init__(f"stopped by {signal.Signals(signals[0]).name}: the running jobs checkpointed and the rest "
                         "did not start; the same command again resumes them")


class LocalBackend:
    """Jobs as child processes of this one (lvjob.cluster.children), which waits for them: on a laptop, or
    inside one packed allocation."""

    detached = False
    verb = "run"
    FORWARD_EVERY_S = 5.0  # a child still starting ignores the stop signal: it is sent again until every child ended

    def __init__(self, profile: Profile, label: str = ""):
        self.profile, self.label = profile, label

    def submit_wave(self, folder: Path, batches: list[Batch], record: Record, log) -> list[list]:
        """Run every task of the wave, at most `max_parallel` at once; their finished jobs, by batch."""
        flat = [t for b in batches for t in b.tasks]
        finished = iter(self._run(folder, flat, log))
        submitted = [[next(finished) for _ in b.tasks] for b in batches]
        for b, jobs in zip(batches, submitted):
            record(b.stage, jobs)
        return submitted

    def _run(self, folder: Path, tasks: list, log) -> list[ChildJob]:
        pending, running, finished, stops = list(tasks), [], {}, []
        forwarded = 0.0
        with _recording(stops):
            while running or (pending and not stops):  # after a stop: no new job, the running ones end
                while pending and not stops and len(running) < self.profile.max_parallel:
                    task = pending.pop(0)
                    running.append((task, ChildJob(folder, task)))
                    log(f"  {task.name}: started (pid {running[-1][1].job_id})")
                time.sleep(POLL_S)
                if stops and time.monotonic() - forwarded > self.FORWARD_EVERY_S:
                    forwarded = time.monotonic()
                    for _, job in running:
                        job.signal(stops[0])
                for task, job in [r for r in running if r[1].done()]:
                    running.remove((task, job))
                    finished[id(task)] = job
                    log(f"  {task.name}: {_outcome(job)}")
        if stops and (pending or any(job.error for job in finished.values())):  # else the stop came too late to matter
            raise Stopped(stops)
        return [finished[id(t)] for t in tasks]

    def states(self, job_ids: list[str], settle: bool = False) -> dict[str, str]:
        return {}  # local jobs ended with the `lvjob submit` that ran them

    def active(self, job_ids: list[str]) -> set[str]:
        return set()

    def live_from(self, folder: Path) -> set[str]:
        return set()

    def times(self, job_ids: list[str]) -> dict[str, slurm.Allocation]:
        return {}  # children of this process: no queue, no accounts

    def dependency_ids(self, job_ids: list[str]) -> list[str]:
        return sorted(set(job_ids))

    def wait_also(self, pending_by_stage: dict[str, list[str]], after: dict[str, list[str]]) -> None:
        pass  # nothing local is ever left queued

    def cancel(self, job_ids: list[str]) -> str:
        return ("local jobs run in the foreground of `lvjob submit`: stop it with Ctrl-C; the runs resume from "
                "their checkpoints when it is run again")


@contextmanager
def _recording(stops: list[int]):
    """While the wave runs, USR2 and TERM to this process are recorded (the wave stops), not its end."""
    previous = {s: signal.signal(s, lambda signum, frame: stops.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _outcome(job: ChildJob) -> str:
    return "done" if job.error is None else f"FAILED ({job.error})"


class SlurmBackend:
    """submitit's SLURM executor: job arrays chained by dependencies; SLURM runs them unattended."""

    detached = True
    verb = "submitted"

    def __init__(self, profile: Profile, label: str = ""):
        self.profile, self.label = profile, label

    def executor(self, folder: Path, stage: str, after: list[str], gpu: bool = True) -> submitit.AutoExecutor:
        p = self.profile
        # submitit's Python is the host's (this project's): the image runs only the runner, as a child.
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=p.max_num_timeout)
        # --requeue: a job whose node fails comes back whatever the site's JobRequeue default.
        extra = {"requeue": True} | dict(p.sbatch) | ({"dependency": "afterany:" + ":".join(after)} if after else {})
        params = _parameters(p, stage, self.label, gpu) | dict(
            slurm_partition=p.partition, slurm_account=p.account, slurm_qos=p.qos, slurm_constraint=p.constraint,
            slurm_signal_delay_s=p.signal_delay_s, slurm_array_parallelism=p.array_parallelism,
            slurm_additional_parameters=extra)
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return ex

    def submit_wave(self, folder: Path, batches: list[Batch], record: Record, log) -> list[list]:
        """One job array per stage, each recorded as soon as SLURM has taken it."""
        submitted = []
        for b in batches:
            ex = self.executor(folder, b.stage, b.after, b.gpu)
            with _clean_env(), ex.batch():
                jobs = [ex.submit(t) for t in b.tasks]
            record(b.stage, jobs)
            submitted.append(jobs)
        return submitted

    def states(self, job_ids: list[str], settle: bool = False) -> dict[str, str]:
        return slurm.states(job_ids, slurm.SETTLE_S if settle else ())

    def active(self, job_ids: list[str]) -> set[str]:
        return {j for j, state in slurm.states(job_ids).items() if state in slurm.ACTIVE}

    def live_from(self, folder: Path) -> set[str]:
        return slurm.queued_from(folder)

    def times(self, job_ids: list[str]) -> dict[str, slurm.Allocation]:
        return slurm.times(job_ids)

    def dependency_ids(self, job_ids: list[str]) -> list[str]:
        """One id per job array: a dependency on the array waits for all its tasks."""
        return sorted({slurm.array_id(j) for j in job_ids})

    def wait_also(self, pending_by_stage: dict[str, list[str]], after: dict[str, list[str]]) -> None:
        """Jobs still pending from an earlier submission also wait for what their stage's sources resubmitted
        (e.g. a failed stage-1 run submitted again while stage 2 is queued)."""
        for stage, ids in pending_by_stage.items():
            pending = sorted({slurm.array_id(j) for j, s in slurm.states(ids).items() if s == "PENDING"})
            for job in pending:
                slurm.set_dependency(job, after[stage])

    def cancel(self, job_ids: list[str]) -> str:
        slurm.cancel(job_ids)
        return f"cancelled {len(job_ids)} job(s): {' '.join(job_ids)}" if job_ids else "no queued or running job of this study"


@contextmanager
def _clean_env():
    """Without the SLURM variables of the job this runs in (a retry gate submits from inside one), which
    sbatch would otherwise take as the new jobs' settings; the client's own config (SLURM_CONF) is kept."""
    conf = os.environ.get("SLURM_CONF")
    with submitit.helpers.clean_env():
        if conf:
            os.environ["SLURM_CONF"] = conf
        yield


BACKENDS = {"local": LocalBackend, "slurm": SlurmBackend}


def backend(profile: Profile, label: str = "") -> Backend:
    """The profile's backend; `label` (study name and scale) names the jobs it submits."""
    return BACKENDS[profile.executor](profile, label)
