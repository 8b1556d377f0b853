"""The study of SPEC §1 as a typed config, and its stage table: the one description of its jobs.

Each stage is one entry of `STAGES`: how its nodes (jobs) come from the `Study`, what it waits for,
how it chooses its configuration if it is late-bound, and where it appears in plots. Running
(lvjob.orchestrate.submission), planning (lvjob.study.plan), status, aggregation and plots all read this table, so a
stage added here is run, charged and reported with nothing else changed.

Every setting the stages give a job goes through `Job`'s own rules when the study loads
(`check_jobs`, late-bound stages at every configuration they could choose): a study that loads is
one whose every job can be built, and a refusal names the study key it came from.

Splits (SPEC §2): every stage says which systems its evaluations score. The stages that others
choose from score the validation systems; the stages compared in Table 3 score the test systems,
which no choice ever reads (`check_table` refuses a table where a choice could read them).

A study file may carry named `scales`: dotted overrides applied on request (`--scale demo`) so the
same file runs at a laptop's size without being edited. Overrides from the command line come last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import yaml

from lvjob.forecasting.baselines import BASELINES
from lvjob.core.config import ConfigError, apply_overrides, build, read_yaml, require
from lvjob.core.config import to_dict as to_plain
from lvjob.data.dataset import DataSpec
from lvjob.run.job import Job
from lvjob.data.llmtime import TextSpec
from lvjob.models.registry import DEFAULT_LORA_TARGETS, MODEL_NAMES

Prompt = Literal["plain", "instruct"]


@dataclass(frozen=True)
class TrainingSpec:
    batch_size: int = 4
    val_every: int = 250  # validation loss every this many steps (and at the last step)
    val_chunks: int = 32  # size of the fixed validation subset, in chunks
    checkpoint_every: int = 250

    # Ranges are Job's rules (checked on every job when the study loads), as for EvalSpec and LoraRun.


@dataclass(frozen=True)
class EvalSpec:
    series: int = 100  # systems forecast per evaluation, from the split its stage scores
    samples: int = 1  # forecasts per series: the point forecast is their element-wise median (SPEC §4)
    temperature: float = 0.2  # 0 = greedy
    trained_prompt: Prompt = "plain"  # the prompt trained models are evaluated with


@dataclass(frozen=True)
class LoraRun:
    rank: int = 4
    lr: float = 1e-5
    context: int = 512
    steps: int = 5000

    # Ranges are Job's rules, checked on the jobs this run becomes when the study loads.


@dataclass(frozen=True)
class LoraSpec:
    """What every fine-tune of the study adapts (rank and lr vary by run; alpha equals the rank)."""

    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # linear layers of each block; Job checks the names


@dataclass(frozen=True)
class Stage1:
    ranks: tuple[int, ...] = (2, 4, 8)
    lrs: tuple[float, ...] = (1e-4, 5e-5, 1e-5)
    context: int = 512
    steps: int = 500

    def __post_init__(self) -> None:
        require(len(self.ranks) > 0 and min(self.ranks) >= 1, "stage1.ranks", self.ranks, "a non-empty list of integers >= 1")
        require(len(self.lrs) > 0 and min(self.lrs) > 0, "stage1.lrs", self.lrs, "a non-empty list of numbers > 0")


@dataclass(frozen=True)
class Stage2:
    contexts: tuple[int, ...] = (128, 512, 768)
    steps: int = 500

    def __post_init__(self) -> None:
        require(len(self.contexts) > 0, "stage2.contexts", self.contexts, "a non-empty list of integers")


@dataclass(frozen=True)
class FinalRun:
    steps: int = 10000  # the rank, lr and context come from stage 2 when the run starts


@dataclass(frozen=True)
class Study:
    name: str = "lv-study"
    budget_flops: float = 1e17
    model: str = "qwen2.5-0.5b"
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    text: TextSpec = field(default_factory=TextSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    zero_shot_prompts: tuple[Prompt, ...] = ("plain", "instruct")
    lora: LoraSpec = field(default_factory=LoraSpec)
    default: LoraRun = field(default_factory=LoraRun)
    stage1: Stage1 = field(default_factory=Stage1)
    stage2: Stage2 = field(default_factory=Stage2)
    final: FinalRun = field(default_factory=FinalRun)
    scale: str = "full"  # which named scale was applied (set by load_study)

    def __post_init__(self) -> None:
        require(self.budget_flops > 0, "budget_flops", self.budget_flops, "a number > 0")
        require(self.model in MODEL_NAMES, "model", self.model, ", ".join(MODEL_NAMES))


# --- the stage table: the one description of the study's jobs -------------------------------------


@dataclass(frozen=True)
class Node:
    """One job of the study (or the aggregation). `origin` names the study key of each setting."""

    stage: str
    key: str  # unique in the study; also the run's name
    settings: tuple[tuple[str, Any], ...] = ()  # Job fields fixed by the study for this node
    origin: tuple[tuple[str, str], ...] = ()  # (Job field, the study key it comes from)
    label: str = ""  # how the comparison table names it ("" = not compared)


@dataclass(frozen=True)
class ChoiceRule:
    """How a late-bound stage chooses when it starts: the lowest `metric` among `source`'s runs."""

    source: str
    metric: str  # a RunSummary field
    copied: tuple[str, ...]  # the Job settings taken over from the winning run


