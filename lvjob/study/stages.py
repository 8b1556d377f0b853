"""The stage table: the one description of the study's jobs.

Each stage is one entry of `STAGES`: how its nodes (jobs) come from the `Study`, what it waits for,
how it chooses its configuration if it is late-bound, and where it appears in plots. Running
(lvjob.orchestrate.submission), planning (lvjob.study.plan), status, aggregation and plots all read
this table, so a stage added here is run, charged and reported with nothing else changed. Each
`Node` holds its `Stage`, so no reader looks a stage up by name to learn how its node runs.

Splits (SPEC §2): every stage says which systems its evaluations score. The stages that others
choose from score the validation systems; the stages compared in Table 3 score the test systems,
which no choice ever reads (`check_table` refuses a table where a choice could read them).

The study's jobs as a DAG (`after`; `waits_for` adds the aggregation's edges):

    stage1 -> stage2 -> final        each late-bound stage waits for the one it chooses from
    zero-shot, default, baselines    wait for nothing
    aggregate                        waits for every stage that runs jobs
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from lvjob.forecasting.baselines import BASELINES

if TYPE_CHECKING:
    from lvjob.study.spec import Study


@dataclass(frozen=True)
class ChoiceRule:
    """How a late-bound stage chooses when it starts: the lowest `metric` among `source`'s runs."""

    source: str  # the name of the stage chosen from
    metric: str  # a RunSummary field
    copied: tuple[str, ...]  # the Job settings taken over from the winning run


@dataclass(frozen=True)
class Stage:
    name: str  # also its label in the FLOP tables and its key in the study's records
    build: Callable[[Stage, Study], list[Node]]  # its nodes, from the study
    after: tuple[str, ...] = ()  # stages it waits for (SLURM afterany); the aggregation waits for all
    choice: ChoiceRule | None = None  # late-bound: chooses from earlier results when it starts
    loss_plot: tuple[str, str] | None = None  # (figure, title) its training curves are drawn in
    runs_jobs: bool = True  # False for the aggregation, which gathers instead of running a job
    split: Literal["validation", "test"] = "validation"  # the systems its evaluations score
    gpu: bool = True  # False: its jobs need no accelerator (they ask for no GPU; the aggregation never does)

    def nodes(self, study: Study) -> list[Node]:
        return self.build(self, study)


@dataclass(frozen=True)
class Node:
    """One job of the study (or the aggregation). `origin` names the study key of each setting."""

    stage: Stage
    key: str  # unique in the study; also the run's name
    settings: tuple[tuple[str, Any], ...] = ()  # Job fields fixed by the study for this node
    origin: tuple[tuple[str, str], ...] = ()  # (Job field, the study key it comes from)
    label: str = ""  # how the comparison table names it ("" = not compared)


def _run_origin(section: str) -> tuple[tuple[str, str], ...]:
    return tuple((k, f"{section}.{k}") for k in ("rank", "lr", "context", "steps"))


def _zero_shot(s: Stage, study: Study) -> list[Node]:
    return [Node(s, f"zero-shot-{p}", (("kind", "evaluate"), ("prompt", p)), (("prompt", "zero_shot_prompts"),),
                 f"zero-shot, {p} prompt") for p in study.zero_shot_prompts]


def _default(s: Stage, study: Study) -> list[Node]:
    d = study.default
    settings = (("rank", d.rank), ("lr", d.lr), ("context", d.context), ("steps", d.steps))
    return [Node(s, "default", settings, _run_origin("default"), "default fine-tune")]


def _stage1(s: Stage, study: Study) -> list[Node]:
    s1 = study.stage1
    origin = (("rank", "stage1.ranks"), ("lr", "stage1.lrs"), ("context", "stage1.context"), ("steps", "stage1.steps"))
    return [Node(s, f"stage1-r{r}-lr{lr:g}", (("rank", r), ("lr", lr), ("context", s1.context), ("steps", s1.steps)), origin)
            for r in s1.ranks for lr in s1.lrs]


def _stage2(s: Stage, study: Study) -> list[Node]:
    origin = (("context", "stage2.contexts"), ("steps", "stage2.steps"))
    return [Node(s, f"stage2-ctx{c}", (("context", c), ("steps", study.stage2.steps)), origin)
            for c in study.stage2.contexts]


def _final(s: Stage, study: Study) -> list[Node]:
    return [Node(s, "final", (("steps", study.final.steps),), (("steps", "final.steps"),), "best fine-tune (final run)")]


def _baselines(s: Stage, study: Study) -> list[Node]:
    return [Node(s, f"baseline-{name}", (("kind", "baseline"), ("forecaster", name)), (), b.label)
            for name, b in BASELINES.items()]


def _aggregate(s: Stage, study: Study) -> list[Node]:
    return [Node(s, "aggregate")]


STAGES: tuple[Stage, ...] = (
    Stage("zero-shot", _zero_shot, split="test"),
    Stage("default", _default, loss_plot=("loss_default_final", "Default fine-tune and final run"), split="test"),
    Stage("stage1", _stage1, loss_plot=("loss_stage1", "Stage 1: LoRA rank x learning rate")),
    # Stage 1's runs share one context, so their validation losses are comparable.
    Stage("stage2", _stage2, after=("stage1",), choice=ChoiceRule("stage1", "val_loss", ("rank", "lr")),
          loss_plot=("loss_stage2", "Stage 2: context length")),
    # Validation losses at different context lengths are not comparable: stage 2 is chosen by forecast error.
    Stage("final", _final, after=("stage2",), choice=ChoiceRule("stage2", "eval_mae", ("rank", "lr", "context")),
          loss_plot=("loss_default_final", "Default fine-tune and final run"), split="test"),
    Stage("baselines", _baselines, split="test", gpu=False),  # CPU jobs: no model
    Stage("aggregate", _aggregate, runs_jobs=False),
)


def stage_table() -> tuple[Stage, ...]:
    """The stages in study order. Read at call time, so a stage added to STAGES is seen everywhere."""
    return STAGES


def check_table(stages: Sequence[Stage], study: Study) -> None:
    """Refuse a stage table in which a choice could read the test systems, or a report could show
    systems a choice was made on (SPEC §2)."""
    by_name = {s.name: s for s in stages}
    for s in stages:
        if s.choice and by_name[s.choice.source].split != "validation":
            raise ValueError(f"stage {s.name} chooses from {s.choice.source}, which scores the {by_name[s.choice.source].split} "
                             "systems; valid: choices read validation systems only")
        labelled = s.runs_jobs and any(n.label for n in s.nodes(study))
        if labelled and s.split != "test":
            raise ValueError(f"stage {s.name} is compared in Table 3 but scores the {s.split} systems; valid: test")


def stage_named(name: str) -> Stage:
    """The stage called `name` (a choice's source, a gate's stage: names that come from records)."""
    return next(s for s in stage_table() if s.name == name)


def waits_for(s: Stage) -> tuple[str, ...]:
    """The stages `s` waits for; the aggregation waits for every stage that runs jobs."""
    return s.after if s.runs_jobs else tuple(t.name for t in stage_table() if t.runs_jobs)


def study_nodes(study: Study) -> list[Node]:
    return [n for s in stage_table() for n in s.nodes(study)]
