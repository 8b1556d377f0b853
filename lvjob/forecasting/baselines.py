"""Baseline forecasters (SPEC §4, issue 14): persistence, a classical statistical one, physics.

Every forecaster has the signature

    forecaster(contexts (series, context_points, 2), context_times (context_points,),
               horizon_times (horizon,)) -> predictions (series, horizon, 2)

with the times as `lvjob.data.dataset` stores them (one `time` array for all systems, split like the
trajectories by `data.split_time`). The `*_fit` variants return a `BaselineForecast` that also says
which series fell back to persistence because their fit failed (never silently: count them).

- persistence: the last observed point repeated (the floor to beat).
- statistical: an autoregression AR(p) per series and variable, fitted by OLS on the context
  only, its order p <= MAX_LAG chosen by AIC (statsmodels `ar_select_order` + `AutoReg`): a
  Box-Jenkins ARIMA(p, 0, 0) with automatic order. Chosen after measuring, on this 2-core machine
  (heavily shared while measured), 100 series x 2 variables x 80 context points, horizon 20, data seed 0:

      library (install: size, time)    model                        fit wall   MAE    (persistence 0.546)
      statsmodels 0.15 (+168 MB, 17 s) AR(p), p by AIC <= 10        1.0 s      0.045
                                       ETS damped additive trend    11 s       1.00
                                       ARIMA(2,0,1) / (4,0,0) MLE   190 / 220 s 0.22 / 0.16
      statsforecast 2.1 (+352 MB, 20 s) AutoETS                     1.1 s      0.58
                                       AutoARIMA                    60 s       0.34

  statsforecast depends on statsmodels itself (plus pandas, pyarrow, fugue), so it can only add to
  the install; it no longer uses numba, so there is no JIT cost either way. ETS cannot oscillate
  and lands at or above persistence on these cycles; an AR(p) can (complex roots) and is the
  fastest and most accurate of them. ARIMA's state-space MLE adds nothing here for 200x the time.
- physics: the Lotka-Volterra model dx/dt = a x - b x y, dy/dt = d x y - g y fitted to each
  context by least squares (`scipy.optimize.least_squares`, trust-region reflective) over
  `solve_ivp` (DOP853 at FIT_RTOL/FIT_ATOL; the forecast itself at the generator's), parameters and initial state as logarithms
  (positive by construction, bounded to keep the solver out of stiff or runaway regimes), the
  Jacobian from the forward sensitivity equations (one solve per step instead of seven). The first
  guess comes from the model being linear in its rates along a known path, d ln x/dt = a - b y,
  d ln y/dt = d x - g, regressed on finite differences of the context; a second start from the
  middle of the generator's ranges is tried only when the first does not fit. Each start may spend
  START_BUDGET evaluations of the right-hand side (a count, so the bound and the forecast are the
  same on every machine); the fit is the best point any trial reached, and its RMS residual on the
  context over the context's mean (`residual`) says how well the model describes the series: Table 3
  reports its median and the series that fell back. The series are independent: a baseline job
  spreads them over its CPUs (`map_series`, a process pool). The fit's tolerances were chosen by
  measuring (benchmarks/baseline_bench.py, tests/forecasting/test_baselines.py): on generated data rtol 1e-8
  moves the forecast by at most 4e-9 of a series' scale against 1e-10, horizon MAE 6e-10.
  benchmarks/baseline_bench.py on this 2-core machine, 2 processes, idle: 100 generated series in
  5.9 s (none fell back, MAE 7e-10); 100 series of a logistic-prey file over time 0..200 in 24 s
  (none fell back, median residual 0.31: not a Lotka-Volterra orbit), where the code before the
  budget took 58 s for 10 of them on one process and fell back on 8.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lvjob.data.ode import ATOL, PARAM_RANGE, RTOL

MAX_LAG = 10  # AR order search: 10 steps at 100 points are 3 time units, a third of a cycle or more
MAX_NFEV = 50  # least-squares evaluations per start: a clean fit from the regression guess takes 5-6
START_BUDGET = 20_000  # right-hand-side evaluations per start (a clean fit takes 5,000-10,000): the same bound on every machine
FIT_RTOL, FIT_ATOL = 1e-8, 1e-10  # the fit's solver tolerances (the final forecast uses the generator's)
RATE_BOUNDS = (1e-3, 1e2)  # the rates a, b, d, g; far wider than PARAM_RANGE, for other data
STATE_BOUNDS = (1e-2, 1e2)  # the initial state, relative to the context's largest population
CLEAN_FIT = 1e-6  # RMS residual relative to the context's mean below which no restart is tried


@dataclass(frozen=True)
class BaselineForecast:
    predictions: np.ndarray  # (series, horizon, 2)
    fell_back: np.ndarray  # (series,) bool: the fit failed and persistence stands in
    params: np.ndarray | None = None  # physics only: (series, 6) a, b, d, g, x0, y0; NaN where fell back
    residual: np.ndarray | None = None  # physics only: (series,) RMS residual of the fit on the context / its mean


# --- persistence ---------------------------------------------------------------------------------


def repeat_last(contexts: np.ndarray, horizon_points: int) -> np.ndarray:
    """(series, horizon, 2): the last observed point of each context repeated."""
    return np.repeat(contexts[:, -1:, :], horizon_points, axis=1)


def _with_fallback(contexts: np.ndarray, horizon: int, fit_one) -> tuple[np.ndarray, np.ndarray]:
    """Apply fit_one(series index) -> (horizon, 2) or None; persistence where it is None."""
    predictions, fell_back = repeat_last(contexts, horizon), np.zeros(len(contexts), dtype=bool)
    for i in range(len(contexts)):
        forecast = fit_one(i)
        if forecast is None or not np.isfinite(forecast).all():
            fell_back[i] = True
        else:
            predictions[i] = forecast
    return predictions, fell_back


# --- statistical: AR(p) with the order chosen by AIC ---------------------------------------------


def _check_uniform_steps(context_times: np.ndarray, horizon_times: np.ndarray) -> None:
    """An AR model counts steps, not time: the horizon must continue the context's grid."""
    times = np.concatenate([context_times, horizon_times])
    step = np.diff(times)
    if len(step) and not np.allclose(step, step[0], rtol=1e-6, atol=0):
        raise ValueError("statistical baseline: context and horizon times must be one uniform grid")


