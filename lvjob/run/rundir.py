"""Read a run directory back (see lvjob.run.runner for its layout) into one summary.

Tolerant by design: a run that has not started, is still running, failed or was cut off mid-write
still gives a summary; what is missing is None. The stages' choices, `lvjob status` and the run
index all read runs through here.

Every complete run has evaluated (eval.json). On a shared filesystem another node's run.json can be
seen before the eval.json renamed into place just before it (NFS caches a folder's entries for up to
a minute), so a complete run without eval.json is read again for up to `EVAL_SETTLE_S`, and then
reads as failed, saying so: never as a complete run without scores.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import yaml

from lvjob.core import atomic
from lvjob.core.paths import RunDir
from lvjob.core.timestamps import utc_now
from lvjob.core.atomic import read_jsonl
from lvjob.forecasting.scores import SCORES
from lvjob.run.ledger import Ledger


EVAL_METRICS = (*(f"eval_{k}" for k in SCORES), "eval_mae_se", "parse_rate", "series", "samples", "eval_seconds",
                *(f"persistence_{k}" for k in SCORES))


class RunStatus(StrEnum):
    """A run's status in run.json; MISSING: no run.json yet (never started)."""

    MISSING = "missing"
    RUNNING = "running"
    PREEMPTED = "preempted"  # stopped on request after a checkpoint: the next attempt resumes
    FAILED = "failed"
    COMPLETE = "complete"


def read_status(run_dir: Path) -> dict:
    """run.json as written (empty before the first attempt)."""
    path = RunDir(run_dir).status
    return json.loads(path.read_text()) if path.exists() else {}




def write_status(run_dir: Path, **fields) -> dict:
    """Merge `fields` into run.json (atomically), stamped with the time; the status as written."""
    status = read_status(run_dir) | fields | {"updated": utc_now()}
    atomic.write_text(RunDir(run_dir).status, json.dumps(status, indent=1, sort_keys=True))
    return status




@dataclass(frozen=True)
class RunSummary:
    run_dir: str | None  # None: the run has no directory yet (a late-bound stage that has not chosen)
    status: RunStatus
    kind: str | None = None
    step: int | None = None  # last training step in the metrics
    steps: int | None = None  # planned training steps
    loss: float | None = None  # last training loss
    val_loss: float | None = None  # last validation loss
    val_loss_se: float | None = None  # its standard error over the validation chunks
    attempts: int = 0
    flops: int | None = None  # FLOPs spent so far (ledger, or the last metrics row while training)
    error: str | None = None
    slurm_job_id: str | None = None
    last_start: str | None = None  # UTC start of its newest attempt
    lost_flops: int | None = None  # of which lost to preemption (re-done steps)
    rank: int | None = None  # training settings from job.yaml
    lr: float | None = None
    context: int | None = None
    prompt: str | None = None
    split: str | None = None  # the systems its evaluation scored: validation or test
    lead_time_mae: list | None = None  # overall MAE at forecast step 1 ... horizon
    series_mae: list | None = None  # each evaluated series' MAE, in series order (None: not scored)
    persistence_series_mae: list | None = None  # the same, of persistence on the same series
    fell_back: int | None = None  # a baseline's series that fell back to persistence (its fit failed)
    fit_residual: float | None = None  # the physics fit's median RMS residual on the contexts / their mean
    # From eval.json (EVAL_METRICS): the forecasts' overall scores on the horizon, the parse rate,
    # series and samples, the evaluation's wall time, and the persistence forecast's scores on the
    # same series; None until evaluated.
    metrics: dict = field(default_factory=lambda: dict.fromkeys(EVAL_METRICS))

    def to_dict(self) -> dict:
        """Flat, as the run index has it: the metrics beside the other fields."""
        flat = asdict(self)
        return flat | flat.pop("metrics")

    @classmethod
    def from_dict(cls, flat: dict) -> RunSummary:
        """Back from `to_dict` (the run index as read from runs.json)."""
        fields = {k: v for k, v in flat.items() if k in cls.__dataclass_fields__ and k != "metrics"}
        return cls(**fields | {"status": RunStatus(flat["status"]), "metrics": {k: flat.get(k) for k in EVAL_METRICS}})

    @property
    def complete(self) -> bool:
        return self.status == RunStatus.COMPLETE

    def value(self, name: str) -> float | None:
        """A metric or field by name (e.g. val_loss, eval_mae); None if it is missing or not finite."""
        value = self.metrics[name] if name in self.metrics else getattr(self, name)
        return value if value is not None and math.isfinite(value) else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


