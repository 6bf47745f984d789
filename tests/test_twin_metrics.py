"""Output statistics: exact equivalents of the benchmark's numpy calls on the pooled lists."""

from __future__ import annotations

import numpy as np
import pytest

from adaptwin.twin.metrics import itl_pairs, step_durations, weighted_percentile


@pytest.mark.parametrize("q", [0, 1, 50, 73.3, 99, 100])
def test_weighted_percentile_equals_numpy_on_expanded_data(q):
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 0.02, size=200)
    counts = rng.integers(0, 6, size=200)
    assert weighted_percentile(values, counts, q) == pytest.approx(np.percentile(np.repeat(values, counts), q))


def test_step_durations_expand_arithmetic_segments():
    d = step_durations(np.array([0, 3, 4]), np.array([3, 1, 2]), np.array([1.0, 5.0, 2.0]), np.array([0.5, 0, 1.0]))
    np.testing.assert_allclose(d, [1.0, 1.5, 2.0, 5.0, 2.0, 3.0])


def test_itl_pairs_count_requests_per_step():
    counts = itl_pairs(np.zeros(6), [0, 2, 5], [3, 2, 5])
    np.testing.assert_array_equal(counts, [1, 1, 2, 1, 0, 1])