def ar_forecast(y: np.ndarray, steps: int, max_lag: int = MAX_LAG) -> np.ndarray:
    """(steps,): AR(p) forecast of one series, p <= max_lag chosen by AIC, OLS fit with a constant."""
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    # AIC needs a few observations per lag beyond the largest lag searched.
    max_lag = min(max_lag, (len(y) - 2) // 3)
    with warnings.catch_warnings():  # short or flat contexts warn per fit; failures are counted instead
        warnings.simplefilter("ignore")
        lags = ar_select_order(y, maxlag=max_lag, ic="aic", trend="c").ar_lags if max_lag > 0 else None
        return np.asarray(AutoReg(y, lags=lags or 0, trend="c").fit().forecast(steps))


def _ar_or_none(context: np.ndarray, steps: int) -> np.ndarray | None:
    try:
        return np.stack([ar_forecast(context[:, j], steps) for j in range(context.shape[1])], axis=1)
    except (ValueError, np.linalg.LinAlgError):
        return None


def autoregressive_fit(contexts: np.ndarray, context_times: np.ndarray, horizon_times: np.ndarray,
                       map_series=map) -> BaselineForecast:
    """AR(p) per series and variable on its context only (see the module docstring), spread by `map_series`."""
    _check_uniform_steps(np.asarray(context_times), np.asarray(horizon_times))
    steps = len(horizon_times)
    fits = list(map_series(_ar_or_none, list(contexts), [steps] * len(contexts)))
    predictions, fell_back = _with_fallback(contexts, steps, lambda i: fits[i])
    return BaselineForecast(predictions, fell_back)


# --- physics: Lotka-Volterra fitted by least squares ---------------------------------------------


def _rhs_with_sensitivities(t: float, w: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The LV state (2) and its sensitivities S = dz/d(a, b, d, g, x0, y0) (2 x 6), flattened."""
    a, b, d, g = p
    x, y = w[0], w[1]
    s = w[2:].reshape(2, 6)
    jac = np.array([[a - b * y, -b * x], [d * y, d * x - g]])
    forcing = np.zeros((2, 6))
    forcing[0, :2] = x, -x * y
    forcing[1, 2:4] = x * y, -y
    return np.concatenate([[a * x - b * x * y, d * x * y - g * y], (jac @ s + forcing).ravel()])


class Exhausted(RuntimeError):
    """A series' fit spent its budget of right-hand-side evaluations."""


@dataclass
class Search:
    """One series' fit across its starts: the evaluations the current start has left, and the best point any
    trial reached."""

    left: int = START_BUDGET
    cost: float = np.inf  # sum of squared residuals at `theta`
    theta: np.ndarray | None = None

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise Exhausted(f"{START_BUDGET} right-hand-side evaluations spent")

    def offer(self, theta: np.ndarray, residuals: np.ndarray) -> None:
        cost = float(residuals @ residuals)
        if np.isfinite(cost) and cost < self.cost:
            self.cost, self.theta = cost, theta.copy()

    def relative_residual(self, context: np.ndarray) -> float:
        """RMS residual of the best point over the context's mean population (NaN before any)."""
        return float(np.sqrt(self.cost / context.size) / context.mean()) if self.theta is not None else np.nan


def simulate(params: np.ndarray, times: np.ndarray, search: Search | None = None) -> tuple[np.ndarray, np.ndarray]:
    """States (points, 2) and sensitivities (points, 2, 6) from params (a, b, d, g, x0, y0) at times[0].

    With `search` (a fit's trial): the fit's tolerances, each evaluation counted against its budget.
    Raises RuntimeError when the solver fails (e.g. a runaway trial during the fit), Exhausted past the budget.
    """
    from scipy.integrate import solve_ivp

    def rhs(t, w, p):
        search.spend()
        return _rhs_with_sensitivities(t, w, p)

    w0 = np.concatenate([params[4:6], np.eye(2, 6, 4).ravel()])
    rtol, atol = (FIT_RTOL, FIT_ATOL) if search else (RTOL, ATOL)
    sol = solve_ivp(rhs if search else _rhs_with_sensitivities, (times[0], times[-1]), w0, method="DOP853",
                    t_eval=times, rtol=rtol, atol=atol, args=(params[:4],))
    if not sol.success or sol.y.shape[1] != len(times):
        raise RuntimeError(f"Lotka-Volterra integration failed: {sol.message}")
    return sol.y[:2].T, sol.y[2:].T.reshape(-1, 2, 6)


def initial_guess(context: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(6,): rates regressed from d ln x/dt = a - b y, d ln y/dt = d x - g; state = first point."""
    rates = np.gradient(np.log(np.maximum(context, 1e-12)), times, axis=0)
    x, y, one = context[:, 0], context[:, 1], np.ones(len(context))
    (a, minus_b), *_ = np.linalg.lstsq(np.stack([one, -y], axis=1), rates[:, 0], rcond=None)
    (d, minus_g), *_ = np.linalg.lstsq(np.stack([x, -one], axis=1), rates[:, 1], rcond=None)
    guess = np.array([a, minus_b, d, minus_g])
    return np.concatenate([np.clip(guess, *RATE_BOUNDS), context[0]])


def _log_bounds(context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = context.max()
    low = np.r_[[RATE_BOUNDS[0]] * 4, [STATE_BOUNDS[0] * top] * 2]
    high = np.r_[[RATE_BOUNDS[1]] * 4, [STATE_BOUNDS[1] * top] * 2]
    return np.log(low), np.log(high)


def _least_squares(context: np.ndarray, times: np.ndarray, start: np.ndarray, search: Search) -> None:
    """One least-squares fit in log-parameters from `start`; every point it tries is offered to `search`."""
    from scipy.optimize import least_squares

    last: dict = {}

    def solved(theta):  # scipy asks for residuals then the Jacobian at the same point: solve once
        if last.get("theta") is None or not np.array_equal(last["theta"], theta):
            last.update(theta=theta.copy(), out=simulate(np.exp(theta), times, search))
            search.offer(theta, (last["out"][0] - context).ravel())
        return last["out"]

    def residuals(theta):
        return (solved(theta)[0] - context).ravel()

    def jacobian(theta):  # chain rule through exp: dz/dtheta = dz/dp * p
        return (solved(theta)[1] * np.exp(theta)).reshape(-1, 6)

    low, high = _log_bounds(context)
    theta0 = np.clip(np.log(np.maximum(start, 1e-300)), low + 1e-9, high - 1e-9)  # a zero start: the bound
    least_squares(residuals, theta0, jac=jacobian, bounds=(low, high), method="trf", max_nfev=MAX_NFEV, x_scale="jac")


def _starts(context: np.ndarray, times: np.ndarray):
    yield initial_guess(context, times)
    yield np.r_[[np.mean(PARAM_RANGE)] * 4, context[0]]


def fit_lotka_volterra(context: np.ndarray, times: np.ndarray) -> tuple[np.ndarray | None, float]:
    """(a, b, d, g, x0, y0 at times[0]) of the best point any start reached, or None; and its relative residual.

    A start that stops at its iteration limit or its evaluation budget still offers the best point it
    reached: on data the model does not describe exactly, that is the fit there is.
    """
    if not context.max() > 0:  # no population anywhere: no orbit to fit, nor a scale for the bounds
        return None, np.nan
    search = Search()
    for start in _starts(context, times):
        search.left = START_BUDGET
        try:
            _least_squares(context, times, start, search)
        except (Exhausted, RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        if search.relative_residual(context) < CLEAN_FIT:
            break
    return (None if search.theta is None else np.exp(search.theta)), search.relative_residual(context)


def physics_one(context: np.ndarray, context_times: np.ndarray, horizon_times: np.ndarray):
    """One series: (horizon forecast or None, parameters or None, relative residual of the fit on the context)."""
    params, residual = fit_lotka_volterra(context, context_times)
    if params is None:
        return None, None, residual
    try:
        states = simulate(params, np.concatenate([context_times[:1], horizon_times]))[0]
    except RuntimeError:
        return None, None, residual
    return states[1:], params, residual


def lotka_volterra_fit(contexts: np.ndarray, context_times: np.ndarray, horizon_times: np.ndarray,
                       map_series=map) -> BaselineForecast:
    """Fit LV parameters and initial state to each context (spread by `map_series`), integrate over the horizon."""
    context_times, horizon_times = np.asarray(context_times, float), np.asarray(horizon_times, float)
    n = len(contexts)
    fits = list(map_series(physics_one, list(contexts), [context_times] * n, [horizon_times] * n))
    predictions, fell_back = _with_fallback(contexts, len(horizon_times), lambda i: fits[i][0])
    params = np.array([f[1] if f[1] is not None else np.full(6, np.nan) for f in fits]).reshape(n, 6)
    params[fell_back] = np.nan
    return BaselineForecast(predictions, fell_back, params, residual=np.array([f[2] for f in fits], dtype=float))


def persistence_fit(contexts: np.ndarray, context_times: np.ndarray, horizon_times: np.ndarray,
                    map_series=map) -> BaselineForecast:
    """The floor to beat: the last observed point repeated over the horizon; it never falls back."""
    return BaselineForecast(repeat_last(contexts, len(horizon_times)), np.zeros(len(contexts), dtype=bool))


@dataclass(frozen=True)
class Baseline:
    fit: Callable[..., BaselineForecast]  # (contexts, context times, horizon times, map_series=map)
    label: str  # how Table 3 names its row


# The study's baselines by name (a baseline job's `forecaster`): the study runs one job for each.
BASELINES = {
    "persistence": Baseline(persistence_fit, "persistence (last point repeated)"),
    "statistical": Baseline(autoregressive_fit, "statistical: AR(p), p by AIC"),
    "physics": Baseline(lotka_volterra_fit, "physics: Lotka-Volterra fit"),
}


def forecast_with(name: str, contexts: np.ndarray, context_times: np.ndarray, horizon_times: np.ndarray,
                  map_series=map) -> BaselineForecast:
    """The named baseline's forecast of every context, with the series that fell back to persistence.
    `map_series` (builtins.map, or a process pool's) spreads the series' fits, which are independent."""
    return BASELINES[name].fit(contexts, context_times, horizon_times, map_series)
