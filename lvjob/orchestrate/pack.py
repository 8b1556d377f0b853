"""A packed study (`pack: study` in the profile): the whole study inside one GPU allocation, queued once.

`lvjob submit` queues one GPU job (`PackTask`) and one small CPU job after it (`WatchTask`, `afterany`).

Inside the allocation the packed job runs the same `submit` that `make study` runs on a laptop, with
the local executor (lvjob.cluster.executors.LocalBackend): the same stage table, waves, late-bound
choices, retry gates and records, then the aggregate and plots; every run a child process of this
one through the same supervisor and runner (image, locks, resume, ledger, tracking), at most
`runs_per_gpu` at once on the one GPU. So a study smaller than the queue pays one queue wait, not
one per stage and gate.

What it survives, with the fan-out's promises:
- USR2 (a preemption, or the time limit ahead): SLURM signals every process of the job; the local
  executor passes it on to the running runs, which checkpoint (evaluations too), starts no more,
  and raises `Stopped`; this job then requeues itself from the host (submitit's handler, as every
  job does), and the requeued job skips what is complete and resumes the rest;
- a run that dies inside the allocation (an OOM kill, a crash): the local retry gate retries it in
  place, up to `max_retries`;
- the allocation dying without warning (a node lost, SIGKILL, no RequeueExit): the watcher, which
  starts when the packed job has ended, submits it again while the study is incomplete, up to
  `max_retries` times, each with a watcher after it; it is off the critical path when nothing dies;
- `scancel` of the packed job is its user's cancel, and a packed job that ended by itself (it returned, or
  failed on its own error, such as a stage that cannot choose) says so in the records: the watcher
  resubmits neither.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import submitit

from lvjob.cluster.executors import Batch, Stopped
from lvjob.cluster.profile import Profile
from lvjob.cluster.slurm import ACTIVE, CANCELLED
from lvjob.core import atomic
from lvjob.core.timestamps import utc_now
from lvjob.orchestrate import records, retries
from lvjob.orchestrate.tasks import PlainPickle, enter_workdir, study_backend
from lvjob.study.choices import study_dir
from lvjob.study.spec import Study

PACK = "study"  # the packed job's name in squeue (lvjob:<study>:study) and in the records
WATCH = "study-watch"
ENDED = "ended"  # a packed job's own record that it ended by itself (returned, or failed on its own error)


def inside(profile: Profile) -> Profile:
    """The profile as the packed job runs the study: its jobs are children on this allocation's GPU."""
    return replace(profile, executor="local", pack="none", max_parallel=profile.runs_per_gpu)


def critical_path(packing: str, waves: list[list[str]], gated) -> int:
    """Allocations in series from submit to the tables: 1 packed; fanned out, one per wave and one per gate after it."""
    if packing == PACK:
        return 1
    return sum(1 + any(gated(s) for s in wave) for wave in waves)


class PackTask(PlainPickle, submitit.helpers.Checkpointable):
    """What the packed job runs: the study, here, with the local executor."""

    name = PACK

    def __init__(self, study: Study, profile: Profile, workdir: str, cache: str):
        self.study, self.profile, self.workdir, self.cache = study, profile, workdir, cache

    def __call__(self) -> dict:
        from lvjob.orchestrate.submission import submit  # deferred: submission queues this task

        enter_workdir(self.workdir, self.cache, self.profile)
        try:
            submit(self.study, inside(self.profile), log=lambda m: print(m, flush=True))
        except Stopped as e:
            handler = signal.getsignal(signal.SIGUSR2)
            if signal.SIGUSR2 in e.signals and callable(handler):
                print(f"{PACK}: every running run checkpointed; requeueing this job", flush=True)
                handler(signal.SIGUSR2, None)  # submitit's: requeue this job (scontrol, from the host), then exit
            raise
        except Exception as e:  # its own error (a pre-flight, a stage that cannot choose): running it again changes nothing
            self._ended(str(e).strip().splitlines()[-1:])
            raise
        self._ended([])
        return {"study": self.study.name}

    def _ended(self, why: list[str]) -> None:
        """Say that this job ended by itself, so that its watcher does not submit it again."""
        row = {"job": ENDED, "job_id": os.environ.get("SLURM_JOB_ID", ""), "at": utc_now(), "why": why}
        atomic.append_jsonl(study_dir(self.study, self.profile).packs, [row])


