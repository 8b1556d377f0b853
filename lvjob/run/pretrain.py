"""The demo's base model `tiny-lv`: the tiny Qwen2 (attending through a sliding window), briefly
pre-trained on LLMTIME text.

With random weights the tiny model writes random digits, and a demo study on it compares noise.
So the local base model gets a short pre-training, as a real base model would have had one: on the
LLMTIME text of the *training* systems of the default data (1000 systems x 100 points, seed 0,
split by `lvjob.data.dataset.split_systems`), never the validation systems. It is kept short on purpose: it
learns the format and a rough continuation, and leaves the study's fine-tuning something to learn.

The loss is the ordinary causal-LM loss over the whole 151,936-token vocabulary, the loss the
study's fine-tuning (lvjob.run.train) minimises, so the losses of the stage-1 grid and the loss curves
start where a base model that knows the format would start, not at the ~8 nats of a model that
never learnt to leave the other tokens alone. Full-parameter AdamW, seeded, warm-up then linear
decay; built once into the cache by `lvjob prepare` and loaded by name through the same
`from_pretrained` path as every model. The cache folder is named after the recipe (`recipe_key`),
so a changed recipe is built afresh rather than an old model reused. This module imports torch and
the training loop: import it only where the demo model is built. Its numbers are not Qwen's, and
the README says so.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lvjob import data
from lvjob.core.atomic import atomic_dir, one_at_a_time
from lvjob.data.corpus import pad_batch, training_chunks
from lvjob.models.loading import random_model
from lvjob.models.registry import TINY_SEED, config_dict, demo_model_dir
from lvjob.data.tokenizer import load_tokenizer
from lvjob.run.train import batch_indices

LOG_EVERY = 50  # steps between logged losses: a handful of points over the run, enough to see it fall


@dataclass(frozen=True)
class PretrainSpec:
    """The recipe. Every field is part of the cache key, so changing one builds a new model."""

    # Every token costs a pass over all 151,936 rows of the LM head (~58 MFLOP forward and backward,
    # memory-bound on 2 CPU cores), so the budget is counted in tokens: 240 x 2 x 64 = 31k tokens,
    # half as many as the demo's default fine-tune sees. Many small steps, not few large ones: measured
    # (2026-11-26) on the same 31k tokens, 60 steps of 4 x 128 stall at the grammar's unigram
    # distribution (2.37 nats, zero-shot MAE 0.91 on 50 validation series, worse than persistence),
    # while 240 steps of 2 x 64 leave it near step 70 and end at 1.30 nats (zero-shot MAE 0.55 on
    # 25 held-out validation systems). lr 1e-2 reached the same loss as 3e-3 but wrote 3-digit
    # integers (MAE ~10).
    steps: int = 240
    batch_size: int = 2
    context: int = 64  # ~5 points of LLMTIME text: the local pattern a continuation needs
    lr: float = 3e-3
    warmup: int = 10  # steps of linear warm-up: AdamW's first updates are full-size on every weight
    seed: int = 0
    systems: int = data.DataSpec.systems  # the default data: generated with these settings, split with its seed
    points: int = data.DataSpec.points
    data_seed: int = data.DataSpec.seed
    loss: str = "causal-lm"  # what is minimised: the full-vocabulary next-token loss (lvjob.run.train's)


def recipe_key(spec: PretrainSpec) -> str:
    """A short digest of the recipe and the architecture it trains: the cache folder's suffix."""
    recipe = {"spec": asdict(spec), "config": config_dict("tiny-lv")}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def ensure_demo_model(spec: PretrainSpec = PretrainSpec(), log=print) -> Path:
    """The demo model's folder, pre-training it first unless this recipe is already built."""
    folder = demo_model_dir(recipe_key(spec))
    if (folder / "config.json").exists():
        return folder
    with one_at_a_time(folder.with_name(f".{folder.name}.lock")):  # another process may be building it
        if not (folder / "config.json").exists():
            t0 = time.perf_counter()
            model, losses = pretrain(spec, log)
            seconds = round(time.perf_counter() - t0, 1)
            with atomic_dir(folder) as tmp:
                model.save_pretrained(tmp)
                record = {"spec": asdict(spec), "key": recipe_key(spec), "loss": losses, "seconds": seconds}
                (tmp / "pretraining.json").write_text(json.dumps(record, indent=1))
    return folder


def training_text(spec: PretrainSpec, tokenizer) -> list[list[int]]:
    """Token chunks of the training systems' LLMTIME text (never a validation system)."""
    lv, _ = data.generate(spec.systems, spec.points, spec.data_seed)
    train_systems = data.DataSpec(seed=spec.data_seed).split(lv.n_systems).train  # the study's own split
    return training_chunks(lv.trajectories, train_systems, tokenizer, spec.context)


def lr_factor(step: int, spec: PretrainSpec) -> float:
    """Linear warm-up over `warmup` steps, then linear decay to zero at the last step: a short run
    ends on small steps, so its final weights are not one noisy full-size update away from a minimum."""
    if step < spec.warmup:
        return (step + 1) / spec.warmup
    return max(0.0, (spec.steps - step) / max(1, spec.steps - spec.warmup))


def pretrain(spec: PretrainSpec, log=print):
    """Train the tiny model on the training systems' text; returns (model, [[step, loss], ...])."""
    tokenizer = load_tokenizer()
    chunks = training_text(spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = random_model("tiny-lv", seed=TINY_SEED).train()  # `tiny`'s weights, the demo's attention window
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, spec))
    losses = []
    for step in range(spec.steps):
        idx = batch_indices(len(chunks), spec.batch_size, step, spec.seed)
        batch = pad_batch([chunks[i] for i in idx], spec.context, tokenizer.pad_token_id)
        loss = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).loss  # as lvjob.run.train: labels shifted inside
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0 or step == spec.steps - 1:
            losses.append([step + 1, round(loss.item(), 4)])
            log(f"pre-training the demo model: step {step + 1}/{spec.steps}, loss {loss.item():.3f} (full vocabulary)")
    return model.eval(), losses
