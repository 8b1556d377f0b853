"""The study of SPEC §1 as a typed config, and the Job settings of each node of its stage table
(lvjob.study.stages).

Every setting the stages give a job goes through `Job`'s own rules when the study loads
(`check_jobs`, late-bound stages at every configuration they could choose): a study that loads is
one whose every job can be built, and a refusal names the study key it came from.

A study file may carry named `scales`: dotted overrides applied on request (`--scale demo`) so the
same file runs at a laptop's size without being edited. Overrides from the command line come last.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from lvjob.core.config import ConfigError, apply_overrides, build, read_yaml, require
from lvjob.core.config import to_dict as to_plain
from lvjob.data.dataset import DataSpec
from lvjob.run.job import Job
from lvjob.data.llmtime import TextSpec
from lvjob.models.registry import MODEL_NAMES
from lvjob.study.stages import Node, check_table, stage_named, stage_table, study_nodes

Prompt = Literal["plain", "instruct"]


@dataclass(frozen=True)
class TrainingSpec:
    # Defaults and ranges are Job's (its rules run on every job when the study loads), as for every
    # sub-spec that sets a Job field: Job is their one owner.
    batch_size: int = Job.batch_size
    val_every: int = Job.val_every  # validation loss every this many steps (and at the last step)
    val_chunks: int = Job.val_chunks  # size of the fixed validation subset, in chunks
    checkpoint_every: int = Job.checkpoint_every


@dataclass(frozen=True)
class EvalSpec:
    series: int = Job.series  # systems forecast per evaluation, from the split its stage scores
    samples: int = Job.samples  # forecasts per series: the point forecast is their element-wise median (SPEC §4)
    temperature: float = Job.temperature  # 0 = greedy
    trained_prompt: Prompt = Job.prompt  # the prompt trained models are evaluated with


@dataclass(frozen=True)
class LoraRun:
    rank: int = Job.rank
    lr: float = Job.lr
    context: int = Job.context
    steps: int = Job.steps


@dataclass(frozen=True)
class LoraSpec:
    """What every fine-tune of the study adapts (rank and lr vary by run; alpha equals the rank)."""

    targets: tuple[str, ...] = Job.lora_targets  # linear layers of each block; Job checks the names


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


# Job settings every node shares, and the study key each comes from: the one list of them, read
# both to build a node's job and to name the study key behind a refused setting.
COMMON_ORIGIN = (("model", "model"), ("seed", "seed"), ("data", "data"), ("text", "text"),
                 ("batch_size", "training.batch_size"), ("val_every", "training.val_every"),
                 ("val_chunks", "training.val_chunks"), ("checkpoint_every", "training.checkpoint_every"),
                 ("prompt", "evaluation.trained_prompt"), ("series", "evaluation.series"),
                 ("samples", "evaluation.samples"), ("temperature", "evaluation.temperature"),
                 ("lora_targets", "lora.targets"))


def _study_value(study: Study, key: str) -> Any:
    value = study
    for part in key.split("."):
        value = getattr(value, part)
    return to_plain(value) if dataclasses.is_dataclass(value) else value


def job_fields(study: Study, node: Node, chosen: dict | None = None) -> dict:
    """The raw Job settings of `node` (profile settings aside), with what a late-bound stage chose."""
    common = {"kind": "train"} | {f: _study_value(study, key) for f, key in COMMON_ORIGIN}
    return common | {"name": node.key, "eval_split": node.stage.split} | dict(node.settings) | (chosen or {})


def possible_choices(study: Study, stage_name: str) -> list[dict]:
    """Every configuration a late-bound stage could choose, in study order (without duplicates)."""
    rule = stage_named(stage_name).choice
    source = stage_named(rule.source)
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
    return possible_choices(study, node.stage.name) if node.stage.choice else [None]


def check_jobs(study: Study, where: str) -> None:
    """Build every job the study can run through Job's own rules; a refusal names the study key."""
    for node in (n for n in study_nodes(study) if n.stage.runs_jobs):
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
    study_key = origin.get(field_name) or f"{node.stage.choice.source}'s choice of {field_name}"
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
    return study_from_settings(apply_overrides(raw, overrides), where=str(path))


def study_from_settings(raw: dict, where: str) -> Study:
    """A Study from its settings (a study file's, or those a job was pickled with), checked as a study file is."""
    study = build(Study, raw, where=where)
    check_table(stage_table(), study)
    check_jobs(study, where=where)
    return study


def _yaml_value(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
