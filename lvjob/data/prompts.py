"""The two prompt styles of SPEC §4, and the token counts the planner charges for them.

- plain: the rendered context ending with ';', continued by the model;
- instruct: a ChatML user turn asking for the next n points, then the assistant turn is generated.
"""

from __future__ import annotations

from lvjob.data.grammar import POINT_SEP

INSTRUCTION = (
    "I have time series for prey and predator populations. The data is formatted as: "
    "{series}; Predict the next {n} points in the same format. Only output the numbers."
)


def plain_prompt(series_text: str) -> str:
    return series_text + POINT_SEP


def instruct_messages(series_text: str, n_points: int) -> list[dict]:
    return [{"role": "user", "content": INSTRUCTION.format(series=series_text, n=n_points)}]


def instruct_prompt(tokenizer, series_text: str, n_points: int) -> str:
    """The full ChatML text (default system prompt, user turn, open assistant turn)."""
    return tokenizer.apply_chat_template(
        instruct_messages(series_text, n_points), tokenize=False, add_generation_prompt=True
    )


# --- token counts, without loading the tokenizer (tests pin them against the real one) ------------


def tokens_per_point(variables: int = 2, decimals: int = 3, int_digits: int = 1) -> int:
    """Tokens of one rendered point plus its ';' (Qwen2.5: one token per character here)."""
    return variables * (int_digits + 1 + decimals) + (variables - 1) + 1


# Tokens the instruct prompt adds around the series (system prompt, instruction words, ChatML
# markers) when n_points has two digits; tests/data/test_prompts.py checks it against the tokenizer.
INSTRUCT_OVERHEAD_TOKENS = 63


def prompt_tokens(style: str, context_points: int, horizon_points: int, decimals: int = 3, variables: int = 2,
                  int_digits: int = 1) -> int:
    """Tokens of a prompt holding `context_points` points of values with `int_digits` integer digits
    (one, as scaled series have: LLMTIME's scaling puts shown values near 0.2..1.1)."""
    series = context_points * tokens_per_point(variables, decimals, int_digits)  # includes the final ';'
    if style == "plain":
        return series
    if style == "instruct":
        digits_extra = len(str(horizon_points)) - 2
        return series + INSTRUCT_OVERHEAD_TOKENS + digits_extra
    raise ValueError(f"prompt style {style!r}: valid: plain, instruct")


def forecast_tokens(horizon_points: int, decimals: int = 3, variables: int = 2, int_digits: int = 1) -> int:
    """Tokens generated for a forecast: the horizon's points joined by ';' (no trailing one), every
    value with `int_digits` integer digits (the grammar's `max_int_digits` gives its longest)."""
    return horizon_points * tokens_per_point(variables, decimals, int_digits) - 1
