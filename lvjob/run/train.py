"""LoRA training with exact resume: the whole loop in one place.

Data order is a pure function of (seed, step): step s trains on positions [s*B, (s+1)*B) of an
endless stream of seeded per-epoch permutations of the chunks. So a resumed run needs only the step
(stored with its data position) to continue exactly where it stopped, and with the optimizer,
scheduler, RNG states and adapter weights restored, it ends bit for bit where an uninterrupted run
ends (CPU, same seed).

A stop request (SIGUSR2/SIGTERM, lvjob.core.stops) is honoured at the next step boundary: checkpoint,
then `Stopped` is raised. A kill without warning loses at most the steps since the last
checkpoint; those steps are re-done, and their FLOPs are booked as lost to preemption.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lvjob.core import atomic
from lvjob.core.atomic import DiskFull
from lvjob.run import checkpoint
from lvjob.run import cost
from lvjob.data.corpus import pad_batch, training_chunks
from lvjob.run.job import Job
from lvjob.models.loading import load_model
from lvjob.core.paths import RunDir
from lvjob.core.atomic import read_jsonl
from lvjob.run.ledger import Ledger, losses, record_resume, training_ledger
from lvjob.core.stops import StopRequest, Stopped
from lvjob.core.timestamps import utc_now


@dataclass
class Corpus:
    train: list[list[int]]
    val: list[list[int]] = field(default_factory=list)


# --- pure pieces -----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(np.random.default_rng([seed, epoch]).permutation(n).tolist())


def batch_indices(n_chunks: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Chunk indices of training step `step` (0-based)."""
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n_chunks)
        out.append(_permutation(n_chunks, seed, epoch)[i])
    return out


def validation_subset(pool: list[list[int]], n: int, seed: int) -> list[list[int]]:
    """A fixed, seeded subset of the validation chunks (the same at every validation and resume)."""
    if len(pool) <= n:
        return list(pool)
    idx = sorted(np.random.default_rng([seed, 10**6]).choice(len(pool), size=n, replace=False).tolist())
    return [pool[i] for i in idx]


def is_validation_step(step: int, job: Job) -> bool:
    """After step `step` (1-based): every val_every steps and at the last step."""
    return step % job.val_every == 0 or step == job.steps


# --- building the corpus and the model -----------------------------------------------------------


def build_corpus(job: Job, tokenizer, trajectories: np.ndarray, train_systems, val_systems) -> Corpus:
    t = job.text
    train = training_chunks(trajectories, train_systems, tokenizer, job.context, t.decimals, t.alpha, t.beta)
    pool = training_chunks(trajectories, val_systems, tokenizer, job.context, t.decimals, t.alpha, t.beta)
    return Corpus(train=train, val=validation_subset(pool, job.val_chunks, job.seed))


