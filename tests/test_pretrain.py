"""The demo base model: a short pre-training of the tiny model on the training systems' text."""

import json

import torch

from lvjob.modelspec import demo_model_dir
from lvjob.pretrain import PretrainSpec, ensure_demo_model, pretrain

SMALL = PretrainSpec(steps=30, batch_size=4, context=64, systems=20, points=30)


def test_pretraining_lowers_the_loss_from_uniform_over_the_grammar():
    _, losses = pretrain(SMALL, log=lambda m: None)
    first, last = losses[0][1], losses[-1][1]
    assert abs(first - torch.log(torch.tensor(13.0)).item()) < 0.5  # ~uniform over 13 characters at the start
    assert last < first - 0.5


def test_pretraining_is_seeded():
    a, _ = pretrain(SMALL, log=lambda m: None)
    b, _ = pretrain(SMALL, log=lambda m: None)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_demo_model_is_built_once_and_loads_by_name():
    from lvjob.models import ModelChoice, load_model

    folder = ensure_demo_model(SMALL, log=lambda m: None)
    assert folder == demo_model_dir() and json.loads((folder / "pretraining.json").read_text())["spec"]["steps"] == 30
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert ensure_demo_model(SMALL, log=lambda m: None) == folder and (folder / "config.json").stat().st_mtime_ns == stamp
    model = load_model(ModelChoice("tiny-lv"))
    assert model.config.hidden_size == 64 and model.config.vocab_size == 151936
