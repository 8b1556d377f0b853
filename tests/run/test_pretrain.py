"""The demo base model: a short pre-training of the tiny model on the training systems' text."""

import dataclasses
import json
import math

import pytest

from lvjob.models.registry import DEMO_CONFIG, DEMO_RECIPE_KEY, TINY_CONFIG, demo_model_dir
from lvjob.run.pretrain import PretrainSpec, ensure_demo_model, lr_factor, pretrain, recipe_key, training_text

# A few hundred tokens a step over a handful of systems: seconds, and still enough steps to see the loss fall.
SMALL = PretrainSpec(steps=20, batch_size=2, context=64, lr=1e-2, warmup=2, systems=20, points=30)


@pytest.fixture(scope="module")
def small_run():
    return pretrain(SMALL, log=lambda m: None)


def test_pretraining_starts_at_uniform_over_the_whole_vocabulary_and_falls(small_run):
    _, losses = small_run
    first, last = losses[0][1], losses[-1][1]
    # ln(151,936) = 11.93: the random model spreads its guess over the full vocabulary, not the 13 grammar tokens (ln 13 = 2.6)
    assert abs(first - math.log(TINY_CONFIG["vocab_size"])) < 0.5
    assert last < first - 2.0


def test_pretraining_is_seeded(small_run):
    import torch

    a, _ = small_run
    b, _ = pretrain(SMALL, log=lambda m: None)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pretraining_reads_only_training_systems():
    from lvjob import data
    from lvjob.data.corpus import training_chunks
    from lvjob.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    lv, _ = data.generate(SMALL.systems, SMALL.points, SMALL.data_seed)
    train, val, test = data.split_systems(SMALL.systems, seed=SMALL.data_seed)
    chunks = training_text(SMALL, tokenizer)
    assert chunks == training_chunks(lv.trajectories, train, tokenizer, SMALL.context)
    for held_out in (val, test):
        assert not any(c in chunks for c in training_chunks(lv.trajectories, held_out, tokenizer, SMALL.context))


def test_learning_rate_warms_up_then_decays_to_zero():
    spec = PretrainSpec(steps=10, warmup=2)
    factors = [lr_factor(s, spec) for s in range(spec.steps)]
    assert factors[0] == 0.5 and factors[1] == 1.0
    assert all(a >= b for a, b in zip(factors[1:], factors[2:])) and 0 < factors[-1] < factors[2]


def test_each_recipe_has_its_own_cache_folder():
    assert recipe_key(SMALL) != recipe_key(dataclasses.replace(SMALL, lr=SMALL.lr / 2))
    assert demo_model_dir(recipe_key(SMALL)) != demo_model_dir(recipe_key(PretrainSpec()))


def test_tiny_lv_by_name_is_the_default_recipe():
    """modelspec names the default recipe's folder without importing torch; a changed recipe must
    change that name too, or `tiny-lv` would load a model built by the old recipe."""
    assert DEMO_RECIPE_KEY == recipe_key(PretrainSpec()), f"set lvjob.models.registry.DEMO_RECIPE_KEY = {recipe_key(PretrainSpec())!r}"
    assert demo_model_dir() == demo_model_dir(recipe_key(PretrainSpec()))


def test_the_demo_model_is_built_once_and_loads_from_its_folder():
    from lvjob.models.loading import ModelChoice, load_model

    folder = ensure_demo_model(SMALL, log=lambda m: None)
    record = json.loads((folder / "pretraining.json").read_text())
    assert folder == demo_model_dir(recipe_key(SMALL)) and record["spec"]["steps"] == SMALL.steps
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert ensure_demo_model(SMALL, log=lambda m: None) == folder and (folder / "config.json").stat().st_mtime_ns == stamp
    model = load_model(ModelChoice("tiny-lv", path=str(folder)))
    assert model.config.hidden_size == 64 and model.config.vocab_size == 151936
    assert model.config.sliding_window == DEMO_CONFIG["sliding_window"] and set(model.config.layer_types) == {"sliding_attention"}
