"""Scores of probabilistic forecasts (lvjob.forecasting.scores) against values worked out by hand here."""

import warnings

import numpy as np
import pytest

from lvjob.forecasting import scores


def one_point(values, truth, context=((0.0, 0.0), (1.0, 1.0))):
    """(samples, truth, contexts) of one series, horizon 1, the same values for both variables."""
    samples = np.array(values, dtype=float).reshape(1, -1, 1, 1).repeat(2, axis=3)
    return samples, np.full((1, 1, 2), float(truth)), np.array([context], dtype=float)


def test_point_forecast_is_the_elementwise_median_of_the_samples():
    samples, truth, ctx = one_point([1.0, 5.0, 2.0], truth=0.0)
    m = scores.scores(samples, truth, ctx)
    assert m["mae"] == 2.0 and m["prey"]["mae"] == 2.0 and m["predator"]["mae"] == 2.0


def test_mae_mse_rmse_per_variable_and_overall():
    truth = np.zeros((2, 2, 2))
    samples = np.broadcast_to([1.0, 2.0], (2, 1, 2, 2)).copy()  # prey off by 1, predator by 2
    m = scores.scores(samples, truth, np.ones((2, 3, 2)))
    assert (m["prey"]["mae"], m["prey"]["mse"], m["prey"]["rmse"]) == (1.0, 1.0, 1.0)
    assert (m["predator"]["mae"], m["predator"]["mse"], m["predator"]["rmse"]) == (2.0, 4.0, 2.0)
    assert (m["mae"], m["mse"]) == (1.5, 2.5) and m["rmse"] == pytest.approx(np.sqrt(2.5))


def test_crps_is_the_empirical_distributions_not_the_fair_estimate():
    # Samples 1, 2, 4 and truth 2. By the integral of (F(x) - 1{x >= 2})^2: F = 1/3 on [1, 2)
    # gives 1/9, F = 2/3 on [2, 4) gives 2 x 1/9; CRPS = 1/3. The fair estimator would give
    # E|X - y| - sum|Xi - Xj| / (2 k (k - 1)) = 1 - 12/12 = 0.
    samples, truth, ctx = one_point([1.0, 2.0, 4.0], truth=2.0)
    m = scores.scores(samples, truth, ctx)
    assert m["crps"] == pytest.approx(1 / 3) and m["prey"]["crps"] == pytest.approx(1 / 3)


def test_crps_of_a_two_member_ensemble_straddling_the_truth():
    # F = 1/2 on [0, 2), truth 1: (1/2)^2 x 1 on [0, 1) + (1/2)^2 x 1 on [1, 2) = 1/2.
    samples, truth, ctx = one_point([0.0, 2.0], truth=1.0)
    assert scores.scores(samples, truth, ctx)["crps"] == pytest.approx(0.5)


def test_crps_of_a_single_sample_is_its_absolute_error():
    samples = np.array([[[[1.0, 3.0], [2.0, 2.0]]]])  # one series, k = 1, horizon 2
    truth = np.array([[[0.5, 0.0], [2.0, 4.0]]])  # errors 0.5, 3, 0, 2
    m = scores.scores(samples, truth, np.ones((1, 3, 2)))
    assert m["crps"] == pytest.approx(m["mae"]) == pytest.approx(5.5 / 4)
    assert m["prey"]["crps"] == pytest.approx(0.25) and m["predator"]["crps"] == pytest.approx(2.5)


def test_mase_is_the_mean_of_each_series_error_over_its_own_naive_error():
    contexts = np.array([[[1.0, 3.0], [2.0, 3.0], [4.0, 5.0]],  # naive MAE: prey 1.5, predator 1
                         [[0.0, 0.0], [4.0, 1.0], [8.0, 2.0]]])  # prey 4, predator 1
    truth = np.zeros((2, 1, 2))
    samples = np.array([[[[3.0, 1.0]]], [[[4.0, 2.0]]]])  # errors: (3, 1) and (4, 2)
    m = scores.scores(samples, truth, contexts)
    # prey 3/1.5 = 2 and 4/4 = 1 (a ratio of the means would give 3.5/2.75); predator 1 and 2.
    assert m["prey"]["mase"] == pytest.approx(1.5) and m["predator"]["mase"] == pytest.approx(1.5)
    assert m["mase"] == pytest.approx(1.5) and m["mase_unscaled"] == 0


