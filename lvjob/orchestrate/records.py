"""The study's records of its jobs, in its study folder (lvjob.core.paths.StudyDir).

`submissions.jsonl` holds every job submitted, by node, and `gates.jsonl` every retry gate, by
stage: one line each, appended in one locked write (`lvjob.core.atomic.append_jsonl`). Whoever submits
or re-points the study's jobs holds the study's lock (`study_lock`) from reading these to writing them. Which of them are
still queued or running is asked of the profile's backend: only job ids of its own executor.

`cancelled.json` says that the study's SLURM jobs were cancelled (`lvjob cancel`), until a user submits it to SLURM
again: a gate or a watcher still running when its job was cancelled (SLURM gives it `KillWait` seconds) then submits
nothing. Local gates (a laptop's, a packed job's) end with the submit that runs them and do not read it.
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager

from lvjob.cluster.executors import backend
from lvjob.cluster.profile import Profile
from lvjob.cluster.slurm import array_id
from lvjob.core import atomic
from lvjob.core.atomic import read_jsonl
from lvjob.core.timestamps import utc_now
from lvjob.study.choices import study_dir
from lvjob.study.spec import Study
from lvjob.study.stages import Node


def read_submissions(study: Study, profile: Profile) -> dict[str, dict]:
    """The latest submission of each node: {node key: {"job_id", "executor", "at"}}."""
    return {row["node"]: row for row in read_jsonl(study_dir(study, profile).submissions)}


def on_executor(submissions: dict[str, dict], profile: Profile) -> dict[str, dict]:
    """The submissions made with the profile's executor: the only job ids its backend can look up."""
    return {k: r for k, r in submissions.items() if r.get("executor") == profile.executor}


def record_submissions(study: Study, profile: Profile, stage: str, nodes: list[Node], jobs: list) -> None:
    """One line per job submitted for `nodes` (in order) of `stage`."""
    at = utc_now()
    atomic.append_jsonl(study_dir(study, profile).submissions,
                        [{"node": n.key, "stage": stage, "job_id": j.job_id, "executor": profile.executor, "at": at}
                         for n, j in zip(nodes, jobs)])


def record_gates(study: Study, profile: Profile, stage: str, jobs: list) -> None:
    at = utc_now()
    atomic.append_jsonl(study_dir(study, profile).gates,
                        [{"stage": stage, "job_id": j.job_id, "executor": profile.executor, "at": at} for j in jobs])


def active_gates(study: Study, profile: Profile) -> dict[str, list[str]]:
    """{stage: its gates queued or running now}."""
    rows = [r for r in read_jsonl(study_dir(study, profile).gates) if r.get("executor") == profile.executor]
    active = backend(profile).active([r["job_id"] for r in rows])
    out: dict[str, list[str]] = {}
    for r in (r for r in rows if r["job_id"] in active):
        out.setdefault(r["stage"], []).append(r["job_id"])
    return out


def active_jobs(study: Study, profile: Profile) -> dict[str, str]:
    """{node key: job id} of the study's jobs that are queued or running now."""
    latest = on_executor(read_submissions(study, profile), profile)
    active = backend(profile).active([r["job_id"] for r in latest.values()])
    return {k: r["job_id"] for k, r in latest.items() if r["job_id"] in active}


def active_job_ids(study: Study, profile: Profile) -> set[str]:
    """Every recorded job of the study still queued or running, not only each node's latest: a second job for one
    run (a second submit, a retry beside a requeue) is found too."""
    rows = [r for r in read_jsonl(study_dir(study, profile).submissions) if r.get("executor") == profile.executor]
    return backend(profile).active(sorted({r["job_id"] for r in rows}))


def unrecorded(study: Study, profile: Profile) -> list[str]:
    """The study's jobs queued or running (their batch script is in its folder) that none of its records names: an
    sbatch whose record was never written (killed between the two). Compared by job array."""
    folder = study_dir(study, profile)
    rows = [r for path in (folder.submissions, folder.gates, folder.packs) for r in read_jsonl(path)]
    recorded = {array_id(r["job_id"]) for r in rows if r.get("job_id")}
    return sorted(j for j in backend(profile).live_from(folder.submitit) if array_id(j) not in recorded)


def record_cancel(study: Study, profile: Profile, job_ids: list[str]) -> None:
    atomic.write_text(study_dir(study, profile).cancelled, json.dumps({"at": utc_now(), "job_ids": job_ids}))


def cancelled_at(study: Study, profile: Profile) -> str | None:
    """When the study was cancelled, if no submit came since; read under the study's lock."""
    path = study_dir(study, profile).cancelled
    return json.loads(path.read_text())["at"] if path.exists() else None


def clear_cancel(study: Study, profile: Profile) -> None:
    study_dir(study, profile).cancelled.unlink(missing_ok=True)


@contextmanager
def study_lock(study: Study, profile: Profile):
    """Held by whoever submits or re-points the study's queued jobs (a submit, a gate), from reading the records
    to writing them: two submits, or a submit and a gate, cannot both submit one run, and two gates cannot drop
    each other's successor. Only for a detached backend: locally every job ends inside the submit that ran it."""
    if not backend(profile).detached:
        yield
        return
    path = study_dir(study, profile).lock
    path.parent.mkdir(parents=True, exist_ok=True)  # a first submit takes it before anything else is written
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a filesystem without flock: the race it guards is a moment wide, go on
            pass
        yield
