"""The study of SPEC §1 as a typed config: data, text, the stages, evaluation and the budget.

A study file may carry named `scales`: dotted overrides applied on request (`--scale demo`) so the
same file runs at a laptop's size without being edited. Overrides from the command line come last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from lvjob.config import ConfigError, apply_overrides, build, read_yaml, require
from lvjob.models import MODEL_NAMES

Prompt = Literal["plain", "instruct"]


@dataclass(frozen=True)
class DataSpec:
    path: str = "data/lv.h5"  # generated with the settings below if missing
    systems: int = 1000
    points: int = 100
    seed: int = 0
    val_fraction: float = 0.2
    horizon_fraction: float = 0.2

    def __post_init__(self) -> None:
        require(self.systems >= 2, "data.systems", self.systems, "integers >= 2")
        require(self.points >= 5, "data.points", self.points, "integers >= 5")
        require(0 < self.val_fraction < 1, "data.val_fraction", self.val_fraction, "0 < value < 1")
        require(0 < self.horizon_fraction < 1, "data.horizon_fraction", self.horizon_fraction, "0 < value < 1")

    @property
    def val_systems(self) -> int:
        return max(1, round(self.systems * self.val_fraction))

    @property
    def horizon_points(self) -> int:
        return max(1, round(self.points * self.horizon_fraction))

    @property
    def context_points(self) -> int:
        return self.points - self.horizon_points


@dataclass(frozen=True)
class TextSpec:
    decimals: int = 3
    alpha: float = 0.99
    beta: float = 0.3

    def __post_init__(self) -> None:
        require(1 <= self.decimals <= 8, "text.decimals", self.decimals, "integers 1..8")
        require(0 < self.alpha <= 1, "text.alpha", self.alpha, "0 < alpha <= 1")
        require(self.beta >= 0, "text.beta", self.beta, "beta >= 0")


@dataclass(frozen=True)
class TrainingSpec:
    batch_size: int = 4
    val_every: int = 250  # validation loss every this many steps (and at the last step)
    val_chunks: int = 32  # size of the fixed validation subset, in chunks
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for key in ("batch_size", "val_every", "val_chunks", "checkpoint_every"):
            v = getattr(self, key)
            require(v >= 1, f"training.{key}", v, "integers >= 1")


@dataclass(frozen=True)
class EvalSpec:
    series: int = 200  # validation systems forecast per evaluation
    samples: int = 1  # forecasts per series; > 1 takes the element-wise median
    temperature: float = 0.2  # 0 = greedy
    trained_prompt: Prompt = "plain"  # the prompt trained models are evaluated with

    def __post_init__(self) -> None:
        require(self.series >= 1, "evaluation.series", self.series, "integers >= 1")
        require(self.samples >= 1, "evaluation.samples", self.samples, "integers >= 1")
        require(self.temperature >= 0, "evaluation.temperature", self.temperature, "temperature >= 0 (0 = greedy)")


@dataclass(frozen=True)
class LoraRun:
    rank: int = 4
    lr: float = 1e-5
    context: int = 512
    steps: int = 5000

    def __post_init__(self) -> None:
        require(self.rank >= 1, "rank", self.rank, "integers >= 1")
        require(self.lr > 0, "lr", self.lr, "lr > 0")
        require(self.context >= 16, "context", self.context, "integers >= 16 (tokens)")
        require(self.steps >= 0, "steps", self.steps, "integers >= 0")


@dataclass(frozen=True)
class Stage1:
    ranks: tuple[int, ...] = (2, 4, 8)
    lrs: tuple[float, ...] = (1e-4, 5e-5, 1e-5)
    context: int = 512
    steps: int = 500

    def __post_init__(self) -> None:
        require(len(self.ranks) > 0 and min(self.ranks) >= 1, "stage1.ranks", self.ranks, "a non-empty list of integers >= 1")
        require(len(self.lrs) > 0 and min(self.lrs) > 0, "stage1.lrs", self.lrs, "a non-empty list of numbers > 0")
        require(self.context >= 16, "stage1.context", self.context, "integers >= 16")
        require(self.steps >= 0, "stage1.steps", self.steps, "integers >= 0")


@dataclass(frozen=True)
class Stage2:
    contexts: tuple[int, ...] = (128, 512, 768)
    steps: int = 500

    def __post_init__(self) -> None:
        require(len(self.contexts) > 0 and min(self.contexts) >= 16, "stage2.contexts", self.contexts, "a non-empty list of integers >= 16")
        require(self.steps >= 0, "stage2.steps", self.steps, "integers >= 0")


@dataclass(frozen=True)
class FinalRun:
    steps: int = 10000  # the rank, lr and context come from stage 2 when the run starts

    def __post_init__(self) -> None:
        require(self.steps >= 0, "final.steps", self.steps, "integers >= 0")


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
    default: LoraRun = field(default_factory=LoraRun)
    stage1: Stage1 = field(default_factory=Stage1)
    stage2: Stage2 = field(default_factory=Stage2)
    final: FinalRun = field(default_factory=FinalRun)
    scale: str = "full"  # which named scale was applied (set by load_study)

    def __post_init__(self) -> None:
        require(self.budget_flops > 0, "budget_flops", self.budget_flops, "a number > 0")
        require(self.model in MODEL_NAMES, "model", self.model, ", ".join(MODEL_NAMES))
        require(self.evaluation.series <= self.data.val_systems, "evaluation.series", self.evaluation.series,
                f"at most the {self.data.val_systems} validation systems of data")


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
    return build(Study, raw, where=str(path))


def _yaml_value(v) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