EVAL_SETTLE_S = 60.0  # NFS's longest default wait before it looks at a folder's entries again (acdirmax)


def _evaluation(files: RunDir, complete: bool) -> dict:
    """eval.json; for a complete run, waited for up to EVAL_SETTLE_S (see the module's docstring)."""
    deadline = time.monotonic() + (EVAL_SETTLE_S if complete else 0.0)
    while not (found := _read_json(files.evaluation)) and time.monotonic() < deadline:
        time.sleep(1.0)
        with contextlib.suppress(OSError):
            os.listdir(files.root)  # a fresh look at the folder's entries
    return found


def summarize(run_dir: str | Path) -> RunSummary:
    files = RunDir(run_dir)
    status = _read_json(files.status)
    if not status:
        return RunSummary(run_dir=str(run_dir), status=RunStatus.MISSING)
    evaluation = _evaluation(files, status.get("status") == RunStatus.COMPLETE)
    if status.get("status") == RunStatus.COMPLETE and not evaluation:
        status |= {"status": RunStatus.FAILED, "error": f"run.json says complete but {files.evaluation} was not there "
                   f"after {EVAL_SETTLE_S:.0f} s (removed, or a filesystem that does not show it); submitting it again "
                   "evaluates it again"}
    job = {}
    try:
        job = yaml.safe_load(files.job.read_text()) or {}
    except (OSError, yaml.YAMLError):
        pass
    rows = read_jsonl(files.metrics)
    vals = [r for r in rows if "val_loss" in r]
    if files.ledger.exists():
        ledger = Ledger.read(files.ledger)
        flops, lost = ledger.total, ledger.lost_to_preemption
    else:  # still training: the live metrics carry the ledger so far
        flops, lost = (rows[-1].get("flops"), rows[-1].get("lost_flops")) if rows else (None, None)
    model, persistence = evaluation.get("model", {}), evaluation.get("persistence", {})
    kind = status.get("kind") or job.get("kind")
    train = kind == "train"
    return RunSummary(
        run_dir=str(run_dir),
        status=RunStatus(status.get("status", RunStatus.MISSING)),
        kind=kind,
        step=rows[-1]["step"] if rows else None,
        steps=job.get("steps") if train else None,
        loss=rows[-1]["loss"] if rows else None,
        val_loss=vals[-1]["val_loss"] if vals else None,
        val_loss_se=vals[-1].get("val_loss_se") if vals else None,
        attempts=int(status.get("attempts", 0)),
        flops=flops,
        lost_flops=lost,
        error=status.get("error"),
        slurm_job_id=status.get("slurm_job_id"),
        last_start=(status.get("attempt_records") or [{}])[-1].get("started"),
        rank=job.get("rank") if train else None,
        lr=job.get("lr") if train else None,
        context=job.get("context") if train else None,
        prompt=job.get("prompt"),
        split=evaluation.get("split"),
        lead_time_mae=(model.get("lead_time_mae") or {}).get("overall"),
        series_mae=model.get("series_mae"),
        persistence_series_mae=persistence.get("series_mae"),
        fell_back=evaluation.get("fell_back"),
        fit_residual=evaluation.get("median_fit_residual"),
        metrics={f"eval_{k}": model.get(k) for k in (*SCORES, "mae_se")}
        | {k: evaluation.get(k) for k in ("parse_rate", "series")}
        | {"samples": model.get("samples"), "eval_seconds": evaluation.get("seconds")}
        | {f"persistence_{k}": persistence.get(k) for k in SCORES},
    )
