"""The retry gates' policy and records: which of a stage's runs is submitted again, and why (SPEC §7).

A gate (lvjob.orchestrate.tasks.GateTask) runs after a stage's jobs have ended and before the stages that wait
for it start. It retries a run whose job ended with the run incomplete, for any reason but a user's
cancel, at most `max_retries` times per run over the study's life:

- retried: FAILED (the runner crashed or was SIGKILLed: an OOM kill, a segfault), OUT_OF_MEMORY,
  NODE_FAIL, TIMEOUT once submitit stopped requeueing, PREEMPTED, BOOT_FAIL, a local job that ended, and
  a job SLURM still does not know after the gate asked again for half a minute (sacct lags behind
  a job's end; lvjob.cluster.slurm.SETTLE_S), since a run left out of a choice is worse than one run twice;
- never retried: CANCELLED (`scancel`, with or without `--signal=KILL`: SLURM records both as a
  cancel), and an array task that no command lists and whose run never started after it was
  submitted (UNSEEN: SLURM keeps no record of a task cancelled before it started). An UNSEEN task
  whose run did start after it was submitted ran, and its record lags: retried;
- left alone: a run whose job is still queued or running (another gate follows it).

Nothing is retried once the study was cancelled (`lvjob cancel`), until a user submits it again
(lvjob.orchestrate.records.cancelled_at).

The retried run resumes from its newest checkpoint. Every retry is one line of
`<study dir>/retries.jsonl` (node, stage, the job that ended, its state, why, the new job), appended
in one write so gates running at once cannot interleave.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from lvjob.core.atomic import append_jsonl
from lvjob.core.timestamps import utc_now
from lvjob.core.atomic import read_jsonl
from lvjob.cluster.profile import Profile
from lvjob.cluster.slurm import ACTIVE, CANCELLED, UNSEEN
from lvjob.results.index import IndexEntry
from lvjob.study.choices import study_dir
from lvjob.study.spec import Study


@dataclass(frozen=True)
class Retry:
    """A run to submit again: its node, the job that ended without completing it, and why."""

    node: str
    stage: str
    job_id: str
    state: str  # the ended job's SLURM state; "ended" for a local job
    why: str


def due(runs: list[IndexEntry], latest: dict[str, dict], states: dict[str, str], used: Counter,
        max_retries: int) -> list[Retry]:
    """The runs (run index entries of one stage) to retry now, given each node's latest submission,
    the states of those jobs and the retries each node has used."""
    out = [_retry(entry, latest.get(entry.node), states) for entry in runs if used[entry.node] < max_retries]
    return [r for r in out if r is not None]


def _retry(entry: IndexEntry, submission: dict | None, states: dict[str, str]) -> Retry | None:
    if entry.complete or submission is None:
        return None
    job_id = submission["job_id"]
    state = states.get(job_id) or "ended"  # a local job has ended with the submit that ran it
    if state in ACTIVE or state in CANCELLED or (state == UNSEEN and not _ran_after(entry, submission)):
        return None  # UNSEEN and never started under this job: an array task cancelled before it started
    return Retry(entry.node, entry.stage, job_id, state, why(job_id, state, entry))


def _ran_after(entry: IndexEntry, submission: dict) -> bool:
    """Whether the run has an attempt that started after `submission` was made (so its job ran)."""
    return bool(entry.run.last_start and submission.get("at") and entry.run.last_start >= submission["at"])


def why(job_id: str, state: str, entry: IndexEntry) -> str:
    """In words: how the job ended and where it left its run, e.g. `job 7_3 FAILED; run left running at step 2/4`."""
    run = entry.run
    where = f" at step {run.step or 0}/{run.steps}" if run.steps else ""
    error = f": {run.error}" if run.error else ""
    return f"job {job_id} {state}; run left {run.status}{where}{error}"


def path(study: Study, profile: Profile) -> Path:
    return study_dir(study, profile).retries


def read(study: Study, profile: Profile) -> list[dict]:
    """Every retry of the study, oldest first."""
    return read_jsonl(path(study, profile))


def used(study: Study, profile: Profile) -> Counter:
    """Retries used so far, by node."""
    return Counter(r["node"] for r in read(study, profile))


def record(study: Study, profile: Profile, retries: list[Retry], new_jobs: list) -> None:
    at = utc_now()
    rows = [asdict(r) | {"new_job_id": j.job_id, "at": at} for r, j in zip(retries, new_jobs)]
    append_jsonl(path(study, profile), rows)