def lora_model(job: Job, device: str):
    from peft import LoraConfig, get_peft_model  # deferred like torch: heavy

    base = load_model(job.model_choice, device=device)
    if job.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    torch.manual_seed(job.seed)  # the adapters' initial weights
    config = LoraConfig(r=job.rank, lora_alpha=job.alpha, target_modules=list(job.lora_targets), lora_dropout=0.0, bias="none",
                        task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # adapters train in float32 even on a bfloat16 base
    return model


def _to_device(batch: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def validation_loss(model, chunks: list[list[int]], job: Job, pad_id: int, device: str) -> tuple[float, float | None]:
    """Token-weighted mean next-token loss over the fixed validation subset, and its standard error over the
    chunks (the spread of the chunks' own mean losses over sqrt(chunks); None for a single chunk)."""
    model.eval()
    sums, counts = [], []
    for start in range(0, len(chunks), job.batch_size):
        batch = _to_device(pad_batch(chunks[start:start + job.batch_size], job.context, pad_id), device)
        # Each position predicts the next token: the labels shifted left, the last position predicting nothing
        # (as transformers' own loss does it, without copying the logits).
        labels = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
        with _autocast(device):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        token_loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                                                       ignore_index=-100, reduction="none").view(labels.shape)
        sums += token_loss.sum(1).tolist()
        counts += (labels != -100).sum(1).tolist()
    model.train()
    return sum(sums) / max(sum(counts), 1), _standard_error([s / max(n, 1) for s, n in zip(sums, counts)])


def _standard_error(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None


# --- the loop ----------------------------------------------------------------------------------------


def train(job: Job, run_dir: Path, corpus: Corpus, pad_id: int, device: str, stop: StopRequest,
          attempt: int = 1, log=print, tracker=None, started: float | None = None, beat=lambda what: None):
    """Train (or resume) the LoRA adapters of `job` in `run_dir`; returns (trained model, FLOP ledger).

    Writes `metrics.jsonl` (one row per step, validation loss on its rows) and checkpoints, and hands
    the rows to `tracker` (lvjob.run.tracking) as they are written. Each row carries its UTC `time` and
    `elapsed`, seconds since `started` (time.monotonic() when the attempt began; default: now).
    `beat(what)` is called after each step (lvjob.core.heartbeat).
    """
    started = time.monotonic() if started is None else started
    step_flops = cost.step_flops(job)
    val_flops = cost.validation_flops(job, len(corpus.val))

    model = lora_model(job, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=job.lr, weight_decay=job.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)  # constant lr, as SPEC §1

    metrics_path = RunDir(run_dir).metrics
    checkpoint.remove_partial_writes(run_dir)
    ckpt = checkpoint.load_latest(run_dir)
    rows, start = [], 0
    if ckpt is not None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, {k: v.to(device) for k, v in ckpt.adapter.items()})
        optimizer.load_state_dict(ckpt.optimizer)
        scheduler.load_state_dict(ckpt.scheduler)
        checkpoint.set_rng_state(ckpt.rng)
        start, rows = ckpt.step, ckpt.metrics
    # Steps an earlier attempt computed past the checkpoint (or, killed before its first one, at all) are re-done.
    discarded = [r for r in read_jsonl(metrics_path) if r.get("step", 0) > start]
    if ckpt is not None or discarded:
        record_resume(run_dir, attempt, start, discarded)  # before the metrics file is cut back
        where = f"from {ckpt.path.name} (step {start})" if ckpt else "from the start (no checkpoint yet)"
        log(f"resuming {where}; {len(discarded)} step(s) after it are re-done")
    # The live metrics file restarts from the checkpoint's rows: no step appears twice.
    atomic.write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
    if tracker is not None:
        tracker.resume(rows)
    lost = losses(run_dir)

    def ledger() -> Ledger:
        return training_ledger(rows, lost, step_flops, val_flops)

    def save(step: int) -> None:
        from peft import get_peft_model_state_dict

        state = {"step": step, "data_position": step * job.batch_size, "ledger": ledger().to_dict(), "run_id": job.run_id()}
        checkpoint.save(run_dir, step, get_peft_model_state_dict(model), optimizer.state_dict(),
                        scheduler.state_dict(), state, rows, keep=job.keep_checkpoints)

    stop.check("loading the model")
    model.train()
    bar = _progress(job.steps, start)
    t0 = time.perf_counter()

    def report(row: dict) -> None:
        _report(bar, log, row, job.steps, t0, start)
        if tracker is not None:
            tracker.row(row)

    with open(metrics_path, "a") as live:
        pending = PendingRows(live, report)
        t_prev = time.perf_counter()
        for step in range(start, job.steps):
            idx = batch_indices(len(corpus.train), job.batch_size, step, job.seed)
            host = pad_batch([corpus.train[i] for i in idx], job.context, pad_id)
            batch = _to_device(host, device)
            with _autocast(device):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            row = {"step": done, "loss": None, "lr": scheduler.get_last_lr()[0], "attempt": attempt}  # loss: PendingRows
            # Host time of the step alone (validation and checkpoints fall outside it). On a GPU the host
            # runs ahead of the device by a bounded queue, so over steps this is the device's pace.
            row |= _timing(int(host["attention_mask"].sum()), time.perf_counter() - t_prev, started)
            if is_validation_step(done, job):
                row["val_loss"], row["val_loss_se"] = validation_loss(model, corpus.val, job, pad_id, device)
            rows.append(row)
            spent = ledger()
            row["flops"], row["lost_flops"] = spent.total, spent.lost_to_preemption  # readable while it runs
            pending.add(row, loss)
            pending.write(wait="val_loss" in row)

            stopping = stop.requested  # read once: a signal arriving now is honoured at the next step
            if stopping or done % job.checkpoint_every == 0 or done == job.steps:
                pending.write(wait=True)
                try:
                    save(done)
                except DiskFull as e:
                    if not stopping:
                        raise
                    # Asked to stop and no room to save: stop anyway; the previous checkpoint is whole.
                    raise Stopped(f"step {done} without its checkpoint ({e})") from e
            beat(f"step {done}")
            if stopping and done < job.steps:
                if bar is not None:
                    bar.close()
                raise Stopped(f"step {done}, checkpoint written", step=done)
            t_prev = time.perf_counter()
    if bar is not None:
        bar.close()
    if not math.isfinite(rows[-1]["loss"]):
        log("WARNING: the final training loss is not finite")
    return model, ledger()


class PendingRows:
    """Metrics rows whose loss is still on its way from the device.

    Reading a loss with `.item()` would make the host wait for the device at every step. Instead each
    loss is copied to the host without blocking, and its row is written (one line, in step order)
    once that copy has landed: checked at each step, never waited for, except at a boundary
    (validation, checkpoint, the end, a stop request), where everything is written before going on.
    On the CPU every copy has landed at once, so each row is written at its own step.
    """

    def __init__(self, live, report):
        self.live, self.report = live, report
        self.queue: list[tuple[dict, torch.Tensor, object]] = []

    def add(self, row: dict, loss: torch.Tensor) -> None:
        value = loss.detach().float()
        event = None
        if value.is_cuda:
            value = value.to("cpu", non_blocking=True)  # into pinned memory: the host does not wait
            event = torch.cuda.Event()
            event.record()
        self.queue.append((row, value, event))

    def write(self, wait: bool) -> None:
        while self.queue and (wait or self.queue[0][2] is None or self.queue[0][2].query()):
            row, value, event = self.queue.pop(0)
            if event is not None:
                event.synchronize()
            row["loss"] = value.item()
            self.live.write(json.dumps(row) + "\n")
            self.report(row)
        self.live.flush()


def _timing(tokens: int, seconds: float, started: float) -> dict:
    """A row's time fields: UTC time (ISO 8601), seconds since the attempt began, training tokens/s."""
    return {"time": utc_now(),
            "elapsed": round(time.monotonic() - started, 3), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}


def _progress(total: int, start: int):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def _report(bar, log, row: dict, total: int, t0: float, start: int) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", **({"val": f"{row['val_loss']:.4f}"} if "val_loss" in row else {}))
        return
    step = row["step"]
    if "val_loss" in row or step % 10 == 0 or step == total:
        rate = (step - start) / max(time.perf_counter() - t0, 1e-9)
        val = f" val_loss {row['val_loss']:.4f}" if "val_loss" in row else ""
        log(f"step {step}/{total} loss {row['loss']:.4f}{val} ({rate:.2f} steps/s)")
