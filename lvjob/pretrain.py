"""The demo's base model `tiny-lv`: the tiny Qwen2, briefly pre-trained on LLMTIME text.

With random weights the tiny model writes random digits, and a demo study on it compares noise.
So the local base model gets a short pre-training, as a real base model would have had one: on the
LLMTIME text of the *training* systems of the default data (1000 systems x 100 points, seed 0,
the SPEC's 80/20 seeded split), never the validation systems. It is kept short on purpose: it
learns the format and a rough continuation, and leaves the study's fine-tuning something to learn.

Cheap by construction: the text holds only the 13 characters of the forecast grammar, so the loss
is a softmax over those 13 rows of the (tied) LM head, the rows constrained decoding computes,
instead of all 151,936. Full-parameter AdamW, seeded; built once into the cache by `lvjob prepare`
and loaded by name through the same `from_pretrained` path as every model. This module imports
torch and the training loop: import it only where the demo model is built. Its numbers are not
Qwen's, and the README says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lvjob import data
from lvjob.atomic import atomic_dir
from lvjob.corpus import pad_batch, training_chunks
from lvjob.forecast import alphabet_ids
from lvjob.models import load_model
from lvjob.modelspec import ModelChoice, demo_model_dir
from lvjob.tokenizer import load_tokenizer
from lvjob.train import batch_indices


@dataclass(frozen=True)
class PretrainSpec:
    steps: int = 150  # ~25 s on 2 CPU cores; zero-shot MAE already near persistence, room left for LoRA
    batch_size: int = 16
    context: int = 256
    lr: float = 2e-3
    seed: int = 0
    systems: int = 1000  # the default data: generated with these settings, split with seed 0
    points: int = 100
    data_seed: int = 0


def ensure_demo_model(spec: PretrainSpec = PretrainSpec(), log=print) -> Path:
    folder = demo_model_dir()
    if (folder / "config.json").exists():
        return folder
    model, losses = pretrain(spec, log)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        (tmp / "pretraining.json").write_text(json.dumps({"spec": asdict(spec), "loss": losses}, indent=1))
    return folder


def pretrain(spec: PretrainSpec, log=print):
    """Train the tiny model on the training systems' text; returns (model, loss every 50 steps)."""
    tokenizer = load_tokenizer()
    lv, _ = data.generate(spec.systems, spec.points, spec.data_seed)
    train_systems = data.split_systems(lv.n_systems, seed=spec.data_seed).train
    chunks = training_chunks(lv.trajectories, train_systems, tokenizer, spec.context)
    alphabet = alphabet_ids(tokenizer)  # the grammar's token ids, checked one token per character
    to_class = np.full(max(alphabet) + 1, -100, dtype=np.int64)
    to_class[alphabet] = np.arange(len(alphabet))

    torch.manual_seed(spec.seed)
    model = load_model(ModelChoice("tiny")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    rows = torch.tensor(alphabet)
    losses = []
    for step in range(spec.steps):
        idx = batch_indices(len(chunks), spec.batch_size, step, spec.seed)
        batch = pad_batch([chunks[i] for i in idx], spec.context, tokenizer.pad_token_id)
        ids = torch.from_numpy(batch["input_ids"])
        hidden = model.model(input_ids=ids, attention_mask=torch.from_numpy(batch["attention_mask"])).last_hidden_state
        logits = hidden[:, :-1] @ model.get_input_embeddings().weight[rows].T  # the grammar's rows of the tied head
        labels = batch["labels"][:, 1:]
        target = torch.from_numpy(np.where(labels >= 0, to_class[np.clip(labels, 0, len(to_class) - 1)], -100))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(alphabet)), target.reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == spec.steps - 1:
            losses.append([step + 1, round(loss.item(), 4)])
            log(f"pre-training the demo model: step {step + 1}/{spec.steps}, loss {loss.item():.3f} (13-way)")
    return model.eval(), losses
