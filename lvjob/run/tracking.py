"""Experiment tracking: what a run shows in the tools researchers watch it in (TensorBoard, and W&B).

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

W&B (optional: the `wandb` extra, `tracking: [tensorboard, wandb]` in the profile) keeps one W&B run
per lvjob run: the run id is W&B's id, every attempt opens it with resume="allow", and files go to
`run_dir/wandb/`. Mode: $WANDB_MODE when set, else offline (compute nodes have no internet); offline,
each attempt writes its own `offline-run-*-<run id>` folder, and `wandb sync` uploads them into the
one run. W&B cannot delete a logged step, and its steps must only go up; so an attempt first reads
the highest step W&B holds on disk for the run (the earlier attempts' transaction logs,
`run-<id>.wandb`), then logs only the rows after it: the kept rows it replays, then its new ones.
Each step is thus in W&B once, with no gap: what a kill cut off before W&B wrote it (W&B flushes
every 15 s) is logged again by the next attempt, and a step W&B holds from a killed attempt keeps
that attempt's value (the same on CPU, where a resume is bit-identical). Online, a resumed run also
continues from the server's last step, and W&B itself ignores rows below it. The evaluation goes to
the run's summary and the hyper-parameters to its config (W&B's runs table is its HParams view), so
nothing is logged at a step already passed.

The profile's list reaches the runner as $LVJOB_TRACKING (lvjob.cluster.profile.runner_env, through
`--env` into an image), with the user's WANDB_MODE, WANDB_PROJECT and WANDB_ENTITY; credentials are
never put on a command line (online inside an image, `wandb login` writes ~/.netrc, which
Apptainer's home binding shows the job).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Mapping

from lvjob.cluster.profile import DEFAULT_BACKENDS, TRACKING_BACKENDS, TRACKING_ENV, unknown_backends
from lvjob.core.config import ConfigError
from lvjob.forecasting.scores import SCORES

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"  # wandb.init(dir=run_dir) writes run_dir/wandb/
LOG_BLOCK, LOG_HEADER = 32768, 7  # W&B's transaction log: block size, and the size of its file and record headers
WANDB_PROJECT = "lvjob"  # unless $WANDB_PROJECT says otherwise
INSTALL_WANDB = ("install the optional extra into the Python that runs the jobs: `make wandb` (or "
                 "`pip install -e '.[wandb]'`; into the image too when the profile names one)")
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
EVAL_TAGS = {k: f"eval/{k}" for k in SCORES}
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


def transaction_log(path: Path):
    """The records of a W&B transaction log (`run-<id>.wandb`, the file `wandb sync` uploads), in order.

    The file is `:W&B` and 3 more header bytes, then LevelDB-style log blocks of 32 KiB: each
    record is checksum (4 bytes), length (2), type (1: whole, 2-3-4: first, middle, last part) and
    its bytes, a protobuf `Record` of wandb.proto. A file cut short by a kill ends the reading there.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        return
    pos, parts = LOG_HEADER, b""
    while pos + LOG_HEADER <= len(data):
        left = LOG_BLOCK - pos % LOG_BLOCK
        if left < LOG_HEADER:  # a block's tail too short for a record header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if (length, kind) == (0, 0) or pos + LOG_HEADER + length > len(data):
            return  # zeros a writer had not filled yet, or a record cut short
        parts += data[pos + LOG_HEADER:pos + LOG_HEADER + length]
        pos += LOG_HEADER + length
        if kind in (1, 4):
            try:
                yield wandb_internal_pb2.Record.FromString(parts)
            except DecodeError:
                return
            parts = b""


def wandb_last_step(folder: Path, run_id: str) -> int:
    """The highest step W&B holds on disk for `run_id` under `folder` (its attempts' runs), 0 for none."""
    return max((record.history.step.num for path in folder.glob(f"*run-*-{run_id}/run-{run_id}.wandb")
                for record in transaction_log(path) if record.WhichOneof("record_type") == "history"), default=0)


def import_wandb():
    """The wandb module, or a refusal saying how to install it (W&B is an optional extra)."""
    try:
        import wandb
    except ImportError as e:
        raise ConfigError(f"tracking: wandb is asked for but cannot be imported here ({e}); {INSTALL_WANDB}") from None
    return wandb


class WandB:
    """One W&B run per lvjob run, continued by every attempt; each step in it once (see the module doc)."""

    def __init__(self, run_dir: Path, run_id: str, config: dict):
        self.wandb = import_wandb()  # first: refused before any work when it is missing
        self.run_dir, self.run_id, self.config = Path(run_dir), run_id, config
        self.run = None
        self.logged = 0

    def resume(self, rows: list[dict]) -> None:
        self.logged = wandb_last_step(self.run_dir / WANDB_DIR, self.run_id)  # before init adds this attempt's run
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT, id=self.run_id, name=self.run_id, resume="allow",
            dir=str(self.run_dir), mode=os.environ.get("WANDB_MODE") or "offline", config=self.config,
            settings=self.wandb.Settings(console="off", silent=True))  # the job's own log already has the console
        for row in rows:
            self.row(row)

    def row(self, row: dict) -> None:
        if row["step"] <= self.logged:
            return  # W&B holds this step from an earlier attempt, and its steps only go up
        self.run.log(row_scalars(row), step=row["step"])
        self.logged = row["step"]

    def evaluation(self, report: dict, hparams: dict) -> None:
        self.run.config.update({k: v for k, v in hparams.items() if v is not None}, allow_val_change=True)
        self.run.summary.update(evaluation_scalars(report))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


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


def open_tracker(run_dir: Path, backends: tuple[str, ...] = DEFAULT_BACKENDS, job=None) -> Tracker:
    """The run's tracker: TensorBoard into `run_dir/tensorboard/`, W&B (which needs the `job`) into `run_dir/wandb/`."""
    out = []
    if "wandb" in backends:  # first: a missing wandb is refused before any event file is touched
        out.append(WandB(Path(run_dir), job.run_id(), hparams_of(job)))
    if "tensorboard" in backends:
        out.append(TensorBoard(Path(run_dir) / TENSORBOARD_DIR))
    return Tracker(out)


def backends_from_env(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The runner's side of `tracking_env`: the backends in $LVJOB_TRACKING (unset: TensorBoard alone)."""
    if TRACKING_ENV not in environ:
        return DEFAULT_BACKENDS
    names = tuple(n.strip() for n in environ[TRACKING_ENV].split(",") if n.strip())
    if unknown_backends(names):
        raise ConfigError(f"{TRACKING_ENV}: {environ[TRACKING_ENV]!r} names {', '.join(unknown_backends(names))}; "
                          f"valid: a comma-separated list of {', '.join(TRACKING_BACKENDS)}")
    return names


def hparams_of(job) -> dict:
    """The hyper-parameters the HParams view compares runs on."""
    train = job.kind == "train"
    return {"kind": job.kind, "model": job.model, "prompt": job.prompt, "rank": job.rank if train else 0,
            "lr": job.lr if train else 0.0, "context": job.context, "steps": job.steps if train else 0,
            "batch_size": job.batch_size}
