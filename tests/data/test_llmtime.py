import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lvjob.data import grammar
from lvjob.data.grammar import Grammar
from lvjob.data.llmtime import Scaler, fit_scaler, parse, render

populations = arrays(
    np.float64,
    st.tuples(st.integers(1, 40), st.just(2)),
    elements=st.floats(0.0, 1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False),
)


def test_render_matches_the_spec_example():
    x = np.array([[0.571, 0.772], [0.506, 0.776], [0.446, 0.761]])
    assert render(x) == "0.571,0.772;0.506,0.776;0.446,0.761"


def test_scaler_follows_the_spec_formula():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    s = fit_scaler(x, alpha=0.99, beta=0.3)
    offset = 1.0 - 0.3 * 4.0
    assert s.offset[0] == pytest.approx(offset)
    assert s.scale[0] == pytest.approx(np.quantile(x - offset, 0.99))


def test_scaler_is_fitted_per_variable():
    x = np.stack([np.linspace(0, 1, 10), np.linspace(100, 300, 10)], axis=1)
    s = fit_scaler(x)
    assert np.allclose(s.transform(x)[:, :1], fit_scaler(x[:, :1]).transform(x[:, :1]))
    assert np.allclose(s.transform(x)[:, 1:], fit_scaler(x[:, 1:]).transform(x[:, 1:]))


@given(populations)
def test_scaled_shown_values_are_positive_and_finite(x):
    y = fit_scaler(x).transform(x)
    assert np.all(np.isfinite(y)) and np.all(y > 0)


@pytest.mark.parametrize("value", [0.0, 2.5, 1e4])
def test_constant_series_scales_without_dividing_by_zero(value):
    x = np.full((20, 2), value)
    y = fit_scaler(x).transform(x)
    assert np.all(np.isfinite(y)) and np.allclose(y, y[0])
    assert render(y)  # renders without a sign


@given(populations)
def test_scaler_inverse_maps_back_to_population_units(x):
    s = fit_scaler(x)
    assert np.allclose(s.inverse(s.transform(x)), x, rtol=1e-9, atol=1e-9)


def test_scaler_survives_a_json_round_trip():
    s = fit_scaler(np.array([[1.0, 5.0], [2.0, 9.0], [4.0, 7.0]]))
    t = Scaler.from_dict(s.to_dict())
    assert np.array_equal(s.offset, t.offset) and np.array_equal(s.scale, t.scale)


@given(populations, st.integers(1, 5))
def test_parse_inverts_render_on_scaled_series(x, decimals):
    y = fit_scaler(x).transform(x)
    text = render(y, decimals)
    parsed = parse(text, decimals=decimals)
    assert parsed.ok
    assert np.allclose(parsed.values, y, rtol=0, atol=0.5 * 10.0**-decimals + 1e-12)
    assert render(parsed.values, decimals) == text


@given(st.lists(st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999), st.integers(0, 999)), min_size=1, max_size=30))
def test_render_inverts_parse_on_well_formed_text(rows):
    text = ";".join(f"{a}.{b:03d},{c}.{d:03d}" for a, b, c, d in rows)
    parsed = parse(text)
    assert parsed.ok and render(parsed.values) == text


def test_parse_accepts_one_trailing_point_separator():
    assert parse("0.500,0.250;").ok
    assert parse("0.500,0.250;").values.tolist() == [[0.5, 0.25]]


@pytest.mark.parametrize(
    "text, kept, error_at",
    [
        ("0.571,0.772;0.5", 1, 15),  # ends inside a value
        ("0.571,0.772;0.5x6,0.1", 1, 15),  # a stray character
        ("0.571,0.772;0.506;0.1", 1, 17),  # a point with one value
        ("0.57,0.772", 0, 4),  # too few decimals
        ("0.5712,0.772", 0, 5),  # too many decimals
        ("0.571,0.772,0.1", 0, 11),  # three values in a point
        ("abc", 0, 0),
        ("", 0, 0),
    ],
)
def test_parse_of_malformed_text_returns_the_valid_prefix_and_where_it_stopped(text, kept, error_at):
    parsed = parse(text)
    assert not parsed.ok
    assert len(parsed.values) == kept
    assert parsed.error_at == error_at
    assert parsed.error


def test_parse_error_says_what_was_expected():
    parsed = parse("0.571;")
    assert "','" in parsed.error and "';'" in parsed.error


def test_render_refuses_negative_values():
    with pytest.raises(ValueError, match="negative"):
        render(np.array([[-0.5, 0.1]]))


def test_render_refuses_non_finite_values():
    with pytest.raises(ValueError, match="non-finite"):
        render(np.array([[np.nan, 0.1]]))


# --- the grammar that constrained decoding uses -------------------------------------------------


def _walk(g, text):
    s = grammar.START
    for ch in text:
        s = grammar.step(g, s, ch)
        if s is None:
            return None
    return s


def test_grammar_accepts_exactly_a_forecast_of_the_horizon():
    g = Grammar(variables=2, decimals=3, points=2)
    s = _walk(g, "0.571,0.772;0.506,0.776")
    assert s is not None and grammar.is_final(g, s) and grammar.allowed(g, s) == ""


def test_grammar_bounds_the_integer_digits():
    g = Grammar(max_int_digits=3)
    s = _walk(g, "999")
    assert grammar.allowed(g, s) == "."


def test_grammar_allows_no_leading_zeros_as_render_writes_none():
    g = Grammar(max_int_digits=3)
    assert grammar.allowed(g, _walk(g, "0")) == "."
    assert _walk(g, "07.5") is None
    assert grammar.allowed(g, _walk(g, "10")) == "0123456789."  # a zero after a first digit is fine


def test_parse_stops_at_a_leading_zero():
    parsed = parse("0.571,0.772;07.500,0.1")
    assert not parsed.ok and len(parsed.values) == 1 and parsed.error_at == 13


def test_grammar_forces_separators_after_the_decimals():
    g = Grammar(variables=2, decimals=3, points=3)
    assert grammar.allowed(g, _walk(g, "1.234")) == ","
    assert grammar.allowed(g, _walk(g, "1.234,0.001")) == ";"


def test_grammar_requires_at_least_one_decimal():
    with pytest.raises(ValueError, match="decimals"):
        Grammar(decimals=0)


@settings(max_examples=200)
@given(st.randoms(use_true_random=False), st.integers(1, 5), st.integers(1, 4), st.integers(1, 3))
def test_any_walk_the_grammar_allows_parses_completely(rnd, points, decimals, variables):
    g = Grammar(variables=variables, decimals=decimals, max_int_digits=3, points=points)
    s, text = grammar.START, ""
    while not grammar.is_final(g, s):
        ch = rnd.choice(grammar.allowed(g, s))
        text += ch
        s = grammar.step(g, s, ch)
    parsed = parse(text, variables=variables, decimals=decimals)
    assert parsed.ok and parsed.values.shape == (points, variables)
