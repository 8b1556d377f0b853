"""LLMTIME: numbers as text. Scale each series, render it with fixed decimals, parse it back.

Scaling (SPEC §3), per variable, fitted only on what the model is shown:

    offset = min(x) - beta * (max(x) - min(x))
    scale  = quantile_alpha(x - offset)
    x'     = (x - offset) / scale

With beta > 0 every shown value maps above zero, so rendered text never needs a sign. Arrays are
(time points, variables); a 1-D array is one variable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvjob.data import grammar
from lvjob.core.config import require
from lvjob.data.grammar import POINT_SEP, VALUE_SEP, Grammar

ALPHA = 0.99
BETA = 0.3
DECIMALS = 3


@dataclass(frozen=True)
class TextSpec:
    """How a study or job writes numbers as text: decimals, and the scaler's alpha and beta."""

    decimals: int = DECIMALS
    alpha: float = ALPHA
    beta: float = BETA

    def __post_init__(self) -> None:
        require(1 <= self.decimals <= 8, "text.decimals", self.decimals, "integers 1..8")
        require(0 < self.alpha <= 1, "text.alpha", self.alpha, "0 < alpha <= 1")
        require(self.beta >= 0, "text.beta", self.beta, "beta >= 0")


@dataclass(frozen=True)
class Scaler:
    """Per-variable affine map; `offset` and `scale` have one entry per variable."""

    offset: np.ndarray
    scale: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.offset) / self.scale

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float64) * self.scale + self.offset

    def to_dict(self) -> dict:
        return {"offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(np.asarray(d["offset"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64))


def fit_scaler(x: np.ndarray, alpha: float = ALPHA, beta: float = BETA) -> Scaler:
    """Fit the LLMTIME scaler on `x` (time points, variables), one (offset, scale) per variable.

    A constant variable has zero range; its range is replaced by |value| (or 1 for a constant zero)
    so it still gets a positive scale and renders as a steady number, never a division by zero.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    x = _as_2d(x)
    if x.shape[0] == 0:
        raise ValueError("cannot fit a scaler on an empty series")
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = hi - lo
    span = np.where(span > 0, span, np.where(lo != 0, np.abs(lo), 1.0))
    offset = lo - beta * span
    scale = np.quantile(x - offset, alpha, axis=0)
    # beta = 0 with most values at the minimum can still give a zero quantile.
    scale = np.where(scale > 0, scale, span)
    return Scaler(offset=offset, scale=scale)


def render(values: np.ndarray, decimals: int = DECIMALS) -> str:
    """Scaled values (time points, variables) -> 'v,v;v,v;...' with fixed decimals, no trailing ';'."""
    values = _as_2d(values)
    if decimals < 1:
        raise ValueError(f"decimals must be >= 1, got {decimals}")
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot render non-finite values")
    if np.any(np.round(values, decimals) < 0):
        raise ValueError("cannot render negative values: LLMTIME text has no sign (fit the scaler on this series)")
    fmt = f"{{:.{decimals}f}}"
    return POINT_SEP.join(VALUE_SEP.join(fmt.format(v) for v in row) for row in values)


@dataclass(frozen=True)
class Parsed:
    """The complete points parsed from the start of a text, and where the text stopped being valid.

    `error_at` is the index of the first character that breaks the grammar, or len(text) when the
    text ends in the middle of a point; None when the whole text is well formed.
    """

    values: np.ndarray  # (complete points, variables)
    error_at: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_at is None


def parse(text: str, variables: int = 2, decimals: int = DECIMALS, max_int_digits: int = 15) -> Parsed:
    """Parse LLMTIME text; the exact inverse of `render` on well-formed text.

    A trailing ';' is accepted. Malformed text yields the points before the first error, with the
    error's position and what was expected there.
    """
    g = Grammar(variables=variables, decimals=decimals, max_int_digits=max_int_digits)
    state = grammar.START
    points: list[list[float]] = []
    current: list[float] = []
    token_start = 0
    for i, ch in enumerate(text):
        nxt = grammar.step(g, state, ch)
        if nxt is None:
            return _stop(points, variables, i, f"at character {i}: expected {grammar.describe(g, state)}, got {ch!r}")
        if ch in (VALUE_SEP, POINT_SEP):
            current.append(float(text[token_start:i]))
            token_start = i + 1
            if ch == POINT_SEP:
                points.append(current)
                current = []
        state = nxt
    end = len(text)
    if state.var == 0 and not state.value_started and points:  # ended right after ';'
        return Parsed(np.asarray(points, dtype=np.float64).reshape(-1, variables))
    if state.point == len(points) and state.var == variables - 1 and grammar.allowed(g, state) == POINT_SEP:
        points.append(current + [float(text[token_start:end])])
        return Parsed(np.asarray(points, dtype=np.float64).reshape(-1, variables))
    if not text:
        return _stop(points, variables, 0, "empty text")
    return _stop(points, variables, end, f"text ends inside point {len(points) + 1}: expected {grammar.describe(g, state)}")


def _stop(points: list[list[float]], variables: int, at: int, why: str) -> Parsed:
    return Parsed(np.asarray(points, dtype=np.float64).reshape(-1, variables), error_at=at, error=why)


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected (time points, variables), got shape {x.shape}")
    return x
