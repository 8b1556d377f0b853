"""Batched forecasting with the KV cache, constrained token by token by the forecast grammar.

Prompts are left-padded into one batch (attention mask, position ids from the mask), processed
once, then every step feeds one token per row against the cache (`Decoder`). Each row's next token
is chosen only among the tokens its grammar state allows (Qwen2.5 writes every digit, '.', ','
and ';' as one token), so every row ends with a forecast that parses: the parse rate is 100% by
construction. The unconstrained and full-LM-head decodings it is compared with live in
benchmarks/decoding_modes.py, built from the same `Decoder`.
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


class Decoder:
    """One batch of prompts inside the model: its KV cache, and each row's attention mask and positions.

    `head_rows` picks the rows of the LM head to compute (token ids, in that order): the grammar's
    13 for constrained decoding, whose choice among the allowed tokens depends on their logits
    alone, so the full-vocabulary product is saved exactly; None computes every row.
    """

    def __init__(self, model, prompts: list[list[int]], pad_id: int, room: int, head_rows: list[int] | None):
        lm = _causal_lm(model)
        self.lm, self.device, self.pad_id = lm, lm.lm_head.weight.device, pad_id
        self.rows, self.width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((self.rows, self.width), pad_id, dtype=torch.long)
        mask = torch.zeros((self.rows, self.width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, self.width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, self.width - len(p):] = 1
        self.ids, self.mask = ids.to(self.device), mask.to(self.device)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        # Sized once from the prompt and the longest text that can follow: never too small, never grown.
        self.cache = Cache(layers=[PreallocatedLayer(self.width + room) for _ in range(lm.config.num_hidden_layers)])
        self.head = None if head_rows is None else lm.lm_head.weight[torch.tensor(head_rows, device=self.device)]
        self.vocab = lm.config.vocab_size if head_rows is None else len(head_rows)
        self.steps = 0

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               cache=self.cache, use_cache=True).last_hidden_state[:, -1]
        return self.lm.lm_head(hidden) if self.head is None else hidden @ self.head.T

    def prefill(self, copies: int = 1) -> torch.Tensor:
        """The prompts' pass; each row then stands `copies` times in a row. The next-token logits."""
        logits = _prefill(self.logits, self.ids, self.mask, self.positions)
        if copies > 1:
            self.cache.batch_repeat_interleave(copies)
            logits, self.mask, self.positions = (t.repeat_interleave(copies, dim=0) for t in (logits, self.mask, self.positions))
            self.rows *= copies
        return logits

    def step(self, tokens: torch.Tensor, done: list[bool]) -> torch.Tensor:
        """Feed one token per row (padding where the row is done); the next-token logits."""
        nxt = torch.where(torch.tensor(done), torch.full_like(tokens, self.pad_id), tokens).to(self.device)
        self.mask = torch.cat([self.mask, torch.ones((self.rows, 1), dtype=self.mask.dtype, device=self.device)], dim=1)
        self.positions = self.positions[:, -1:] + 1
        self.steps += 1
        return self.logits(nxt[:, None], self.mask, self.positions)


@torch.no_grad()
def generate(model, prompts: list[list[int]], g: Grammar, alphabet: list[int], pad_id: int, temperature: float = 0.0,
             generator: torch.Generator | None = None, copies: int = 1) -> Generated:
    """Generate `copies` forecasts per prompt, all in one batch (row i x copies + j: copy j of prompt i).

    Each prompt is processed once; its KV cache and first logits are then repeated `copies` times,
    so k samples of a series share the prompt's computation and differ only in what they draw.
    Stops when every row has written `g.points` points; the LM head computes the grammar's rows only.
    """
    if g.points is None:
        raise ValueError("generation needs a grammar with a fixed number of points (the horizon)")
    decoder = Decoder(model, prompts, pad_id, grammar_max_tokens(g), head_rows=alphabet)
    return constrained(decoder, decoder.prefill(copies), g, alphabet, temperature, generator)


def constrained(decoder: Decoder, logits: torch.Tensor, g: Grammar, alphabet: list[int], temperature: float,
                generator: torch.Generator | None, in_alphabet=lambda logits: logits) -> Generated:
    """Decode until every row's text is final in the grammar, each token chosen among those its state allows.

    `in_alphabet` turns the decoder's logits into the alphabet's columns (the identity when it
    computes the grammar's head rows only).
    """
    alphabet_cpu = torch.tensor(alphabet)
    states, done = [grammar.START] * decoder.rows, [False] * decoder.rows
    chosen: list[list[int]] = [[] for _ in range(decoder.rows)]
    while True:
        # A finished row's choice is discarded; let it choose freely so its row is never all -inf.
        allowed = torch.tensor([ANY if d else _allowed_mask(g, s) for s, d in zip(states, done)])
        pick = alphabet_cpu[_choose(in_alphabet(logits), temperature, generator, allowed)]
        for i, tok in enumerate(pick.tolist()):
            if not done[i]:
                chosen[i].append(tok)
                states[i] = grammar.step(g, states[i], ALPHABET[alphabet.index(tok)])
                done[i] = grammar.is_final(g, states[i])
        if all(done):
            break
        logits = decoder.step(pick, done)
    texts = ["".join(ALPHABET[alphabet.index(t)] for t in row) for row in chosen]
    return Generated(texts=texts, padded_prompt_len=decoder.width, steps=decoder.steps, logits_vocab=decoder.vocab)


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
