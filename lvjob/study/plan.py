"""The budget planner: total a study's FLOPs by the rules of SPEC §5 before anything runs.

The plan charges the jobs the study will run, built by the same path that runs them (the stage
table of lvjob.study.spec, lvjob.study.choices.make_job), each at `lvjob.run.cost.job_cost`: the most it can spend
by the units its ledger books. A late-bound stage is charged at the most expensive configuration
it could choose, so a plan that fits cannot be overrun by what the stages choose.

When a study does not fit, `propose` finds what does: first the final run's largest step count
("as far as the budget allows", SPEC §1); if even one final step does not fit, the largest common
fraction of every training stage's steps (at least one step each).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lvjob.run.cost import job_cost, validation_passes
from lvjob.run.job import Job
from lvjob.cluster.profile import Profile
from lvjob.study.choices import make_job
from lvjob.study.spec import Study, node_choices
from lvjob.study.stages import Node, stage_table

@dataclass(frozen=True)
class Item:
    experiment: str  # zero-shot, default, stage1, stage2, final
    run: str  # e.g. "r=4 lr=1e-05 ctx=512"
    kind: str  # train, validation, evaluation
    count: int  # steps, validation passes or series x samples
    flops: int


@dataclass(frozen=True)
class Plan:
    study: Study
    items: tuple[Item, ...]

    @property
    def total(self) -> int:
        return sum(i.flops for i in self.items)

    @property
    def budget(self) -> float:
        return self.study.budget_flops

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def by_experiment(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.items:
            out[i.experiment] = out.get(i.experiment, 0) + i.flops
        return out


def _label(job: Job, late: str | None) -> str:
    if job.kind == "baseline":
        return f"{job.forecaster} (CPU, no model)"
    if job.kind == "evaluate":
        return f"{job.prompt} prompt"
    what = f"r={job.rank} lr={job.lr:g} ctx={job.context}"
    return f"{late}'s best (charged {what})" if late else what


def _charged(study: Study, profile: Profile, node: Node) -> Job:
    """The node's job; for a late-bound node, the costliest job it could choose."""
    jobs = [make_job(study, profile, node, chosen) for chosen in node_choices(study, node)]
    return max(jobs, key=lambda j: job_cost(j).total)  # ties: the first in study order


def _items(study: Study, profile: Profile, node: Node) -> list[Item]:
    job = _charged(study, profile, node)
    rule, name = node.stage.choice, node.stage.name
    what, cost = _label(job, rule.source if rule else None), job_cost(job)
    evaluation = Item(name, what, "evaluation", job.series * job.samples, cost.prompt + cost.generation)
    if job.kind != "train":
        return [evaluation]
    passes = validation_passes(job.steps, job.val_every)
    return [Item(name, what, "train", cost.train_steps, cost.train),
            Item(name, what, "validation", passes, cost.validation), evaluation]


def plan_study(study: Study, profile: Profile = Profile()) -> Plan:
    """Every job of the study's stage table, charged at its most (the profile changes no FLOP)."""
    items = [item for s in stage_table() if s.runs_jobs for node in s.nodes(study) for item in _items(study, profile, node)]
    return Plan(study, tuple(items))


def _with_steps(study: Study, fraction: float | None = None, final_steps: int | None = None) -> Study:
    def scaled(n: int) -> int:
        return n if fraction is None else max(1, int(n * fraction))  # a job trains at least one step

    return dataclasses.replace(
        study,
        default=dataclasses.replace(study.default, steps=scaled(study.default.steps)),
        stage1=dataclasses.replace(study.stage1, steps=scaled(study.stage1.steps)),
        stage2=dataclasses.replace(study.stage2, steps=scaled(study.stage2.steps)),
        final=dataclasses.replace(study.final, steps=scaled(study.final.steps) if final_steps is None else final_steps),
    )


def _largest(fits, hi: int, lo: int = 0) -> int:
    """Largest n in [lo, hi] with fits(n), for a monotone predicate; -1 if none."""
    if not fits(lo):
        return -1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _with_samples(study: Study, samples: int) -> Study:
    return dataclasses.replace(study, evaluation=dataclasses.replace(study.evaluation, samples=samples))


