"""The study's jobs on a profile, and how its late stages choose their configuration when they start.

The stages themselves, and the DAG they form, are the stage table of lvjob.study.stages; here
they meet the run directories.

Every node becomes one `Job` (lvjob.run.job), so one runner executes all of them and every run keeps
its deterministic run id: a resubmitted study finds its finished runs by id and skips them.
Stage 2 and the final run are *late-bound*: their configuration is chosen from the earlier stage's
results when the job starts, not when the study is submitted:

- stage 2 takes the (rank, lr) from stage 1's final validation losses (all stage-1 runs share one
  context, so their validation losses are comparable);
- the final run takes the (rank, lr, context) from stage 2's forecast MAEs on the validation
  systems (validation losses at different context lengths are not comparable).

Both by the one-standard-error rule: among the runs whose metric is within one standard error of
the lowest (over the validation chunks, or the series), the cheapest by COST_ORDER. A grid whose
differences are noise then chooses the same on every machine, and the record says so (`within_se`).

A choice is written once, by the first job of its stage to start (an exclusive create), and read
back by every other task of the stage, by the stage after it and by the aggregate: a source run
that finishes or changes later cannot make two tasks of one stage run different settings.
`lvjob status` says when a recorded choice is no longer what the source runs favour.

A choice reads runs that scored the validation systems only: one that finds a finished candidate
scored on any other split refuses to choose (the test systems are for reporting, SPEC §2).

Runs of the earlier stage that failed are left out of the choice and named in it; if none
finished, the later stage fails with a message saying why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from lvjob.core import atomic
from lvjob.core.paths import ResultsDir, StudyDir, results_variants
from lvjob.core.config import build, non_default, to_dict
from lvjob.run.job import Job
from lvjob.cluster.profile import Profile
from lvjob.run.rundir import RunStatus, summarize
from lvjob.study.spec import Study, job_fields
from lvjob.study.stages import Node, stage_named, study_nodes


class StageError(RuntimeError):
    """A late-bound stage cannot choose its configuration (no run of the stage before it finished)."""


COST_ORDER = ("rank", "context", "lr")  # the one-standard-error rule's "cheapest": smallest rank, shortest context, lowest lr


@dataclass(frozen=True)
class Choice:
    stage: str  # the stage that chose (stage2 or final)
    source: str  # the stage it chose from
    metric: str
    chosen: dict  # the settings taken over, e.g. {"rank": 8, "lr": 5e-05}
    best: str  # key of the run with the lowest metric
    candidates: tuple[dict, ...] = field(default_factory=tuple)  # key, run_dir, status, metric value and its SE
    taken: str | None = None  # key of the run whose settings were taken (None in records older than the rule)
    se: float | None = None  # the best run's standard error: the rule's tolerance
    within_se: tuple[str, ...] = ()  # every usable run within one SE of the best: more than one means noise decided

    def to_dict(self) -> dict:
        return to_dict(self)

    def spread_in_se(self) -> float | None:
        """How far the worst complete candidate lies from the best, in the best's standard errors: a grid
        discriminates when this is several (None without a standard error or a second candidate)."""
        values = [c[self.metric] for c in self.candidates if c["status"] == RunStatus.COMPLETE and c[self.metric] is not None]
        if not self.se or len(values) < 2:
            return None
        return (max(values) - min(values)) / self.se

    @classmethod
    def from_dict(cls, record: dict) -> Choice:
        return cls(**record | {"candidates": tuple(record.get("candidates", ())), "within_se": tuple(record.get("within_se", ()))})


def study_key(study: Study, profile: Profile) -> str:
    """The study's identity, `lv-study-demo-1a2b3c4d`: its name, scale and a digest of its settings that differ from
    their defaults (so that a setting added to the code does not move a study in flight), of the model's path and of
    its quantization."""
    settings = json.dumps([non_default(study), profile.model_path, profile.quantize_4bit], sort_keys=True)
    return f"{study.name}-{study.scale}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


def study_dir(study: Study, profile: Profile) -> StudyDir:
    """Where the study's own records live (submissions, choices, submitit logs)."""
    return StudyDir(Path(profile.runs_root) / f"study-{study_key(study, profile)}")


def study_results(study: Study, profile: Profile) -> ResultsDir:
    """Where the study's run index, tables and plots are written; the profile's `results_dir` links to the latest."""
    return ResultsDir(results_variants(profile.results_dir) / study_key(study, profile))


def make_job(study: Study, profile: Profile, node: Node, chosen: dict | None = None) -> Job:
    """The job of `node` on `profile`, with the settings a late-bound stage chose (None for the others)."""
    if not node.stage.runs_jobs:
        raise ValueError(f"the {node.stage.name} node runs no job")
    where = (("model_path", profile.model_path), ("quantize_4bit", profile.quantize_4bit), ("device", profile.device))
    job = build(Job, job_fields(study, node, chosen) | dict(where), where=f"study {study.name}, job {node.key}")
    return replace(job, run_dir=str(Path(profile.runs_root) / job.run_id()))


