"""Paired differences with bootstrap intervals (lvjob.results.uncertainty), and how summary.md words them."""

import numpy as np
import pytest

from lvjob.results.aggregate import finding_lines
from lvjob.results.uncertainty import paired_difference


def test_the_paired_difference_on_a_small_example_is_the_mean_of_the_differences_with_an_interval_around_it():
    d = paired_difference([1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.0, 4.5])  # differences 0.5, 0.5, 1.0, -0.5
    assert d.mean == pytest.approx(0.375) and d.series == 4
    # Every resample's mean lies between the smallest and the largest difference; the 90% interval is inside.
    assert -0.5 <= d.low < d.mean < d.high <= 1.0
    means = np.random.default_rng(0).choice([0.5, 0.5, 1.0, -0.5], size=(20000, 4)).mean(axis=1)
    assert (d.low, d.high) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])), abs=0.04)


def test_the_interval_is_the_same_on_every_call():
    a, b = list(np.linspace(0, 1, 50)), list(np.linspace(0, 1, 50)[::-1])
    assert paired_difference(a, b) == paired_difference(a, b)


def test_series_one_forecaster_did_not_score_are_left_out_of_the_pairs():
    d = paired_difference([1.0, None, 3.0, 2.0], [0.0, 5.0, None, 1.0])
    assert (d.series, d.mean) == (2, 1.0)


def test_a_consistent_improvement_is_a_finding_and_a_mixed_one_is_within_noise():
    assert paired_difference([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.4, 4.6]).verdict() == "lower"
    assert paired_difference([1.0, 2.0, 3.0, 4.0], [1.5, 1.5, 3.5, 3.5]).verdict() == "within noise"


def test_summary_states_only_differences_whose_interval_excludes_zero_as_findings():
    better = paired_difference([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.4, 4.6])
    mixed = paired_difference([1.0, 2.0, 3.0, 4.0], [1.5, 1.5, 3.5, 3.5])
    lines = finding_lines({"fine-tune": {"zero-shot": mixed, "persistence": better}})
    assert lines[2].startswith("- fine-tune vs zero-shot: within noise (mean difference +0,")
    assert lines[3].startswith("- fine-tune vs persistence: **MAE lower** (mean difference -0.5")