MAX_SAMPLES = 1000  # where the search for the most samples that fit stops


def samples_that_fit(study: Study) -> int:
    """The most forecast samples per series (`evaluation.samples`) with which the study fits its budget; 0 if none."""
    return max(0, _largest(lambda k: plan_study(_with_samples(study, k)).fits, MAX_SAMPLES, lo=1))


@dataclass(frozen=True)
class Proposal:
    study: Study
    plan: Plan
    how: str


def propose(study: Study) -> Proposal | None:
    """The largest step counts that fit the budget, or None if the study fits as it is."""
    if plan_study(study).fits:
        return None
    budget = study.budget_flops
    final = _largest(lambda n: plan_study(_with_steps(study, final_steps=n)).total <= budget, study.final.steps, lo=1)
    if final >= 1:
        s = _with_steps(study, final_steps=final)
        return Proposal(s, plan_study(s), f"final.steps={final} (was {study.final.steps}), all other stages unchanged")
    # Not even with one final step: shrink every training stage by one common fraction (in 1/10000ths).
    k = _largest(lambda n: plan_study(_with_steps(study, fraction=n / 10000)).total <= budget, 10000)
    if k < 0:
        return None  # the evaluations and one step of every stage exceed the budget: no step count helps
    s = _with_steps(study, fraction=k / 10000)
    return Proposal(s, plan_study(s), f"every training stage at {k / 100:.2f}% of its steps: "
                    f"default.steps={s.default.steps} stage1.steps={s.stage1.steps} "
                    f"stage2.steps={s.stage2.steps} final.steps={s.final.steps}")


# --- report ------------------------------------------------------------------------------------


def fmt_flops(x: float) -> str:
    return f"{x:.3e}"


def format_plan(plan: Plan) -> str:
    """Markdown: one row per run (training, validation losses, evaluation), totals per experiment."""
    s = plan.study
    e = s.evaluation
    lines = [
        f"# FLOP plan: {s.name} (scale: {s.scale}, model: {s.model})",
        "",
        "Charged by the rules of SPEC §5: a training step = 3 x forward (LoRA or not); validation loss = forward of",
        f"{s.training.val_chunks} chunks every {s.training.val_every} steps; evaluation = {e.series} series x {e.samples} sample(s),",
        "each series' prompt once, then one forward per generated token and sample with a KV cache, the LM head computing only the grammar's 13",
        "tokens (as constrained decoding does), every value at the grammar's most integer digits. Late-bound",
        "stages (stage 2, the final run) are charged at the costliest configuration they could choose.",
        "",
        "| experiment | run | steps | training | validation | evaluation | total | share of budget |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for i in plan.items:
        row = rows.setdefault((i.experiment, i.run), {"steps": 0, "train": 0, "validation": 0, "evaluation": 0})
        row[i.kind] += i.flops
        if i.kind == "train":
            row["steps"] = i.count
    for (exp, run), r in rows.items():
        total = r["train"] + r["validation"] + r["evaluation"]
        lines.append(f"| {exp} | {run} | {r['steps']:,} | {_f(r['train'])} | {_f(r['validation'])} | "
                     f"{_f(r['evaluation'])} | {fmt_flops(total)} | {total / plan.budget:.2%} |")
    lines += ["", "| experiment | FLOPs | share of budget |", "|---|---:|---:|"]
    for exp, total in plan.by_experiment().items():
        lines.append(f"| {exp} | {fmt_flops(total)} | {total / plan.budget:.2%} |")
    lines.append(f"| **total** | **{fmt_flops(plan.total)}** | **{plan.total / plan.budget:.2%}** |")
    lines.append("")
    verdict = "fits" if plan.fits else f"does NOT fit: over by {fmt_flops(plan.total - plan.budget)} ({plan.total / plan.budget - 1:.1%})"
    lines.append(f"Budget {fmt_flops(plan.budget)}: the plan {verdict}.")
    if plan.fits:
        lines.append(f"With everything else as it is, up to {samples_that_fit(s)} samples per series fit "
                     f"(evaluation.samples, now {e.samples}).")
    return "\n".join(lines)


def _f(x: int) -> str:
    return fmt_flops(x) if x else "-"
