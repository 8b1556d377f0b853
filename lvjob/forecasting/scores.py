"""Scores of probabilistic forecasts on the original scale over the horizon (SPEC §4, issue 14).

Pure numpy functions of three arrays:

    samples   (series, k, horizon, 2)  k forecasts per series, NaN where a forecast is short
    truth     (series, horizon, 2)     what happened
    contexts  (series, context_points, 2)  what the forecaster saw (for MASE's scale)

Only series whose k samples are all complete are scored; the others are counted (`series` against
`scored_series`), never padded or partly scored, so every score of one call is over the same series.
A deterministic forecaster (a baseline) is scored as k = 1: its CRPS is then its MAE and its
10-90% interval is the forecast itself (coverage counts only exact hits).

`scores` returns, per variable (prey, predator) and overall: MAE, MSE, RMSE of the point forecast
(element-wise median of the samples), MASE, CRPS, the coverage of the 10-90% interval, and the MAE
by lead time (step 1 ... horizon); and each series' MAE with the overall MAE's standard error over
the series, on which comparisons between runs and choices rest (lvjob.results.uncertainty).
"""

from __future__ import annotations

import numpy as np

VARIABLES = ("prey", "predator")
SCORES = ("mae", "mse", "rmse", "mase", "crps", "coverage")  # the overall scores, in the tables' order
POINT_ERRORS = SCORES[:3]  # the point errors (Table 2)
INTERVAL = (0.1, 0.9)  # quantiles of the samples that bound the reported interval


def complete(samples: np.ndarray) -> np.ndarray:
    """(series,) bool: every sample of the series covers the whole horizon."""
    return ~np.isnan(samples).any(axis=(1, 2, 3))


def point_forecast(samples: np.ndarray) -> np.ndarray:
    """(series, horizon, 2): the element-wise median of the samples (LLMTIME's point forecast), of those
    that reach each point (NaN where none does: a short forecast is never padded)."""
    with np.errstate(all="ignore"):
        return np.nanmedian(samples, axis=1)


def interval(samples: np.ndarray, quantiles: tuple[float, float] = INTERVAL) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each (series, horizon, 2): quantiles of the samples (linear interpolation)."""
    lower, upper = np.quantile(samples, quantiles, axis=1)
    return lower, upper


def naive_scale(contexts: np.ndarray) -> np.ndarray:
    """(series, 2): mean absolute one-step change within each context (in-sample naive MAE)."""
    return np.abs(np.diff(contexts, axis=1)).mean(axis=1)


def crps(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(series, horizon, 2): CRPS of the samples' empirical distribution at each truth value.

    The estimator is the plain ensemble CRPS, E|X - y| - E|X - X'|/2 over the k samples, chosen over
    the library's "fair" one (and its "pwm" form, which is fair too): it is the exact CRPS of the
    forecast as issued, the empirical distribution from which the median and the interval are also
    taken, so a k = 1 (deterministic) forecast scores its absolute error and the baselines sit on
    the same scale as the model. The fair estimator targets the CRPS of the model's infinite-sample
    distribution instead and divides by k - 1, undefined for k = 1. Of the library's forms of the
    plain estimator, "qd" (quantile decomposition, its default) equals the energy form "nrg" to
    rounding but needs O(k) memory per value instead of O(k^2); naming it keeps a change of the
    library's default from changing our numbers.
    """
    import scoringrules as sr

    # numpy backend: with numba installed the library would JIT-compile first (seconds, for nothing).
    return np.asarray(sr.crps_ensemble(truth, samples, m_axis=1, estimator="qd", backend="numpy"))


