"""A job spec: one run of the study (a zero-shot evaluation, a LoRA training run then its evaluation, or
a baseline forecaster scored the same way).

`lvjob run JOB.yaml key=value ...` loads it here. The same spec and overrides always give the same
run id, so a restarted job finds its own run directory and resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

from lvjob.forecasting.baselines import BASELINES
from lvjob.core.config import apply_overrides, build, read_yaml, require, to_dict
from lvjob.data.dataset import DataSpec
from lvjob.models.flops import LINEARS
from lvjob.data.llmtime import TextSpec
from lvjob.models.registry import DEFAULT_LORA_TARGETS, MODEL_NAMES, ModelChoice
from lvjob.data.prompts import tokens_per_point

RUNS_ROOT = Path("checkpoints")
# Settings added after run ids were first given out: they enter the id only when they differ from
# this default, so existing run directories are still found.
ADDED_LATER = {"lora_targets": list(DEFAULT_LORA_TARGETS)}


@dataclass(frozen=True)
class Job:
    kind: Literal["train", "evaluate", "baseline"] = "evaluate"
    name: str = "job"
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    run_dir: str | None = None  # default: checkpoints/<run id>

    # model
    model: str = "tiny"
    model_path: str | None = None  # folder or hub id; default per model (lvjob.models.loading)
    quantize_4bit: bool = False
    adapter: str | None = None  # evaluate: a trained run directory (or a PEFT adapter folder)

    data: DataSpec = field(default_factory=DataSpec)
    text: TextSpec = field(default_factory=TextSpec)

    # training (kind: train), SPEC §1 defaults
    rank: int = 4
    lora_alpha: float | None = None  # None: equal to rank
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # the linear layers of each block LoRA adapts
    lr: float = 1e-5
    weight_decay: float = 0.0
    context: int = 512
    steps: int = 5000
    batch_size: int = 4
    val_every: int = 250
    val_chunks: int = 32
    checkpoint_every: int = 250
    keep_checkpoints: int = 2

    # evaluation (every kind): which systems it forecasts and how
    eval_split: Literal["validation", "test"] = "validation"  # test: reported, never chosen from (SPEC §2)
    forecaster: str | None = None  # baseline: one of lvjob.forecasting.baselines.BASELINES
    prompt: Literal["plain", "instruct"] = "plain"
    series: int = 100  # systems forecast, the first of the eval_split
    samples: int = 1
    temperature: float = 0.2
    max_int_digits: int = 3
    eval_batch_size: int = 100  # series per generation batch (x samples rows); all 100 at once by default

    def __post_init__(self) -> None:
        require(self.model in MODEL_NAMES, "model", self.model, ", ".join(MODEL_NAMES))
        require(self.rank >= 1, "rank", self.rank, "integers >= 1")
        require(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "a number > 0, or null for alpha = rank")
        require(self.lr > 0, "lr", self.lr, "lr > 0")
        require(len(self.lora_targets) > 0 and set(self.lora_targets) <= set(LINEARS), "lora_targets", self.lora_targets,
                f"a non-empty list of {', '.join(LINEARS)}")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "weight_decay >= 0")
        two_points = 2 * tokens_per_point(2, self.text.decimals)
        require(self.context >= two_points, "context", self.context,
                f"at least {two_points} tokens: too short for one forecast, a window must hold two points")
        require(self.steps >= 1, "steps", self.steps, "integers >= 1")
        for key in ("batch_size", "val_every", "val_chunks", "checkpoint_every", "keep_checkpoints", "series", "samples", "eval_batch_size"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "integers >= 1")
        available = self.data.split_sizes()[self.eval_split]
        require(self.series <= available, "series", self.series, f"at most the {available} {self.eval_split} systems of the data")
        require((self.kind == "baseline") == (self.forecaster is not None), "forecaster", self.forecaster,
                f"one of {', '.join(BASELINES)} for a baseline job, null for the other kinds")
        require(self.forecaster is None or self.forecaster in BASELINES, "forecaster", self.forecaster, ", ".join(BASELINES))
        require(self.temperature >= 0, "temperature", self.temperature, "temperature >= 0 (0 = greedy)")
        require(1 <= self.max_int_digits <= 6, "max_int_digits", self.max_int_digits, "integers 1..6")
        require(self.kind == "evaluate" or self.adapter is None, "adapter", self.adapter, "null for a training job")

    @property
    def alpha(self) -> float:
        return float(self.rank if self.lora_alpha is None else self.lora_alpha)

    @property
    def model_choice(self) -> ModelChoice:
        return ModelChoice(name=self.model, path=self.model_path, quantize_4bit=self.quantize_4bit)

    def run_id(self) -> str:
        """`<name>-<hash>`: the hash covers every setting but `run_dir` and `device`, which do not change the result's meaning."""
        settings = to_dict(replace(self, run_dir=None, device="auto"))
        for key, default in ADDED_LATER.items():  # runs from before a setting existed keep their ids
            if settings[key] == default:
                del settings[key]
        if self.model_choice.recipe:  # a new demo recipe is a new model: new runs
            settings["model_recipe"] = self.model_choice.recipe
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else RUNS_ROOT / self.run_id()


def load_job(path: str | Path, overrides: Sequence[str] = ()) -> Job:
    raw = apply_overrides(read_yaml(path), overrides)
    return build(Job, raw, where=str(path))
