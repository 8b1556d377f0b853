"""Experiment tracking: what a run shows in the tools researchers watch it in (TensorBoard today).

The runner and the training loop talk to one `Tracker`, whatever the backends behind it:

    resume(rows)                  start of an attempt: the metrics rows the run keeps (a checkpoint's)
    row(row)                      one metrics row, as it is written to metrics.jsonl
    evaluation(report, hparams)   the end: eval.json's metrics and the run's hyper-parameters
    close()

TensorBoard writes event files into `run_dir/tensorboard/` (`tensorboard --logdir checkpoints` then
shows the whole study, one run per run directory). A run killed between checkpoints has logged steps
that its resumed attempt re-does. SummaryWriter's `purge_step` only marks those steps for the reader
to hide, and a raw reader of the files still sees them twice; so each attempt deletes the event files
of the attempts before and replays the rows the run keeps (with their own wall times) into a fresh
file. Every reader then sees exactly one value per step, and the log is a function of the records.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
FLUSH_SECS = 20  # how stale a live TensorBoard may be; a kill loses nothing, the rows are replayed

# metrics.jsonl key -> TensorBoard tag
ROW_TAGS = {
    "loss": "train/loss",
    "val_loss": "val/loss",
    "lr": "train/lr",
    "tokens_per_s": "train/tokens_per_s",
    "flops": "flops/spent",
    "lost_flops": "flops/lost_to_preemption",
}
EVAL_TAGS = {"mae": "eval/mae", "mse": "eval/mse", "rmse": "eval/rmse"}
HPARAM_METRICS = ("val/loss", "eval/mae")  # the HParams view's columns: last value of each tag


def row_scalars(row: dict) -> dict[str, float]:
    """The TensorBoard scalars of one metrics row (only the keys it has)."""
    return {tag: float(row[key]) for key, tag in ROW_TAGS.items() if row.get(key) is not None}


def evaluation_scalars(report: dict) -> dict[str, float]:
    """The TensorBoard scalars of an eval.json report: the forecasts' errors and the parse rate."""
    model = report.get("model", {})
    out = {tag: float(model[key]) for key, tag in EVAL_TAGS.items() if model.get(key) is not None}
    if report.get("parse_rate") is not None:
        out["eval/parse_rate"] = float(report["parse_rate"])
    return out


def _walltime(row: dict) -> float | None:
    """A row's own UTC time as seconds since the epoch (None: now), so replayed steps keep their time."""
    return datetime.fromisoformat(row["time"]).timestamp() if row.get("time") else None


class TensorBoard:
    """Event files in `folder`, rewritten from the kept rows at each attempt (see the module doc)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.writer = None
        self.last_step = 0

    def resume(self, rows: list[dict]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("events.out.tfevents.*"):
            old.unlink()  # the previous attempts' files: their steps are replayed below
        self.writer = SummaryWriter(str(self.folder), flush_secs=FLUSH_SECS)
        for row in rows:
            self.row(row)
        self.writer.flush()

    def row(self, row: dict) -> None:
        walltime = _walltime(row)
        for tag, value in row_scalars(row).items():
            self.writer.add_scalar(tag, value, row["step"], walltime=walltime)
        self.last_step = row["step"]

    def evaluation(self, report: dict, hparams: dict) -> None:
        """Evaluation scalars at the last step, and the hyper-parameters with their metrics for HParams."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        for tag, value in evaluation_scalars(report).items():
            self.writer.add_scalar(tag, value, self.last_step)
        values = {k: v for k, v in hparams.items() if v is not None}  # HParams takes numbers, strings, bools
        for summary in hparams_summary(values, dict.fromkeys(HPARAM_METRICS)):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Tracker:
    """Hands each record to every backend; the one object the runner and the training loop hold."""

    def __init__(self, backends: list):
        self.backends = backends

    def resume(self, rows: list[dict]) -> None:
        for b in self.backends:
            b.resume(rows)

    def row(self, row: dict) -> None:
        for b in self.backends:
            b.row(row)

    def evaluation(self, report: dict, hparams: dict) -> None:
        for b in self.backends:
            b.evaluation(report, hparams)

    def close(self) -> None:
        for b in self.backends:
            b.close()


def open_tracker(run_dir: Path) -> Tracker:
    """The run's tracker: TensorBoard into `run_dir/tensorboard/`."""
    return Tracker([TensorBoard(Path(run_dir) / TENSORBOARD_DIR)])


def hparams_of(job) -> dict:
    """The hyper-parameters the HParams view compares runs on."""
    train = job.kind == "train"
    return {"kind": job.kind, "model": job.model, "prompt": job.prompt, "rank": job.rank if train else 0,
            "lr": job.lr if train else 0.0, "context": job.context, "steps": job.steps if train else 0,
            "batch_size": job.batch_size}
