"""The model registry: one entry per model, and what the rest of the suite reads from it."""

import pytest

from lvjob.models.registry import MODEL_NAMES, MODELS, ModelChoice, config_dict


def test_the_names_are_the_registrys_and_a_config_is_a_copy():
    assert MODEL_NAMES == tuple(MODELS) == ("qwen2.5-0.5b", "qwen2.5-0.5b-random", "tiny", "tiny-lv")
    config_dict("tiny")["hidden_size"] = 1
    assert config_dict("tiny")["hidden_size"] == 64


def test_an_unknown_model_is_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'gpt2'; valid: qwen2.5-0.5b, qwen2.5-0.5b-random, tiny, tiny-lv"):
        config_dict("gpt2")


def test_only_the_hub_model_is_staged_and_only_the_demo_model_has_a_recipe():
    assert [n for n, m in MODELS.items() if m.staged] == ["qwen2.5-0.5b"]
    assert [n for n in MODEL_NAMES if ModelChoice(n).recipe] == ["tiny-lv"]
    assert ModelChoice("tiny-lv", path="/elsewhere").recipe is None  # weights from a folder: no recipe of ours


def test_built_models_have_folders_of_their_own():
    folders = [m.built.folder for m in MODELS.values() if m.built]
    assert len(folders) == len(set(folders)) == 2
