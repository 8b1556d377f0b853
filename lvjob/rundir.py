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
    eval_mae: float | None = None  # overall MAE of the forecasts (eval.json)
    parse_rate: float | None = None

    @property
    def requeues(self) -> int:
        return max(self.attempts - 1, 0)

    def to_dict(self) -> dict:
        return asdict(self)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def summarize(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    status = _read_json(run_dir / "run.json")
    if not status:
        return RunSummary(run_dir=str(run_dir), status="missing")
    job = {}
    try:
        job = yaml.safe_load((run_dir / "job.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        pass
    rows = read_jsonl(run_dir / "metrics.jsonl")
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    ledger_path = run_dir / "ledger.json"
    flops = Ledger.read(ledger_path).total if ledger_path.exists() else (rows[-1].get("flops") if rows else None)
    evaluation = _read_json(run_dir / "eval.json")
    kind = status.get("kind") or job.get("kind")
    return RunSummary(
        run_dir=str(run_dir),
        status=status.get("status", "missing"),
        kind=kind,
        step=rows[-1]["step"] if rows else None,
        steps=job.get("steps") if kind == "train" else None,
        loss=rows[-1]["loss"] if rows else None,
        val_loss=vals[-1] if vals else None,
        attempts=int(status.get("attempts", 0)),
        flops=flops,
        error=status.get("error"),
        slurm_job_id=status.get("slurm_job_id"),
        eval_mae=evaluation.get("model", {}).get("mae"),
        parse_rate=evaluation.get("parse_rate"),
    )
