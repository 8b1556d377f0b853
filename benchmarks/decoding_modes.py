"""The decodings the runner's constrained one is measured and tested against, built from its own `Decoder`.

- unconstrained: the whole vocabulary, for a fixed number of tokens (what a model writes unguided);
- constrained with the full LM head: the grammar as the runner applies it, but every vocabulary
  row of the head computed and the grammar's columns taken afterwards.

The runner never takes either path; benchmarks/runner_bench.py times them beside it and
tests/forecasting/test_decoding.py checks the runner's path chooses exactly as the full head does.
"""

from __future__ import annotations

import torch

from lvjob.data.grammar import Grammar
from lvjob.forecasting.decoding import Decoder, Generated, _choose, constrained, grammar_max_tokens


@torch.no_grad()
def unconstrained(model, prompts: list[list[int]], pad_id: int, max_new_tokens: int, decode, temperature: float = 0.0,
                  generator: torch.Generator | None = None) -> Generated:
    """`max_new_tokens` tokens per row from the whole vocabulary; `decode` (the tokenizer's) turns them into text."""
    decoder = Decoder(model, prompts, pad_id, max_new_tokens, head_rows=None)
    logits, chosen = decoder.prefill(), [[] for _ in prompts]
    while True:
        pick = _choose(logits, temperature, generator)
        for row, tok in zip(chosen, pick.tolist()):
            row.append(tok)
        if len(chosen[0]) >= max_new_tokens:
            break
        logits = decoder.step(pick, [False] * decoder.rows)
    return Generated(texts=[decode(row) for row in chosen], padded_prompt_len=decoder.width, steps=decoder.steps,
                     logits_vocab=decoder.vocab)


@torch.no_grad()
def full_head(model, prompts: list[list[int]], g: Grammar, alphabet: list[int], pad_id: int, temperature: float = 0.0,
              generator: torch.Generator | None = None) -> Generated:
    """The runner's constrained decoding, with the logits of every vocabulary row computed first."""
    decoder = Decoder(model, prompts, pad_id, grammar_max_tokens(g), head_rows=None)
    columns = torch.tensor(alphabet, device=decoder.device)
    return constrained(decoder, decoder.prefill(), g, alphabet, temperature, generator,
                       in_alphabet=lambda logits: logits.index_select(-1, columns))
