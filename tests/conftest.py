import os

import pytest

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
