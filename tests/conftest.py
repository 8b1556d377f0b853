import os
from pathlib import Path

import pytest
import torch

# Every device this machine has: tests that take the `device` fixture run on each (CUDA where present),
# so a GPU machine runs the same tests (`make device-check` selects them with `-m device`).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Tests never reach the Hugging Face hub: everything they load is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory):
    """One cache (tokenizer, tiny model) for the whole test session, never the user's."""
    if "LVJOB_TEST_CACHE" in os.environ:  # reuse a built cache between local runs
        os.environ["LVJOB_CACHE"] = os.environ["LVJOB_TEST_CACHE"]
    else:
        os.environ["LVJOB_CACHE"] = str(tmp_path_factory.mktemp("lvjob-cache"))
    yield


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small Lotka-Volterra file: 20 systems (16 train / 4 validation) x 30 points."""
    from lvjob import data

    path = tmp_path_factory.mktemp("data") / "lv-small.h5"
    lv, params = data.generate(n_systems=20, n_points=30, seed=0)
    data.write(path, lv, params)
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from lvjob.data.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny model with its seeded random weights (never trained)."""
    from lvjob.models.loading import ModelChoice, load_model

    return load_model(ModelChoice("tiny")).eval()


@pytest.fixture(scope="session", params=DEVICES)
def device(request) -> str:
    return request.param


def pytest_collection_modifyitems(items):
    """Tests that run on every available device carry the `device` marker."""
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)