@dataclass(frozen=True)
class Stage:
    name: str  # also its label in the FLOP tables
    nodes: Callable[[Study], list[Node]]
    after: tuple[str, ...] = ()  # stages it waits for (SLURM afterany); the aggregation waits for all
    choice: ChoiceRule | None = None  # late-bound: chooses from earlier results when it starts
    loss_plot: tuple[str, str] | None = None  # (figure, title) its training curves are drawn in
    runs_jobs: bool = True  # False for the aggregation, which gathers instead of running a job
    split: Literal["validation", "test"] = "validation"  # the systems its evaluations score
    gpu: bool = True  # False: its jobs need no accelerator (they ask for no GPU; the aggregation never does)


def _run_origin(section: str) -> tuple[tuple[str, str], ...]:
    return tuple((k, f"{section}.{k}") for k in ("rank", "lr", "context", "steps"))


def _zero_shot(study: Study) -> list[Node]:
    return [Node("zero-shot", f"zero-shot-{p}", (("kind", "evaluate"), ("prompt", p)), (("prompt", "zero_shot_prompts"),),
                 f"zero-shot, {p} prompt") for p in study.zero_shot_prompts]


def _default(study: Study) -> list[Node]:
    d = study.default
    settings = (("rank", d.rank), ("lr", d.lr), ("context", d.context), ("steps", d.steps))
    return [Node("default", "default", settings, _run_origin("default"), "default fine-tune")]


def _stage1(study: Study) -> list[Node]:
    s1 = study.stage1
    origin = (("rank", "stage1.ranks"), ("lr", "stage1.lrs"), ("context", "stage1.context"), ("steps", "stage1.steps"))
    return [Node("stage1", f"stage1-r{r}-lr{lr:g}", (("rank", r), ("lr", lr), ("context", s1.context), ("steps", s1.steps)), origin)
            for r in s1.ranks for lr in s1.lrs]


def _stage2(study: Study) -> list[Node]:
    origin = (("context", "stage2.contexts"), ("steps", "stage2.steps"))
    return [Node("stage2", f"stage2-ctx{c}", (("context", c), ("steps", study.stage2.steps)), origin)
            for c in study.stage2.contexts]


def _final(study: Study) -> list[Node]:
    return [Node("final", "final", (("steps", study.final.steps),), (("steps", "final.steps"),), "best fine-tune (final run)")]


def _baselines(study: Study) -> list[Node]:
    return [Node("baselines", f"baseline-{name}", (("kind", "baseline"), ("forecaster", name)), (), b.label)
            for name, b in BASELINES.items()]


def _aggregate(study: Study) -> list[Node]:
    return [Node("aggregate", "aggregate")]


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


def check_table(stages: Sequence[Stage]) -> None:
    """Refuse a stage table in which a choice could read the test systems, or a report could show
    systems a choice was made on (SPEC §2)."""
    by_name = {s.name: s for s in stages}
    for s in stages:
        if s.choice and by_name[s.choice.source].split != "validation":
            raise ValueError(f"stage {s.name} chooses from {s.choice.source}, which scores the {by_name[s.choice.source].split} "
                             "systems; valid: choices read validation systems only")
        labelled = s.runs_jobs and any(n.label for n in s.nodes(Study()))
        if labelled and s.split != "test":
            raise ValueError(f"stage {s.name} is compared in Table 3 but scores the {s.split} systems; valid: test")


def stage(name: str) -> Stage:
    return next(s for s in stage_table() if s.name == name)


def waits_for(s: Stage) -> tuple[str, ...]:
    """The stages `s` waits for; the aggregation waits for every stage that runs jobs."""
    return s.after if s.runs_jobs else tuple(t.name for t in stage_table() if t.runs_jobs)


