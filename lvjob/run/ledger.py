"""What a run actually computed, in FLOPs by the rules of SPEC §5, kept in `ledger.json`.

Steps re-done after a resume were computed twice: both times are spent, and the first time is also
reported as `lost_to_preemption`, so the aggregate shows what preemption cost.

What was lost cannot live only in checkpoints: a process killed before its next checkpoint would
take its knowledge of earlier losses with it. So at every resume the discarded work, the rows of
the live metrics file past the checkpoint, is appended to `preemptions.jsonl` as (attempt, step)
records *before* the metrics file is cut back. A kill between the two only repeats records, and
records are read as a set, so every lost step is counted exactly once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lvjob.core import atomic
from lvjob.core.atomic import read_jsonl
from lvjob.core.paths import RunDir


@dataclass
class Ledger:
    train_steps: int = 0  # optimizer steps computed, re-done ones included
    train: int = 0  # FLOPs of training steps (3 x forward each)
    validation: int = 0  # FLOPs of validation-loss forwards
    prompt: int = 0  # FLOPs of prompt processing in evaluation
    generation: int = 0  # FLOPs of generated tokens in evaluation
    lost_to_preemption: int = 0  # FLOPs of work done after a checkpoint and discarded at a resume
    lost_in_evaluation: int = 0  # of which evaluation batches computed but never written (lvjob.run.evaluate)
    lost_steps: int = 0
    resumes: int = 0

    @property
    def total(self) -> int:
        return self.train + self.validation + self.prompt + self.generation

    def to_dict(self) -> dict:
        return asdict(self) | {"total": self.total}

    @classmethod
    def from_dict(cls, d: dict) -> "Ledger":
        return cls(**{f.name: int(d.get(f.name, 0)) for f in fields(cls)})

    def write(self, path: Path) -> None:
        atomic.write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> "Ledger":
        return cls.from_dict(json.loads(Path(path).read_text())) if Path(path).exists() else cls()


@dataclass(frozen=True)
class Losses:
    steps: int = 0  # distinct (attempt, step) pairs discarded
    validations: int = 0  # of which carried a validation pass
    resumes: int = 0  # attempts that resumed from a checkpoint


def record_resume(run_dir: Path, attempt: int, from_step: int, discarded: list[dict]) -> None:
    """Append (durably) the resume of `attempt` and every discarded metrics row."""
    lines = [{"event": "resume", "attempt": attempt, "from_step": from_step}]
    lines += [{"event": "lost", "attempt": r.get("attempt", 0), "step": r["step"], "val": "val_loss" in r} for r in discarded]
    with open(RunDir(run_dir).preemptions, "a") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
        f.flush()
        os.fsync(f.fileno())


def losses(run_dir: Path) -> Losses:
    records = read_jsonl(RunDir(run_dir).preemptions)
    lost = {(r["attempt"], r["step"]): r["val"] for r in records if r.get("event") == "lost"}
    resumes = {r["attempt"] for r in records if r.get("event") == "resume"}
    return Losses(steps=len(lost), validations=sum(lost.values()), resumes=len(resumes))


def training_ledger(rows: list[dict], lost: Losses, step_flops: int, val_flops: int) -> Ledger:
    """The training part of the ledger: the kept metrics rows plus everything discarded."""
    kept_vals = sum("val_loss" in r for r in rows)
    return Ledger(
        train_steps=len(rows) + lost.steps,
        train=(len(rows) + lost.steps) * step_flops,
        validation=(kept_vals + lost.validations) * val_flops,
        lost_to_preemption=lost.steps * step_flops + lost.validations * val_flops,
        lost_steps=lost.steps,
        resumes=lost.resumes,
    )