class WatchTask(PlainPickle, submitit.helpers.Checkpointable):
    """After the packed job ended: submit it again if it died with the study incomplete (see the module's docstring)."""

    name = WATCH

    def __init__(self, study: Study, profile: Profile, workdir: str, cache: str, follows: str):
        self.study, self.profile, self.workdir, self.cache, self.follows = study, profile, workdir, cache, follows

    def __call__(self) -> dict:
        enter_workdir(self.workdir, self.cache, self.profile)
        job_id = self.follows
        state = study_backend(self.study, self.profile).states([job_id], settle=True).get(job_id, "UNKNOWN")
        with records.study_lock(self.study, self.profile):  # a submit now would find the packed job this queues
            verdict = self.verdict(job_id, state)
        print(f"{WATCH}: packed job {job_id} is {state}: {verdict}", flush=True)
        return {"job": job_id, "state": state, "verdict": verdict}

    def verdict(self, job_id: str, state: str) -> str:
        from lvjob.orchestrate.submission import study_complete  # deferred: submission queues this task

        if at := records.cancelled_at(self.study, self.profile):
            return f"the study was cancelled at {at} (lvjob cancel); not resubmitted"
        if state in ACTIVE:  # requeued (a preemption): watch it again
            queue(self.study, self.profile, self.workdir, self.cache, pack=False, after=[job_id])
            return "still queued or running; a watcher follows it again"
        if study_complete(self.study, self.profile):
            return "the study is complete"
        if state in CANCELLED:
            return "cancelled by its user; not resubmitted"
        ended = [r for r in pack_jobs(self.study, self.profile) if r["job"] == ENDED and r["job_id"] == job_id]
        if ended:
            return f"it ended by itself ({'; '.join(ended[-1]['why']) or 'returned'}); not resubmitted: see its log"
        used = retries.used(self.study, self.profile)[PACK]
        if used >= self.profile.max_retries:
            return f"the study is incomplete and the packed job used its {used} retries; submit the study again"
        jobs = queue(self.study, self.profile, self.workdir, self.cache)
        why = f"the packed job ended {state} with the study incomplete"
        retries.record(self.study, self.profile, [retries.Retry(PACK, PACK, job_id, state, why)], jobs[:1])
        return f"resubmitted as job {jobs[0].job_id} (retry {used + 1} of {self.profile.max_retries})"


def queue(study: Study, profile: Profile, workdir: str, cache: str, pack: bool = True, after: list[str] = ()) -> list:
    """Submit the packed job (unless `pack` is False) and a watcher after it; both recorded. The jobs submitted."""
    b, folder = study_backend(study, profile), study_dir(study, profile).submitit
    jobs = []
    if pack:
        (jobs,) = b.submit_wave(folder, [Batch(PACK, [PackTask(study, profile, workdir, cache)], [])], _record(study, profile),
                                print)
        after = [jobs[0].job_id]
    watcher = WatchTask(study, profile, workdir, cache, follows=after[0])
    (watch,) = b.submit_wave(folder, [Batch(WATCH, [watcher], list(after), gpu=False)], _record(study, profile), print)
    return jobs + watch


def _record(study: Study, profile: Profile):
    def record(name: str, jobs: list) -> None:
        atomic.append_jsonl(study_dir(study, profile).packs, [{"job": name, "job_id": j.job_id, "at": utc_now()} for j in jobs])
    return record


def pack_jobs(study: Study, profile: Profile) -> list[dict]:
    """Every packed job and watcher submitted for the study, oldest first."""
    return atomic.read_jsonl(study_dir(study, profile).packs)


def active_packs(study: Study, profile: Profile) -> list[str]:
    """The study's packed jobs and watchers still queued or running, in the order they were submitted."""
    ids = [r["job_id"] for r in pack_jobs(study, profile) if r["job"] in (PACK, WATCH)]
    active = study_backend(study, profile).active(ids)
    return [j for j in ids if j in active]
