"""The budget planner: total a study's FLOPs by the rules of SPEC §5 before anything runs.

Every training step is charged 3 x forward (LoRA or not); validation losses are forwards of the
fixed validation subset; every evaluation is prompt processing plus one forward per generated
token against the KV cache, for each series and sample. Choices made at run time are charged at
their most expensive candidate (the final run at stage 2's longest context and stage 1's largest
rank), so a plan that fits cannot be overrun by what the stages choose.

When a study does not fit, `propose` finds what does: first the final run's largest step count
("as far as the budget allows", SPEC §1); if even no final run fits, the largest common fraction
of every training stage's steps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lvjob import flops
from lvjob.grammar import ALPHABET
from lvjob.prompts import forecast_tokens, prompt_tokens
from lvjob.study import LoraRun, Study


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


def validation_passes(steps: int, every: int) -> int:
    """Validation runs every `every` steps and once more at the last step if that is not a multiple."""
    return math.ceil(steps / every) if steps > 0 else 0


def _training(study: Study, shape: flops.ModelShape, experiment: str, run: LoraRun, what: str | None = None) -> list[Item]:
    t = study.training
    what = what or f"r={run.rank} lr={run.lr:g} ctx={run.context}"
    step = flops.train_step(shape, t.batch_size, run.context, run.rank).total
    passes = validation_passes(run.steps, t.val_every)
    val = flops.forward(shape, t.val_chunks, run.context, lora_rank=run.rank, loss=True).total
    return [
        Item(experiment, what, "train", run.steps, run.steps * step),
        Item(experiment, what, "validation", passes, passes * val),
    ]


def _evaluation(study: Study, shape: flops.ModelShape, experiment: str, prompt: str, rank: int, what: str) -> Item:
    d, e = study.data, study.evaluation
    p = prompt_tokens(prompt, d.context_points, d.horizon_points, study.text.decimals)
    n = forecast_tokens(d.horizon_points, study.text.decimals)
    # Constrained decoding computes only the grammar's rows of the LM head (lvjob.forecast).
    per_series = flops.generation(shape, 1, p, n, lora_rank=rank, logits_vocab=len(ALPHABET)).total
    count = e.series * e.samples
    return Item(experiment, what, "evaluation", count, count * per_series)


def plan_study(study: Study) -> Plan:
    shape = flops.shape_of(study.model)
    items: list[Item] = []
    trained = study.evaluation.trained_prompt
    for prompt in study.zero_shot_prompts:
        items.append(_evaluation(study, shape, "zero-shot", prompt, 0, f"{prompt} prompt"))

    items += _training(study, shape, "default", study.default)
    items.append(_evaluation(study, shape, "default", trained, study.default.rank, items[-1].run))

    s1 = study.stage1
    for rank in s1.ranks:
        for lr in s1.lrs:
            run = LoraRun(rank=rank, lr=lr, context=s1.context, steps=s1.steps)
            items += _training(study, shape, "stage1", run)
            items.append(_evaluation(study, shape, "stage1", trained, rank, items[-1].run))

    # Stages 2 and final take their rank (and lr) from earlier stages at run time: charge the largest.
    worst_rank, any_lr = max(s1.ranks), s1.lrs[0]
    for ctx in study.stage2.contexts:
        run = LoraRun(rank=worst_rank, lr=any_lr, context=ctx, steps=study.stage2.steps)
        items += _training(study, shape, "stage2", run, f"stage-1 best (charged r={worst_rank}) ctx={ctx}")
        items.append(_evaluation(study, shape, "stage2", trained, worst_rank, items[-1].run))

    final = LoraRun(rank=worst_rank, lr=any_lr, context=max(study.stage2.contexts), steps=study.final.steps)
    items += _training(study, shape, "final", final, f"stage-2 best (charged r={worst_rank} ctx={final.context})")
    items.append(_evaluation(study, shape, "final", trained, worst_rank, items[-1].run))
    return Plan(study, tuple(items))


def _with_steps(study: Study, fraction: float | None = None, final_steps: int | None = None) -> Study:
    def scaled(n: int) -> int:
        return n if fraction is None else int(n * fraction)

    return dataclasses.replace(
        study,
        default=dataclasses.replace(study.default, steps=scaled(study.default.steps)),
        stage1=dataclasses.replace(study.stage1, steps=scaled(study.stage1.steps)),
        stage2=dataclasses.replace(study.stage2, steps=scaled(study.stage2.steps)),
        final=dataclasses.replace(study.final, steps=scaled(study.final.steps) if final_steps is None else final_steps),
    )


def _largest(fits, hi: int) -> int:
    """Largest n in [0, hi] with fits(n), for a monotone predicate; -1 if none."""
    if not fits(0):
        return -1
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


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
    final = _largest(lambda n: plan_study(_with_steps(study, final_steps=n)).total <= budget, study.final.steps)
    if final >= 0:
        s = _with_steps(study, final_steps=final)
        return Proposal(s, plan_study(s), f"final.steps={final} (was {study.final.steps}), all other stages unchanged")
    # Not even without a final run: shrink every training stage by one common fraction (in 1/10000ths).
    k = _largest(lambda n: plan_study(_with_steps(study, fraction=n / 10000)).total <= budget, 10000)
    if k < 0:
        return None  # evaluations alone exceed the budget: no step count helps
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
        "prompt + one forward per generated token with a KV cache, the LM head computing only the grammar's 13",
        "tokens (as constrained decoding does). Stage 2 and the final run are charged at the",
        "largest stage-1 rank and the longest stage-2 context, whatever the stages choose.",
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
    return "\n".join(lines)


def _f(x: int) -> str:
    return fmt_flops(x) if x else "-"
