"""Constrained batched forecasting (SPEC §4), tested on the random-weight tiny model, whose
unconstrained output is garbage: constrained decoding must parse 100% anyway."""

import decoding_modes
import numpy as np
import pytest
import torch

from lvjob import data
from lvjob.forecasting.llm import forecast_series
from lvjob.run.job import Job
from lvjob.forecasting.decoding import alphabet_ids, generate
from lvjob.data.grammar import Grammar
from lvjob.data.llmtime import TextSpec, parse

HORIZON = 5


@pytest.fixture(scope="module")
def contexts(small_data):
    lv = data.load(small_data)
    return lv.trajectories[:6, :24]


@pytest.mark.parametrize("prompt", ["plain", "instruct"])
def test_constrained_forecasts_of_a_random_model_all_parse(tiny_model, tokenizer, contexts, prompt):
    out = forecast_series(tiny_model, tokenizer, contexts, HORIZON, Job(prompt=prompt, temperature=1.0, eval_batch_size=3))
    assert out.parsed_ok.all()
    assert out.predictions.shape == (6, HORIZON, 2)
    assert np.isfinite(out.predictions).all()


def test_unconstrained_decoding_of_a_random_model_is_garbage(tiny_model, tokenizer, contexts):
    prompts = [tokenizer.encode("0.512,0.300;0.498,0.310;", add_special_tokens=False)] * 4
    g = Grammar(points=HORIZON)
    out = decoding_modes.unconstrained(tiny_model, prompts, tokenizer.pad_token_id, 59, tokenizer.decode, temperature=1.0,
                                       generator=torch.Generator().manual_seed(0))
    assert not any(parse(t).ok and len(parse(t).values) == HORIZON for t in out.texts)


def test_constrained_output_follows_the_grammar_exactly(tiny_model, tokenizer):
    prompts = [tokenizer.encode("0.512,0.300;", add_special_tokens=False)] * 3
    g = Grammar(points=4, decimals=3, max_int_digits=2)
    out = generate(tiny_model, prompts, g, alphabet_ids(tokenizer), tokenizer.pad_token_id, temperature=1.0,
                   generator=torch.Generator().manual_seed(1))
    for text in out.texts:
        points = text.split(";")
        assert len(points) == 4
        for p in points:
            for v in p.split(","):
                whole, frac = v.split(".")
                assert 1 <= len(whole) <= 2 and len(frac) == 3


def test_batched_generation_equals_one_series_at_a_time(tiny_model, tokenizer, contexts):
    settings = Job(temperature=0.0, eval_batch_size=6)
    batched = forecast_series(tiny_model, tokenizer, contexts, HORIZON, settings)
    single = [forecast_series(tiny_model, tokenizer, contexts[i:i + 1], HORIZON, settings).texts[0] for i in range(len(contexts))]
    assert batched.texts == single


def test_forecasts_are_mapped_back_to_population_units(tiny_model, tokenizer, contexts):
    from lvjob.data.llmtime import fit_scaler

    out = forecast_series(tiny_model, tokenizer, contexts[:1], HORIZON, Job(temperature=0.0))
    scaled = parse(out.texts[0][0]).values
    assert np.allclose(out.predictions[0], fit_scaler(contexts[0]).inverse(scaled))


def test_several_samples_give_their_elementwise_median(tiny_model, tokenizer, contexts):
    out = forecast_series(tiny_model, tokenizer, contexts[:2], HORIZON, Job(samples=3, temperature=1.0))
    assert out.samples.shape == (2, 3, HORIZON, 2)
    assert np.allclose(out.predictions, np.median(out.samples, axis=1))


def test_sampling_is_reproducible_with_the_same_seed(tiny_model, tokenizer, contexts):
    s = Job(temperature=1.0, seed=7)
    assert forecast_series(tiny_model, tokenizer, contexts[:3], HORIZON, s).texts == forecast_series(tiny_model, tokenizer, contexts[:3], HORIZON, s).texts


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_grammar_rows_of_the_lm_head_choose_as_the_full_head_does(tiny_model, tokenizer, temperature):
    prompts = [tokenizer.encode("0.512,0.300;0.498,0.310;", add_special_tokens=False), tokenizer.encode("1.0,2.0;", add_special_tokens=False)]
    g, alphabet = Grammar(points=6), alphabet_ids(tokenizer)
    runs = [decode(tiny_model, prompts, g, alphabet, tokenizer.pad_token_id, temperature=temperature,
                   generator=torch.Generator().manual_seed(0)) for decode in (generate, decoding_modes.full_head)]
    assert runs[0].texts == runs[1].texts
    assert (runs[0].logits_vocab, runs[1].logits_vocab) == (13, 151936)