def test_a_constant_context_is_left_out_of_mase_and_counted_without_dividing_by_zero():
    contexts = np.array([[[2.0, 1.0], [2.0, 3.0]],  # prey constant: no scale
                         [[1.0, 1.0], [3.0, 2.0]]])  # scales 2 and 1
    samples = np.array([[[[5.0, 2.0]]], [[[4.0, 3.0]]]])
    truth = np.ones((2, 1, 2))  # errors (4, 1) and (3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = scores.scores(samples, truth, contexts)
    assert m["mase_unscaled"] == 1
    assert m["prey"]["mase"] == pytest.approx(1.5)  # only the second series: 3 / 2
    assert m["predator"]["mase"] == pytest.approx(1.25)  # 1/2 and 2/1
    assert m["mase"] == pytest.approx((1.5 + 0.5 + 2.0) / 3)


def test_interval_is_the_10_and_90_percent_quantiles_of_the_samples():
    samples = np.arange(11.0).reshape(1, 11, 1, 1)
    lower, upper = scores.interval(samples)
    assert (lower.item(), upper.item()) == (1.0, 9.0)


def test_coverage_counts_the_truth_inside_the_interval_edges_included():
    samples = np.arange(11.0).reshape(1, 11, 1, 1).repeat(4, axis=2).repeat(2, axis=3)  # interval [1, 9]
    truth = np.array([[[0.5, 1.0], [5.0, 9.0], [9.5, 3.0], [1.0, 20.0]]])  # prey 2 of 4 inside, predator 3
    m = scores.scores(samples, truth, np.ones((1, 3, 2)))
    assert m["prey"]["coverage"] == 0.5 and m["predator"]["coverage"] == 0.75 and m["coverage"] == 5 / 8


def test_a_single_sample_has_a_degenerate_interval_that_covers_only_exact_hits():
    samples = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    truth = np.array([[[1.0, 2.5], [3.0, 4.0]]])
    lower, upper = scores.interval(samples)
    assert (lower == samples[:, 0]).all() and (upper == samples[:, 0]).all()
    assert scores.scores(samples, truth, np.ones((1, 3, 2)))["coverage"] == 0.75


def test_error_by_lead_time_is_the_mae_of_each_forecast_step():
    truth = np.zeros((2, 3, 2))
    samples = np.array([[[[1.0, 3.0], [2.0, 0.0], [0.0, 6.0]]],
                        [[[3.0, 1.0], [0.0, 2.0], [4.0, 2.0]]]])
    lead = scores.scores(samples, truth, np.ones((2, 3, 2)))["lead_time_mae"]
    assert lead["prey"] == [2.0, 1.0, 2.0]
    assert lead["predator"] == [2.0, 1.0, 4.0]
    assert lead["overall"] == [2.0, 1.0, 3.0]


def test_a_series_with_one_short_sample_is_counted_but_not_scored():
    samples = np.ones((2, 3, 2, 2))
    samples[1, 2, 1] = np.nan  # the last step of one sample of the second series is missing
    samples[1, :2] = 100.0  # would dominate every score if it were scored
    contexts = np.arange(3.0)[None, :, None].repeat(2, axis=0).repeat(2, axis=2)
    m = scores.scores(samples, np.zeros((2, 2, 2)), contexts)
    assert (m["series"], m["scored_series"], m["samples"]) == (2, 1, 3)
    assert m["mae"] == 1.0 and m["crps"] == 1.0


def test_no_complete_series_gives_no_scores_but_the_counts():
    samples = np.full((2, 1, 3, 2), np.nan)
    m = scores.scores(samples, np.zeros((2, 3, 2)), np.ones((2, 4, 2)))
    assert (m["series"], m["scored_series"]) == (2, 0)
    assert m["mae"] is None and m["crps"] is None and m["prey"]["mase"] is None and m["lead_time_mae"] is None


def test_truth_of_another_horizon_is_refused():
    with pytest.raises(ValueError, match="do not match"):
        scores.scores(np.zeros((2, 1, 3, 2)), np.zeros((2, 4, 2)), np.ones((2, 4, 2)))
