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
from transformers.cache_utils import Cache, DynamicLayer

from lvjob.data import grammar
from lvjob.data.grammar import ALPHABET, Grammar


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


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer whose buffers are allocated once for the whole generation.

    transformers' DynamicLayer grows by concatenation, copying the whole cache at every step
    (quadratic in the forecast length); this one writes each step in place and hands attention a
    view of exactly the filled part, so what is computed is unchanged.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.filled = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        b, h, _, d = key_states.shape
        self._keys = key_states.new_empty((b, h, self.capacity, d))
        self._values = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        self.keys, self.values = self._keys[:, :, :0], self._values[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded")
        self._keys[:, :, self.filled:end] = key_states
        self._values[:, :, self.filled:end] = value_states
        self.filled = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row `repeats` times in a row (the buffers too, so later steps still write in place)."""
        if self.is_initialized:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._keys[:, :, :self.filled], self._values[:, :, :self.filled]


@dataclass
class Generated:
    texts: list[str]  # one per row (prompt x copy), the generated characters (decoded tokens)
    padded_prompt_len: int
    steps: int  # decode forwards after the prompt
    logits_vocab: int  # vocabulary rows the LM head computed per position


def _causal_lm(model):
    """The Qwen2ForCausalLM inside a PeftModel (adapters are injected into its layers) or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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
    full_head: bool = False,
    copies: int = 1,
) -> Generated:
    """Generate `copies` forecasts per prompt, all in one batch (row i x copies + j: copy j of prompt i).

    Each prompt is processed once; its KV cache and first logits are then repeated `copies` times,
    so k samples of a series share the prompt's computation and differ only in what they draw.

    Constrained: stops when every row has written `g.points` points. Only the logits of the
    grammar's tokens are computed (the hidden state times those rows of the LM head): a choice
    among the allowed tokens depends on their logits alone, so this is exact and saves the
    full-vocabulary product (`full_head=True` computes it anyway, for comparison).
    Unconstrained: samples from the whole vocabulary for `max_new_tokens` tokens; `decode` (the
    tokenizer's decode) turns ids into text.
    """
    if g.points is None:
        raise ValueError("generation needs a grammar with a fixed number of points (the horizon)")
    lm = _causal_lm(model)
    device = lm.lm_head.weight.device
    n = len(prompts)
    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    alphabet_cpu = torch.tensor(alphabet)
    alphabet_t = alphabet_cpu.to(device)

    if constrained:
        limit = grammar_max_tokens(g)
    elif max_new_tokens is None:
        raise ValueError("unconstrained generation needs max_new_tokens (the grammar bounds only constrained text)")
    else:
        limit = max_new_tokens
    # Sized once from the prompt and the longest text that can follow: never too small, never grown.
    cache = Cache(layers=[PreallocatedLayer(width + limit) for _ in range(lm.config.num_hidden_layers)])
    restricted = constrained and not full_head
    head = lm.lm_head.weight[alphabet_t] if restricted else None

    def next_logits(input_ids, attention_mask, position_ids):
        hidden = lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          cache=cache, use_cache=True).last_hidden_state[:, -1]
        if restricted:
            return hidden @ head.T  # (rows, len(alphabet)), in ALPHABET order
        return lm.lm_head(hidden)

    logits = _prefill(next_logits, ids, mask, positions)
    if copies > 1:
        cache.batch_repeat_interleave(copies)
        logits, mask, positions = (t.repeat_interleave(copies, dim=0) for t in (logits, mask, positions))
        n *= copies
    states = [grammar.START] * n
    done = [False] * n
    chosen: list[list[int]] = [[] for _ in range(n)]
    steps = 0
    while True:
        if constrained:
            # A finished row's choice is discarded; let it choose freely so its row is never all -inf.
            allowed = torch.tensor([ANY if d else _allowed_mask(g, s) for s, d in zip(states, done)])
            sub = logits if restricted else logits.index_select(-1, alphabet_t)
            pick = alphabet_cpu[_choose(sub, temperature, generator, allowed)]
        else:
            pick = _choose(logits, temperature, generator)
        for i, tok in enumerate(pick.tolist()):
            if done[i]:
                continue
            chosen[i].append(tok)
            if constrained:
                states[i] = grammar.step(g, states[i], ALPHABET[alphabet.index(tok)])
                done[i] = grammar.is_final(g, states[i])
            else:
                done[i] = len(chosen[i]) >= limit
        if all(done):
            break
        nxt = torch.where(torch.tensor(done), torch.full_like(pick, pad_id), pick).to(device)
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
        positions = positions[:, -1:] + 1
        logits = next_logits(nxt[:, None], mask, positions)
        steps += 1

    if constrained:
        texts = ["".join(ALPHABET[alphabet.index(t)] for t in row) for row in chosen]
    else:
        texts = [decode(row) for row in chosen]
    return Generated(texts=texts, padded_prompt_len=width, steps=steps,
                     logits_vocab=len(alphabet) if restricted else lm.config.vocab_size)


PREFILL_CHUNK = 2048  # prompt tokens per forward when the prompt is longer


def _prefill(next_logits, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The prompt pass: at once, or in slices of PREFILL_CHUNK tokens (each attending to the cache so far).

    Attention then holds PREFILL_CHUNK x prompt scores at a time, not prompt x prompt: a 2,000-point
    context is ~19,000 tokens. Prompts of the study (~1,000 tokens) take the single pass.
    """
    width = ids.shape[1]
    for start in range(0, width, PREFILL_CHUNK):
        end = min(start + PREFILL_CHUNK, width)
        logits = next_logits(ids[:, start:end], mask[:, :end], positions[:, start:end])
    return logits


def grammar_max_tokens(g: Grammar) -> int:
    """The longest forecast the grammar allows, in tokens (every value at its most integer digits)."""
    per_point = g.variables * (g.max_int_digits + 1 + g.decimals) + g.variables - 1
    return g.points * (per_point + 1) - 1


def _choose(logits: torch.Tensor, temperature: float, generator: torch.Generator | None,
            allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's next token index, decided on the CPU whatever device computed the logits.

    The logits (rows x 13 grammar tokens when constrained) come to the host, where the grammar's
    state machine runs anyway, so the copy adds no synchronisation; `generator` is a CPU generator
    and meets only CPU tensors. The same seed and logits therefore give the same tokens on every
    device, and no CPU object ever reaches a CUDA kernel.
    """
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"sampling draws on the CPU; got a generator on {generator.device}")
    logits = logits.float().cpu()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