def mase_ratios(abs_err: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(series, 2): each series' MAE per variable over its naive scale; NaN where the scale is 0.

    A constant context (scale 0) gives no unit to measure the error in: its MASE is left out of
    the means (NaN here) and counted by `scores` as `mase_unscaled`, rather than divided by zero
    or by an arbitrary floor that would let one flat series dominate the mean.
    """
    mae = abs_err.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, mae / np.where(scale > 0, scale, 1.0), np.nan)


def _mean_or_none(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else None


def _summary(abs_err: np.ndarray, crps_values: np.ndarray, covered: np.ndarray, ratios: np.ndarray) -> dict:
    """The scalar scores of one selection (a variable, or all) of the element-wise arrays."""
    mse = float((abs_err**2).mean())
    return {"mae": float(abs_err.mean()), "mse": mse, "rmse": float(np.sqrt(mse)),
            "mase": _mean_or_none(ratios), "crps": float(crps_values.mean()), "coverage": float(covered.mean())}


def _per_series(series_mae: np.ndarray, ok: np.ndarray) -> dict:
    """Each series' MAE in series order (None where unscored), for paired comparisons between runs on the same
    series, and the overall MAE's standard error over the scored series (None for one)."""
    full = [None] * len(ok)
    for i, value in zip(np.flatnonzero(ok), series_mae):
        full[i] = float(value)
    se = float(series_mae.std(ddof=1) / np.sqrt(len(series_mae))) if len(series_mae) > 1 else None
    return {"series_mae": full, "mae_se": se}


def lead_time_mae(abs_err: np.ndarray) -> dict:
    """MAE per forecast step 1 ... horizon: lists under "overall" and each variable's name."""
    out = {"overall": abs_err.mean(axis=(0, 2)).tolist()}
    return out | {name: abs_err[..., j].mean(axis=0).tolist() for j, name in enumerate(VARIABLES)}




def _unscored(n_series: int, horizon: int) -> dict:
    """The result when no series is complete: every score None, the counts still told."""
    none = dict.fromkeys(SCORES)
    return {"series": n_series, "scored_series": 0, "samples": None, "mase_unscaled": 0, **none,
            "series_mae": [None] * n_series, "mae_se": None,
            **{name: dict(none) for name in VARIABLES}, "lead_time_mae": None, "horizon": horizon}


def scores(samples: np.ndarray, truth: np.ndarray, contexts: np.ndarray) -> dict:
    """Every score of SPEC §4 over the series whose samples are all complete (see module docstring)."""
    _check_shapes(samples, truth, contexts)
    ok = complete(samples)
    if not ok.any():
        return _unscored(len(samples), truth.shape[1])
    samples, truth, contexts = samples[ok], truth[ok], contexts[ok]
    abs_err = np.abs(point_forecast(samples) - truth)
    lower, upper = interval(samples)
    covered = (lower <= truth) & (truth <= upper)
    crps_values, ratios = crps(samples, truth), mase_ratios(abs_err, naive_scale(contexts))
    out = {"series": int(len(ok)), "scored_series": int(ok.sum()), "samples": int(samples.shape[1]),
           "mase_unscaled": int(np.isnan(ratios).sum()), "horizon": int(truth.shape[1])}
    out |= _summary(abs_err, crps_values, covered, ratios) | _per_series(abs_err.mean(axis=(1, 2)), ok)
    for j, name in enumerate(VARIABLES):
        out[name] = _summary(abs_err[..., j], crps_values[..., j], covered[..., j], ratios[:, j])
    return out | {"lead_time_mae": lead_time_mae(abs_err)}


def _check_shapes(samples: np.ndarray, truth: np.ndarray, contexts: np.ndarray) -> None:
    n, _, h, v = samples.shape
    if truth.shape != (n, h, v) or contexts.ndim != 3 or contexts.shape[0] != n or contexts.shape[2] != v:
        raise ValueError(f"scores: samples {samples.shape}, truth {truth.shape} and contexts {contexts.shape} do not "
                         "match; valid: (series, k, horizon, 2), (series, horizon, 2), (series, context_points, 2)")
    if contexts.shape[1] < 2:
        raise ValueError(f"scores: contexts have {contexts.shape[1]} point(s); MASE needs at least 2")