def test_a_forecast_stops_within_the_grammars_longest_text(tiny_model, tokenizer):
    from lvjob.forecasting.decoding import grammar_max_tokens

    g = Grammar(points=3, max_int_digits=3)
    out = generate(tiny_model, [tokenizer.encode("5.0,5.0;", add_special_tokens=False)], g, alphabet_ids(tokenizer),
                   tokenizer.pad_token_id, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert len(out.texts[0]) <= grammar_max_tokens(g) == 3 * 16 - 1


# --- sampling that does not depend on the device (SPEC §4) ------------------------------------------


def test_sampling_with_a_temperature_runs_on_every_device_and_is_reproducible(tiny_model, tokenizer, contexts, device):
    import copy

    model = copy.deepcopy(tiny_model).to(device)
    s = Job(temperature=0.2, samples=2, seed=5)
    first, second = (forecast_series(model, tokenizer, contexts[:3], HORIZON, s) for _ in range(2))
    assert first.parsed_ok.all() and first.texts == second.texts


def test_the_same_logits_give_the_same_tokens_on_every_device(device):
    from lvjob.forecasting.decoding import _choose

    logits = torch.randn(64, 13, generator=torch.Generator().manual_seed(0))
    allowed = torch.rand(64, 13, generator=torch.Generator().manual_seed(1)) < 0.6
    allowed[:, 0] = True
    on_cpu = _choose(logits, 0.2, torch.Generator().manual_seed(3), allowed)
    on_device = _choose(logits.to(device), 0.2, torch.Generator().manual_seed(3), allowed)
    assert on_device.device.type == "cpu" and torch.equal(on_cpu, on_device)
    assert allowed[torch.arange(64), on_cpu].all()  # never a token the grammar forbids


def test_forecasting_a_400_point_horizon_from_a_2000_point_file(tiny_model, tokenizer, tmp_path):
    """The KV cache is sized from the prompt and the grammar's longest text, never a fixed cap (one decimal: still
    16,000 tokens, for two thirds of the decoding's time)."""
    path = tmp_path / "long.h5"
    data.write(path, *data.generate(n_systems=4, n_points=2000, seed=0))
    lv = data.load(path)
    n_ctx = data.context_points(2000)
    job = Job(temperature=0.0, max_int_digits=1, text=TextSpec(decimals=1))
    out = forecast_series(tiny_model, tokenizer, lv.trajectories[:1, :n_ctx], 2000 - n_ctx, job)
    assert 2000 - n_ctx == 400 and out.parsed_ok.all() and out.predictions.shape == (1, 400, 2)


def test_a_prompt_processed_in_slices_gives_the_same_forecasts_as_one_pass(tiny_model, tokenizer, monkeypatch):
    import lvjob.forecasting.decoding

    g = Grammar(variables=2, decimals=3, max_int_digits=3, points=HORIZON)
    text = "0.571,0.772;0.506,0.776;0.446,0.761;0.399,0.735;0.365,0.703;"
    prompts = [tokenizer.encode(text[:k], add_special_tokens=False) for k in (60, 48, 36)]  # left-padded batch

    def texts():
        return generate(tiny_model, prompts, g, alphabet_ids(tokenizer), tokenizer.pad_token_id, temperature=0.0).texts

    one_pass = texts()
    monkeypatch.setattr(lvjob.forecasting.decoding, "PREFILL_CHUNK", 16)
    assert texts() == one_pass


def test_k_samples_from_one_prompt_pass_equal_k_samples_from_repeated_prompts(tiny_model, tokenizer):
    prompts = [tokenizer.encode("0.512,0.300;0.498,0.310;", add_special_tokens=False), tokenizer.encode("1.0,2.0;", add_special_tokens=False)]
    g, alphabet = Grammar(points=4), alphabet_ids(tokenizer)
    shared = generate(tiny_model, prompts, g, alphabet, tokenizer.pad_token_id, temperature=1.0,
                      generator=torch.Generator().manual_seed(0), copies=3)
    repeated = generate(tiny_model, [p for p in prompts for _ in range(3)], g, alphabet, tokenizer.pad_token_id,
                        temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert shared.texts == repeated.texts
    assert len(set(shared.texts[:3])) > 1  # the copies draw their own tokens


def test_forecast_with_k_samples_books_one_prompt_pass_per_series(tiny_model, tokenizer, contexts):
    from lvjob.run import cost
    from lvjob.run.job import Job

    out = forecast_series(tiny_model, tokenizer, contexts, HORIZON, Job(samples=4, temperature=1.0, eval_batch_size=6))
    assert out.samples.shape == (6, 4, HORIZON, 2) and out.parsed_ok.all()
    (prompts, width, new, vocab, copies), = out.batches
    assert (prompts, copies) == (6, 4)
    job = Job(model="tiny", samples=4, series=6)
    prompt, generation = cost.evaluation_flops(job, out.batches, 0)
    assert prompt == cost._forward("tiny", 6, width, 0, job.lora_targets, logits_vocab=vocab)
    assert generation == (cost._generation("tiny", 24, width, new, 0, job.lora_targets, vocab)
                          - cost._forward("tiny", 24, width, 0, job.lora_targets, logits_vocab=vocab))


def test_the_demo_model_forecasts_a_long_prompt_from_its_last_two_attention_windows(tokenizer):
    """tiny-lv's 2 layers each attend through a 128-token window (modelspec.DEMO_CONFIG), so its
    forecast depends on the last 2 x 128 tokens only, wherever they stand: a 1,200-token prompt is
    read as the short windows it was trained on. Full attention (`tiny`) reads the whole prompt."""
    from lvjob.data.llmtime import fit_scaler, render
    from lvjob.models.loading import random_model

    series = data.generate(3, 100, 0)[0].trajectories[0]
    ids = tokenizer.encode(render(fit_scaler(series).transform(series), 3) + ";", add_special_tokens=False)
    g, alphabet = Grammar(points=HORIZON), alphabet_ids(tokenizer)

    def read(model, prompt):
        with torch.no_grad():
            last = model(input_ids=torch.tensor([prompt])).logits[0, -1]
        return last, generate(model, [prompt], g, alphabet, tokenizer.pad_token_id, temperature=0.0).texts

    demo, full = random_model("tiny-lv", seed=0), random_model("tiny", seed=0)
    (whole, whole_text), (tail, tail_text) = read(demo, ids), read(demo, ids[-300:])
    assert len(ids) > 1000 and torch.allclose(whole, tail, atol=1e-4) and whole_text == tail_text
    assert not torch.allclose(read(full, ids)[0], read(full, ids[-300:])[0], atol=1e-2)
