"""Where lvjob keeps things: built artefacts (tokenizer, tiny model) made once and reused, and the
layout of a run directory (`RunDir`: every file name of a run in one place)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: $LVJOB_CACHE, else ~/.cache/lvjob.

    On a cluster, point LVJOB_CACHE at a shared filesystem so compute nodes reuse what the
    login node built.
    """
    env = os.environ.get("LVJOB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lvjob"


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory (what each holds: lvjob.run.runner's docstring)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    job = property(lambda self: self.root / "job.yaml")  # the job as resolved
    status = property(lambda self: self.root / "run.json")
    lock = property(lambda self: self.root / ".lock")
    held_lock = property(lambda self: self.root / ".lock.held")  # the lock where the filesystem has no flock
    metrics = property(lambda self: self.root / "metrics.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    adapter = property(lambda self: self.root / "adapter")
    evaluation = property(lambda self: self.root / "eval.json")
    forecasts = property(lambda self: self.root / "forecasts.npz")
    ledger = property(lambda self: self.root / "ledger.json")
    preemptions = property(lambda self: self.root / "preemptions.jsonl")


ADAPTER_CONFIG = "adapter_config.json"  # in a PEFT adapter folder
