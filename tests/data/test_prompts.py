"""SPEC §4 prompts, and the token counts the planner charges for them (pinned to the real tokenizer)."""

import numpy as np
import pytest

from lvjob.data.llmtime import render
from lvjob.data.prompts import INSTRUCTION, forecast_tokens, instruct_prompt, plain_prompt, prompt_tokens


def _series(points: int) -> str:
    rng = np.random.default_rng(points)
    return render(rng.uniform(0.2, 1.1, size=(points, 2)))


def test_plain_prompt_is_the_context_ending_with_a_point_separator():
    assert plain_prompt("0.1,0.2;0.3,0.4") == "0.1,0.2;0.3,0.4;"


def test_instruct_prompt_is_a_chatml_user_turn_with_the_spec_wording(tokenizer):
    text = instruct_prompt(tokenizer, "0.100,0.200", 7)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert ("<|im_start|>user\n" + INSTRUCTION.format(series="0.100,0.200", n=7) + "<|im_end|>") in text
    assert "The data is formatted as: 0.100,0.200; Predict the next 7 points in the same format. Only output the numbers." in text


@pytest.mark.parametrize("points, horizon", [(80, 20), (24, 6), (10, 100)])
def test_prompt_token_counts_match_the_tokenizer(tokenizer, points, horizon):
    series = _series(points)
    plain = tokenizer.encode(plain_prompt(series), add_special_tokens=False)
    instruct = tokenizer.encode(instruct_prompt(tokenizer, series, horizon), add_special_tokens=False)
    assert prompt_tokens("plain", points, horizon) == len(plain)
    assert prompt_tokens("instruct", points, horizon) == len(instruct)


def test_forecast_token_count_matches_the_tokenizer(tokenizer):
    assert forecast_tokens(20) == len(tokenizer.encode(_series(20), add_special_tokens=False)) == 239
