"""Training text: each training system rendered as LLMTIME text, tokenized, cut into chunks.

Chunks hold at most `context_length` tokens and consecutive chunks of one system overlap by
context_length // 2, so every token is seen with at least half a window of history (except at the
start of a series). A chunk never spans two systems. Short chunks are padded on the right; padding
is masked out of attention and of the loss (label -100, the value PyTorch's cross-entropy ignores).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lvjob.data.llmtime import fit_scaler, render

IGNORE_INDEX = -100


def system_text(series: np.ndarray, decimals: int, alpha: float, beta: float) -> str:
    """One system's whole series (time points, 2) as training text, scaled on itself: in training
    the model is shown the whole series, so that is what the scaler is fitted on."""
    return render(fit_scaler(series, alpha, beta).transform(series), decimals)


def chunk_starts(n_tokens: int, context_length: int) -> list[int]:
    """Start offsets of the windows covering `n_tokens` tokens with stride context_length - context_length // 2."""
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2, got {context_length}")
    if n_tokens <= 0:
        return []
    stride = context_length - context_length // 2
    starts = [0]
    while starts[-1] + context_length < n_tokens:
        starts.append(starts[-1] + stride)
    return starts


def chunk(ids: Sequence[int], context_length: int) -> list[list[int]]:
    """Cut one token sequence into overlapping windows (the last may be shorter)."""
    return [list(ids[s : s + context_length]) for s in chunk_starts(len(ids), context_length)]


def pad_batch(chunks: Sequence[Sequence[int]], context_length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad chunks to `context_length`: input_ids, attention_mask (1 = real token) and labels
    (the input ids, IGNORE_INDEX on padding; the model shifts them for next-token prediction)."""
    n = len(chunks)
    input_ids = np.full((n, context_length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((n, context_length), dtype=np.int64)
    for i, c in enumerate(chunks):
        if len(c) > context_length:
            raise ValueError(f"chunk {i} has {len(c)} tokens, more than context_length {context_length}")
        input_ids[i, : len(c)] = c
        attention_mask[i, : len(c)] = 1
    labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def training_chunks(
    trajectories: np.ndarray,
    systems: Sequence[int],
    tokenizer,
    context_length: int,
    decimals: int = 3,
    alpha: float = 0.99,
    beta: float = 0.3,
) -> list[list[int]]:
    """All chunks of the given systems, in system order then time order."""
    out: list[list[int]] = []
    for i in systems:
        ids = tokenizer(system_text(trajectories[i], decimals, alpha, beta), add_special_tokens=False)["input_ids"]
        out.extend(chunk(ids, context_length))
    return out
