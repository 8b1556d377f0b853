"""Where lvjob keeps things: built artefacts (tokenizer, models) made once in the cache, and the layouts
of the three folders a study writes, each file name in one place:

- `RunDir`: one run (`<runs_root>/<run id>/`);
- `StudyDir`: the study's own records (`<runs_root>/study-<name>-<scale>-<digest>/`);
- `ResultsDir`: one study's run index, tables, summary and plots (`<results_dir>.by-study/<name>-<scale>-<digest>/`);
  the profile's `results_dir` is a link to the one written last (`results_variants`).
"""

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
class _Folder:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))


class RunDir(_Folder):
    """The files of one run directory. Every file is written atomically.

        job.yaml         the job as resolved (spec + overrides)
        run.json         status (lvjob.run.rundir.RunStatus), attempts, UTC time stamps; attempt_records: per
                         attempt its start and end, host, SLURM job, device, peak memory, git commit, versions
        metrics.jsonl    training: one row per step (loss; val_loss on validation steps; UTC time, elapsed, tokens/s)
        tensorboard/     TensorBoard event files (lvjob.run.tracking)
        wandb/           W&B's files, when the profile's tracking lists wandb (lvjob.run.tracking)
        checkpoints/     training: step-NNNNNNN/ folders (lvjob.run.checkpoint)
        adapter/         training: the final LoRA adapter, standard PEFT layout (lvjob.run.adapter)
        heartbeat        the runner's pulse: what it did last, the longest gap between beats (lvjob.core.heartbeat)
        eval-parts/      an evaluation under way: its finished batches (or chunks of series), removed when it ends
        eval.json        the split it scored, the forecasts' scores beside persistence's, parse rate, settings
        forecasts.npz    forecasts, samples, truth, contexts, systems, generated text
        ledger.json      FLOPs spent (lvjob.run.ledger)
        preemptions.jsonl  training: resumes and the steps they discarded (lvjob.run.ledger)
    """

    job = property(lambda self: self.root / "job.yaml")  # the job as resolved
    status = property(lambda self: self.root / "run.json")
    lock = property(lambda self: self.root / ".lock")
    held_lock = property(lambda self: self.root / ".lock.held")  # the lock where the filesystem has no flock
    metrics = property(lambda self: self.root / "metrics.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    adapter = property(lambda self: self.root / "adapter")
    heartbeat = property(lambda self: self.root / "heartbeat")
    eval_parts = property(lambda self: self.root / "eval-parts")  # lvjob.run.evaluate
    evaluation = property(lambda self: self.root / "eval.json")
    forecasts = property(lambda self: self.root / "forecasts.npz")
    ledger = property(lambda self: self.root / "ledger.json")
    preemptions = property(lambda self: self.root / "preemptions.jsonl")


ADAPTER_CONFIG = "adapter_config.json"  # in a PEFT adapter folder


class StudyDir(_Folder):
    """The study's own records, beside its runs, keyed by its settings (lvjob.study.choices.study_dir)."""

    submissions = property(lambda self: self.root / "submissions.jsonl")  # every job submitted, by node
    gates = property(lambda self: self.root / "gates.jsonl")  # every retry gate submitted, by stage
    lock = property(lambda self: self.root / "study.lock")  # held while a submit or a gate submits or re-points jobs
    retries = property(lambda self: self.root / "retries.jsonl")  # every retry and why
    packs = property(lambda self: self.root / "packs.jsonl")  # every packed job and its watcher (lvjob.orchestrate.pack)
    cancelled = property(lambda self: self.root / "cancelled.json")  # the last `lvjob cancel`, until the next submit
    submitit = property(lambda self: self.root / "submitit")  # submitit's pickles and job logs

    def choice(self, stage: str) -> Path:
        """What a late-bound stage chose when it started."""
        return self.root / "choices" / f"{stage}.json"

    def job_spec(self, node: str) -> Path:
        """The job file a node's runner was started with."""
        return self.root / "jobs" / f"{node}.yaml"

    def job_log(self, job_id: str) -> Path:
        """submitit's stderr log of a job (task 0)."""
        return self.submitit / f"{job_id}_0_log.err"


def results_variants(results_dir: str | Path) -> Path:
    """Where each study's results folder is kept, beside the profile's `results_dir`: so two studies of one name
    but different settings never overwrite each other, and `results_dir` links to the one written last."""
    link = Path(results_dir)
    return link.parent / f"{link.name}.by-study"


def made_by_lvjob(link: Path) -> bool:
    """Whether `link` is the link lvjob keeps at a profile's `results_dir` (into `results_variants(link)`)."""
    return link.is_symlink() and Path(os.readlink(link)).parent == Path(results_variants(link).name)


class ResultsDir(_Folder):
    """What `lvjob aggregate` writes (lvjob.results.aggregate) and `lvjob plot` reads."""

    index = property(lambda self: self.root / "runs.json")  # one entry per run of the study, and the choices
    summary = property(lambda self: self.root / "summary.md")
    plots = property(lambda self: self.root / "plots")

    def table(self, name: str, suffix: str) -> Path:
        """A table in one format: `.md`, `.csv` or `.tex`."""
        return self.root / f"{name}{suffix}"