def study_nodes(study: Study) -> list[Node]:
    return [n for s in stage_table() for n in s.nodes(study)]


# Job settings every node shares, and the study key each comes from.
COMMON_ORIGIN = (("model", "model"), ("seed", "seed"), ("data", "data"), ("text", "text"),
                 ("batch_size", "training.batch_size"), ("val_every", "training.val_every"),
                 ("val_chunks", "training.val_chunks"), ("checkpoint_every", "training.checkpoint_every"),
                 ("prompt", "evaluation.trained_prompt"), ("series", "evaluation.series"),
                 ("samples", "evaluation.samples"), ("temperature", "evaluation.temperature"),
                 ("lora_targets", "lora.targets"))


def job_fields(study: Study, node: Node, chosen: dict | None = None) -> dict:
    """The raw Job settings of `node` (profile settings aside), with what a late-bound stage chose."""
    t, e = study.training, study.evaluation
    common = dict(kind="train", model=study.model, seed=study.seed, data=to_plain(study.data), text=to_plain(study.text),
                  batch_size=t.batch_size, val_every=t.val_every, val_chunks=t.val_chunks,
                  checkpoint_every=t.checkpoint_every, prompt=e.trained_prompt, series=e.series, samples=e.samples,
                  temperature=e.temperature, lora_targets=study.lora.targets)
    return common | {"name": node.key, "eval_split": stage(node.stage).split} | dict(node.settings) | (chosen or {})


def possible_choices(study: Study, stage_name: str) -> list[dict]:
    """Every configuration a late-bound stage could choose, in study order (without duplicates)."""
    rule = stage(stage_name).choice
    source = stage(rule.source)
    upstream = possible_choices(study, source.name) if source.choice else [{}]
    out: list[dict] = []
    for node in source.nodes(study):
        for chosen in upstream:
            fields = job_fields(study, node, chosen)
            pick = {k: fields[k] for k in rule.copied}
            if pick not in out:
                out.append(pick)
    return out


def node_choices(study: Study, node: Node) -> list[dict | None]:
    """The choices `node` can run with: [None] for a node fixed by the study."""
    s = stage(node.stage)
    return possible_choices(study, s.name) if s.choice else [None]


def check_jobs(study: Study, where: str) -> None:
    """Build every job the study can run through Job's own rules; a refusal names the study key."""
    for node in (n for n in study_nodes(study) if stage(n.stage).runs_jobs):
        for chosen in node_choices(study, node):
            try:
                build(Job, job_fields(study, node, chosen), where=where)
            except ConfigError as e:
                raise _in_study_terms(e, node, chosen, where) from None


def _in_study_terms(e: ConfigError, node: Node, chosen: dict | None, where: str) -> ConfigError:
    if e.rule is None:
        return e
    key, value, valid = e.rule
    field_name = key.split(".")[0]
    origin = dict(COMMON_ORIGIN) | dict(node.origin)
    study_key = origin.get(field_name) or f"{stage(node.stage).choice.source}'s choice of {field_name}"
    subkey = key[len(field_name):]  # e.g. ".systems" of data
    how = f" (with {chosen})" if chosen else ""
    return ConfigError(f"{where}: {study_key}{subkey}: {value!r} is out of range for job {node.key}{how}; valid: {valid}",
                       rule=(study_key + subkey, value, valid))


def load_study(path: str | Path, scale: str | None = None, overrides: Sequence[str] = ()) -> Study:
    """Read a study file, apply the named scale (if any), then command-line overrides."""
    path = Path(path)
    raw = read_yaml(path)
    scales = raw.pop("scales", {}) or {}
    if not isinstance(scales, dict):
        raise ConfigError(f"{path}: scales must map a scale name to its overrides")
    if scale and scale != "full":
        if scale not in scales:
            raise ConfigError(f"{path}: no scale {scale!r}; this file defines: {', '.join(['full', *scales]) }")
        pairs = scales[scale]
        if not isinstance(pairs, dict):
            raise ConfigError(f"{path}: scales.{scale} must map dotted keys to values")
        raw = apply_overrides(raw, [f"{k}={_yaml_value(v)}" for k, v in pairs.items()], source=f"{path}: scales.{scale}")
        raw["scale"] = scale
    raw = apply_overrides(raw, overrides)
    study = build(Study, raw, where=str(path))
    check_table(stage_table())
    check_jobs(study, where=str(path))
    return study


def _yaml_value(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
