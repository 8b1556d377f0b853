"""Forecast series with a language model (SPEC §4); lvjob.forecasting.scores scores them.

For each series: fit the scaler on the context only, render it, prompt (plain or instruct),
generate k constrained forecasts of the horizon (sharing one prompt pass), parse them, map them
back to population units. With k samples per series the point forecast is their element-wise
median (LLMTIME). Generation goes batch by batch (`forecast_batches`), each batch carrying the
sampler's state after it, so a caller can keep finished batches and resume after a stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lvjob.data import VARIABLES
from lvjob.data.grammar import Grammar
from lvjob.data.llmtime import TextSpec, fit_scaler, parse, render
from lvjob.data.prompts import instruct_prompt, plain_prompt
from lvjob.forecasting.scores import point_forecast


class ForecastSpec(Protocol):
    """What the forecaster reads of a job (a lvjob.run.job.Job is one, and owns every default)."""

    prompt: str  # plain | instruct
    text: TextSpec  # decimals and the scaler's alpha, beta
    samples: int
    temperature: float
    max_int_digits: int
    eval_batch_size: int  # series per generation batch (each generates `samples` rows from one prompt pass)
    seed: int


@dataclass
class Forecasts:
    predictions: np.ndarray  # (series, horizon, 2) in population units; NaN where a forecast is short
    samples: np.ndarray  # (series, samples, horizon, 2)
    texts: list[list[str]]  # generated text per series and sample
    parsed_ok: np.ndarray  # (series, samples) bool: the text parsed to a full horizon
    batches: list[tuple[int, int, int, int, int]]  # per generation batch: prompts, padded prompt length, tokens
    # generated, LM-head rows, copies (samples) of each prompt


def build_prompt(tokenizer, context: np.ndarray, horizon_points: int, s: ForecastSpec) -> tuple[list[int], object]:
    scaler = fit_scaler(context, s.text.alpha, s.text.beta)
    series = render(scaler.transform(context), s.text.decimals)
    if s.prompt == "plain":
        text = plain_prompt(series)
    elif s.prompt == "instruct":
        text = instruct_prompt(tokenizer, series, horizon_points)
    else:
        raise ValueError(f"prompt: {s.prompt!r} is not valid; valid: plain, instruct")
    return tokenizer.encode(text, add_special_tokens=False), scaler


@dataclass
class Batch:
    """One generation batch: its series' texts, its cost figures, and the sampler's state after it."""

    index: int
    texts: list[list[str]]  # per series, its `samples` generated texts
    stats: tuple[int, int, int, int, int]  # prompts, padded prompt length, tokens generated, LM-head rows, copies
    sampler: np.ndarray  # the sampling generator's state after this batch (uint8): where the next batch starts


def prompts_for(tokenizer, contexts: np.ndarray, horizon_points: int, s: ForecastSpec) -> list[tuple[list[int], object]]:
    """Each series' prompt tokens and the scaler fitted on its context."""
    return [build_prompt(tokenizer, c, horizon_points, s) for c in contexts]


def forecast_batches(model, tokenizer, built: list, horizon_points: int, s: ForecastSpec, after: Batch | None = None):
    """Yield the generation batches of `built` (prompts_for) in order, from the one after `after` if given.

    The sampler continues from `after`'s state, so batches generated across several processes equal
    those of one uninterrupted pass.
    """
    import torch

    from lvjob.forecasting.decoding import alphabet_ids, generate

    g = Grammar(variables=len(VARIABLES), decimals=s.text.decimals, max_int_digits=s.max_int_digits, points=horizon_points)
    alphabet = alphabet_ids(tokenizer)
    generator = torch.Generator().manual_seed(s.seed)
    if after is not None:
        generator.set_state(torch.from_numpy(after.sampler))
    first = 0 if after is None else after.index + 1
    for index, start in enumerate(range(0, len(built), s.eval_batch_size)):
        if index < first:
            continue
        prompts = [p for p, _ in built[start:start + s.eval_batch_size]]
        out = generate(model, prompts, g, alphabet, tokenizer.pad_token_id, temperature=s.temperature,
                       generator=generator, copies=s.samples)
        # The first token comes from the prompt pass, each further one from a decode step.
        stats = (len(prompts), out.padded_prompt_len, out.steps + 1, out.logits_vocab, s.samples)
        texts = [out.texts[i:i + s.samples] for i in range(0, len(out.texts), s.samples)]
        yield Batch(index, texts, stats, generator.get_state().numpy().copy())


def assemble(built: list, batches: list[Batch], horizon_points: int, s: ForecastSpec) -> Forecasts:
    """Parse every batch's texts into forecasts in population units (each series through its own scaler)."""
    texts = [t for b in batches for t in b.texts]
    n, h, v = len(built), horizon_points, len(VARIABLES)
    samples = np.full((n, s.samples, h, v), np.nan)
    ok = np.zeros((n, s.samples), dtype=bool)
    for i, (_, scaler) in enumerate(built):
        for k in range(s.samples):
            values = parse(texts[i][k], variables=v, decimals=s.text.decimals).values[:h]
            ok[i, k] = len(values) == h
            # A short forecast is reported as such (NaN points), never padded with made-up values.
            samples[i, k, : len(values)] = scaler.inverse(values)
    return Forecasts(point_forecast(samples), samples, texts, ok, [b.stats for b in batches])


def forecast_series(model, tokenizer, contexts: np.ndarray, horizon_points: int, s: ForecastSpec) -> Forecasts:
    """Forecast `horizon_points` points after each context (series, context points, 2), in one pass."""
    built = prompts_for(tokenizer, contexts, horizon_points, s)
    return assemble(built, list(forecast_batches(model, tokenizer, built, horizon_points, s)), horizon_points, s)