def choose(study: Study, profile: Profile, stage: str, require_all: bool = False) -> Choice | None:
    """The configuration `stage` (stage2 or final) takes from the runs of the stage before it.

    With `require_all` (at submission) it returns None unless every earlier run is complete;
    otherwise (when the job starts) it chooses among the complete ones and raises StageError if
    there are none.
    """
    rule = stage_named(stage).choice
    source, metric, copied = rule.source, rule.metric, rule.copied
    upstream = None
    if stage_named(source).choice:  # the source is late-bound itself (stage 2 for the final run): what it ran with
        try:
            upstream = read_choice(study, profile, source) or choose(study, profile, source, require_all)
        except StageError as e:
            raise StageError(f"{stage} cannot start: its {source} runs could not run: {e}") from None
        if upstream is None:
            return None
    runs = []
    for node in (n for n in study_nodes(study) if n.stage.name == source):
        job = make_job(study, profile, node, upstream.chosen if upstream else None)
        runs.append((node, job, summarize(job.resolved_run_dir())))
    candidates = tuple({"key": n.key, "run_dir": s.run_dir, "status": s.status, metric: s.value(metric),
                        f"{metric}_se": s.value(f"{metric}_se"), "split": s.split,
                        **{k: getattr(j, k) for k in copied}} for n, j, s in runs)
    _refuse_unseen_systems(stage, candidates)
    usable = [c for c in candidates if c["status"] == RunStatus.COMPLETE and c[metric] is not None]
    if require_all and len(usable) < len(candidates):
        return None
    if not usable:
        why = "; ".join(f"{c['key']}: {c['status']}" for c in candidates)
        raise StageError(f"{stage} cannot start: no {source} run finished with a {metric} ({why})")
    best, within, taken = one_standard_error(usable, metric)
    return Choice(stage=stage, source=source, metric=metric, chosen={k: taken[k] for k in copied}, best=best["key"],
                  candidates=candidates, taken=taken["key"], se=best[f"{metric}_se"], within_se=tuple(c["key"] for c in within))


def one_standard_error(usable: list[dict], metric: str) -> tuple[dict, list[dict], dict]:
    """(the best candidate, those within one of its standard errors, the cheapest of those by COST_ORDER).

    The metric's differences below one standard error are noise (floating point between machines,
    which chunks or series were drawn): taking the cheapest of the indistinguishable candidates makes
    a choice that noise cannot flip. Without a standard error the best is taken. Ties keep study order.
    """
    best = min(usable, key=lambda c: c[metric])
    tolerance = best[f"{metric}_se"] or 0.0
    within = [c for c in usable if c[metric] <= best[metric] + tolerance]
    return best, within, min(within, key=lambda c: tuple(c.get(k, 0) for k in COST_ORDER))


def _refuse_unseen_systems(stage: str, candidates: tuple[dict, ...]) -> None:
    """A choice reads validation systems only (SPEC §2): a finished candidate that scored others is a fault, not a run to skip."""
    wrong = [c for c in candidates if c["status"] == RunStatus.COMPLETE and c["split"] != "validation"]
    if wrong:
        raise StageError(f"{stage} cannot choose: " + ", ".join(f"{c['key']} scored the {c['split']} systems" for c in wrong)
                         + "; valid: choices read validation systems only")


def record_choice(study: Study, profile: Profile, choice: Choice) -> Choice:
    """Record `choice` unless its stage has one already; the recorded one (the first writer's) is returned."""
    path = study_dir(study, profile).choice(choice.stage)
    if atomic.create_once(path, json.dumps(choice.to_dict(), indent=1)):
        return choice
    return read_choice(study, profile, choice.stage)


def stale_choice(study: Study, profile: Profile, stage: str) -> str | None:
    """Why `stage`'s recorded choice is no longer what its source runs say (a run finished or changed since); None if it is."""
    recorded = read_choice(study, profile, stage)
    try:
        now = choose(study, profile, stage) if recorded else None
    except StageError:
        return None
    if now is None or now.chosen == recorded.chosen:
        return None
    return (f"{stage} ran with {recorded.taken or recorded.best}'s settings, but its {recorded.source} runs now favour "
            f"{now.taken}; "
            "the recorded choice stands (delete it and submit again to choose anew)")


def read_choice(study: Study, profile: Profile, stage: str) -> Choice | None:
    """The choice `stage` recorded when it started; None before it has."""
    path = study_dir(study, profile).choice(stage)
    return Choice.from_dict(json.loads(path.read_text())) if path.exists() else None


def job_for(study: Study, profile: Profile, node: Node, at_submission: bool = False) -> Job | None:
    """The job `node` runs. Late-bound nodes choose now; at submission, None if they cannot yet."""
    if not node.stage.choice:
        return make_job(study, profile, node)
    recorded = read_choice(study, profile, node.stage.name)  # written once: every task of the stage runs with it
    choice = recorded or choose(study, profile, node.stage.name, require_all=at_submission)
    if choice is None:
        return None
    job = make_job(study, profile, node, choice.chosen)
    # Recorded when the first job starts; a run found complete at submission starts none, and a changed
    # study (a new records folder) must still know which choice made it.
    if not recorded and (not at_submission or summarize(job.resolved_run_dir()).status == RunStatus.COMPLETE):
        winner = record_choice(study, profile, choice)
        job = make_job(study, profile, node, winner.chosen)
    return job
