"""Read a run directory back (see lvjob.runner for its layout) into one summary.

Tolerant by design: a run that has not started, is still running, failed or was cut off mid-write
still gives a summary; what is missing is None. The stages' choices, `lvjob status` and the run
index all read runs through here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lvjob.ledger import Ledger, read_jsonl
from lvjob.paths import RunDir


@dataclass(frozen=True)
class RunSummary:
    run_dir: str
    status: str  # missing | running | preempted | failed | complete
    kind: str | None = None
    step: int | None = None  # last training step in the metrics
    steps: int | None = None  # planned training steps
    loss: float | None = None  # last training loss
    val_loss: float | None = None  # last validation loss
    attempts: int = 0
    flops: int | None = None  # FLOPs spent so far (ledger, or the last metrics row while training)
    error: str | None = None
    slurm_job_id: str | None = None
    lost_flops: int | None = None  # of which lost to preemption (re-done steps)
    rank: int | None = None  # training settings from job.yaml
    lr: float | None = None
    context: int | None = None
    prompt: str | None = None
    eval_mae: float | None = None  # overall errors of the forecasts on the horizon (eval.json)
    eval_mse: float | None = None
    eval_rmse: float | None = None
    parse_rate: float | None = None
    series: int | None = None
    persistence_mae: float | None = None  # the persistence forecast on the same series
    persistence_mse: float | None = None
    persistence_rmse: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def summarize(run_dir: str | Path) -> RunSummary:
    files = RunDir(run_dir)
    status = _read_json(files.status)
    if not status:
        return RunSummary(run_dir=str(run_dir), status="missing")
    job = {}
    try:
        job = yaml.safe_load(files.job.read_text()) or {}
    except (OSError, yaml.YAMLError):
        pass
    rows = read_jsonl(files.metrics)
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    if files.ledger.exists():
        ledger = Ledger.read(files.ledger)
        flops, lost = ledger.total, ledger.lost_to_preemption
    else:  # still training: the live metrics carry the ledger so far
        flops, lost = (rows[-1].get("flops"), rows[-1].get("lost_flops")) if rows else (None, None)
    evaluation = _read_json(files.evaluation)
    model, persistence = evaluation.get("model", {}), evaluation.get("persistence", {})
    kind = status.get("kind") or job.get("kind")
    train = kind == "train"
    return RunSummary(
        run_dir=str(run_dir),
        status=status.get("status", "missing"),
        kind=kind,
        step=rows[-1]["step"] if rows else None,
        steps=job.get("steps") if train else None,
        loss=rows[-1]["loss"] if rows else None,
        val_loss=vals[-1] if vals else None,
        attempts=int(status.get("attempts", 0)),
        flops=flops,
        lost_flops=lost,
        error=status.get("error"),
        slurm_job_id=status.get("slurm_job_id"),
        rank=job.get("rank") if train else None,
        lr=job.get("lr") if train else None,
        context=job.get("context") if train else None,
        prompt=job.get("prompt"),
        eval_mae=model.get("mae"),
        eval_mse=model.get("mse"),
        eval_rmse=model.get("rmse"),
        parse_rate=evaluation.get("parse_rate"),
        series=evaluation.get("series"),
        persistence_mae=persistence.get("mae"),
        persistence_mse=persistence.get("mse"),
        persistence_rmse=persistence.get("rmse"),
    )
