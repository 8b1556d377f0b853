"""Baseline forecasters (lvjob.forecasting.baselines) on clean generated Lotka-Volterra series."""

import numpy as np
import pytest

from lvjob.forecasting import baselines
from lvjob import data


@pytest.fixture(scope="module")
def clean():
    """Three generated systems at the study's grid (100 points over [0, 30]): context, horizon, truth."""
    lv, params = data.generate(n_systems=3, n_points=100, seed=3)
    contexts, truth = data.split_time(lv.trajectories)
    context_times, horizon_times = data.split_time(lv.time)
    return contexts, truth, context_times, horizon_times, params


def test_persistence_repeats_the_last_observed_point():
    contexts = np.arange(12, dtype=float).reshape(2, 3, 2)
    p = baselines.persistence_fit(contexts, np.arange(3.0), np.arange(3.0, 7.0)).predictions
    assert p.shape == (2, 4, 2) and (p == contexts[:, -1:, :]).all()


def test_physics_baseline_recovers_the_generating_parameters_and_forecasts_the_horizon(clean):
    contexts, truth, context_times, horizon_times, params = clean
    fit = baselines.lotka_volterra_fit(contexts, context_times, horizon_times)
    assert not fit.fell_back.any()
    np.testing.assert_allclose(fit.params, params, rtol=1e-6)
    np.testing.assert_allclose(fit.predictions, truth, rtol=1e-6, atol=1e-8)


def test_physics_fit_starts_from_a_guess_near_the_truth(clean):
    contexts, _, context_times, _, params = clean
    guess = baselines.initial_guess(contexts[0], context_times)
    np.testing.assert_allclose(guess[:4], params[0, :4], rtol=0.1)  # finite differences at dt = 0.3


def test_physics_fit_that_fails_falls_back_to_persistence_and_is_flagged(clean):
    contexts, _, context_times, horizon_times, _ = clean
    broken = contexts[:2].copy()
    broken[1] = 0.0  # no positive population: no Lotka-Volterra orbit, no bounds to fit within
    fit = baselines.lotka_volterra_fit(broken, context_times, horizon_times)
    assert fit.fell_back.tolist() == [False, True]
    assert (fit.predictions[1] == 0.0).all() and np.isnan(fit.params[1]).all()


def test_statistical_baseline_gives_finite_forecasts_of_the_horizons_shape(clean):
    contexts, truth, context_times, horizon_times, _ = clean
    fit = baselines.autoregressive_fit(contexts, context_times, horizon_times)
    assert fit.predictions.shape == truth.shape and np.isfinite(fit.predictions).all() and not fit.fell_back.any()
    # It follows the cycle rather than repeating the last point: closer to the truth than persistence.
    persistence = baselines.persistence_fit(contexts, context_times, horizon_times).predictions
    assert np.abs(fit.predictions - truth).mean() < np.abs(persistence - truth).mean()


def test_statistical_baseline_on_the_shortest_context_still_forecasts():
    lv, _ = data.generate(n_systems=3, n_points=data.MIN_POINTS, seed=0)
    contexts, truth = data.split_time(lv.trajectories)
    context_times, horizon_times = data.split_time(lv.time)
    p = baselines.autoregressive_fit(contexts, context_times, horizon_times).predictions
    assert p.shape == truth.shape and np.isfinite(p).all()


def test_statistical_baseline_refuses_a_horizon_off_the_context_grid(clean):
    contexts, _, context_times, horizon_times, _ = clean
    with pytest.raises(ValueError, match="uniform grid"):
        baselines.autoregressive_fit(contexts, context_times, horizon_times + 0.1)


def test_every_forecaster_has_the_common_signature(clean):
    contexts, truth, context_times, horizon_times, _ = clean
    for name in baselines.BASELINES:
        assert baselines.forecast_with(name, contexts[:1], context_times, horizon_times).predictions.shape == truth[:1].shape, name


def test_physics_fit_from_a_poor_first_guess_is_rescued_by_the_second_start(clean, monkeypatch):
    contexts, _, context_times, _, params = clean
    def poor(context, times):  # rates far outside the data's, where the first fit gets stuck
        return np.r_[[50.0, 0.01, 50.0, 0.01], context[0]]

    monkeypatch.setattr(baselines, "initial_guess", poor)
    np.testing.assert_allclose(baselines.fit_lotka_volterra(contexts[0], context_times)[0], params[0], rtol=1e-6)


def test_on_a_file_another_model_made_the_physics_fit_gives_its_best_point_and_says_how_far_off_it_is():
    from baseline_bench import logistic_lotka_volterra

    time_points, trajectories = logistic_lotka_volterra(3)
    contexts, _ = data.split_time(trajectories, axis=1)
    context_times, horizon_times = data.split_time(time_points)
    fit = baselines.lotka_volterra_fit(contexts, context_times, horizon_times)
    assert not fit.fell_back.any() and np.isfinite(fit.predictions).all()
    assert (fit.residual > 1e-3).all()  # no Lotka-Volterra orbit is a logistic-prey one: the residual says so


def test_the_physics_fit_on_generated_data_is_exact_at_its_own_tolerances(clean):
    contexts, truth, context_times, horizon_times, _ = clean
    fit = baselines.lotka_volterra_fit(contexts, context_times, horizon_times)
    assert np.abs(fit.predictions - truth).mean() < 1e-8 and (fit.residual < 1e-8).all()


def test_series_spread_over_processes_give_the_same_forecasts(clean):
    from concurrent.futures import ProcessPoolExecutor

    contexts, _, context_times, horizon_times, _ = clean
    with ProcessPoolExecutor(2) as pool:
        spread = baselines.lotka_volterra_fit(contexts, context_times, horizon_times, pool.map)
    alone = baselines.lotka_volterra_fit(contexts, context_times, horizon_times)
    assert (spread.predictions == alone.predictions).all() and (spread.residual == alone.residual).all()
