"""Batched forecasting with the KV cache, constrained token by token by the forecast grammar.

Prompts are left-padded into one batch (attention mask, position ids from the mask), processed
once, then every step feeds one token per row against the cache. With `constrained=True` each row's
next token is chosen only among the tokens its grammar state allows (Qwen2.5 writes every digit,
'.', ',' and ';' as one token), so every row ends with a forecast that parses: the parse rate is
100% by construction. Unconstrained decoding is kept for comparison (benchmarks, tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from lvjob import grammar
from lvjob.grammar import DECIMAL_POINT, DIGITS, POINT_SEP, VALUE_SEP, Grammar

ALPHABET = DIGITS + DECIMAL_POINT + VALUE_SEP + POINT_SEP


def alphabet_ids(tokenizer) -> list[int]:
    """Token id of each character of ALPHABET; refuses a tokenizer that does not write each as one token."""
    ids = []
    for ch in ALPHABET:
        enc = tokenizer.encode(ch, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"tokenizer writes {ch!r} as {len(enc)} tokens; constrained decoding needs one token per character")
        ids.append(enc[0])
    return ids


ANY = (True,) * len(ALPHABET)


@lru_cache(maxsize=None)
def _allowed_mask(g: Grammar, s: grammar.State) -> tuple[bool, ...]:
    allowed = grammar.allowed(g, s)
    return tuple(ch in allowed for ch in ALPHABET)


@dataclass
class Generated:
    texts: list[str]  # one per prompt, the generated characters (decoded tokens)
    prompt_tokens: int  # prompt positions processed, padding included (what was computed)
    padded_prompt_len: int
    steps: int  # decode forwards after the prompt


@torch.no_grad()
def generate(
    model,
    prompts: list[list[int]],
    g: Grammar,
    alphabet: list[int],
    pad_id: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    constrained: bool = True,
    max_new_tokens: int | None = None,
    decode=None,
) -> Generated:
    """Generate one forecast per prompt, all prompts in one batch.

    Constrained: stops when every row has written `g.points` points. Unconstrained: samples from the
    whole vocabulary for `max_new_tokens` tokens and `decode` (the tokenizer's decode) turns ids
    into text.
    """
    if g.points is None:
        raise ValueError("generation needs a grammar with a fixed number of points (the horizon)")
    device = next(model.parameters()).device
    n = len(prompts)
    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    alphabet_t = torch.tensor(alphabet, device=device)

    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.cache
    logits = out.logits[:, -1, :]
    states = [grammar.START] * n
    done = [False] * n
    chosen: list[list[int]] = [[] for _ in range(n)]
    limit = max_new_tokens if max_new_tokens is not None else 10**9
    steps = 0
    while True:
        if constrained:
            # A finished row's choice is discarded; let it choose freely so its row is never all -inf.
            allowed = torch.tensor([ANY if d else _allowed_mask(g, s) for s, d in zip(states, done)], device=device)
            sub = logits.index_select(-1, alphabet_t).float().masked_fill(~allowed, float("-inf"))
            pick = alphabet_t[_choose(sub, temperature, generator)]
        else:
            pick = _choose(logits.float(), temperature, generator)
        for i in range(n):
            if done[i]:
                continue
            tok = int(pick[i])
            chosen[i].append(tok)
            if constrained:
                states[i] = grammar.step(g, states[i], ALPHABET[alphabet.index(tok)])
                done[i] = grammar.is_final(g, states[i])
            else:
                done[i] = len(chosen[i]) >= limit
        if all(done):
            break
        nxt = torch.where(torch.tensor(done, device=device), torch.full_like(pick, pad_id), pick)
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        cache = out.cache
        logits = out.logits[:, -1, :]
        steps += 1

    if constrained:
        texts = ["".join(ALPHABET[alphabet.index(t)] for t in row) for row in chosen]
    else:
        texts = [decode(row) for row in chosen]
    return Generated(texts=texts, prompt_tokens=n * width, padded_prompt_len=width, steps=steps)


def _choose(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
