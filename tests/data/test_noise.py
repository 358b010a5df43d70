"""Tests for noisefix.corruption: rates within binomial tolerances, seeding, and validation."""

import numpy as np
import pytest

from noisefix.data.noise import (
    corrupt_labels,
    corrupt_with_matrix,
    pairflip_matrix,
    symmetric_matrix,
)
from noisefix.errors import ConfigError, DataError

N, K = 20_000, 10


def _labels(n=N, k=K, seed=123):
    return np.random.default_rng(seed).integers(k, size=n)


def _within(count, n, p, sigmas=5.0):
    """True when ``count`` successes out of n are within ``sigmas`` binomial std of n p."""
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


def test_matrices_are_row_stochastic_with_expected_entries():
    s = symmetric_matrix(4, 0.4)
    np.testing.assert_allclose(s.sum(1), 1.0)
    np.testing.assert_allclose(np.diag(s), 0.6 + 0.1)
    assert s[0, 1] == pytest.approx(0.1)
    f = pairflip_matrix(4, 0.3)
    np.testing.assert_allclose(f.sum(1), 1.0)
    assert f[3, 0] == pytest.approx(0.3) and f[0, 1] == pytest.approx(0.3) and f[0, 0] == pytest.approx(0.7)
    assert f[0, 2] == 0.0


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8, 1.0])
def test_symmetric_changes_p_times_k_minus_1_over_k(rate):
    y = _labels()
    noisy, changed = corrupt_labels(y, num_classes=K, rate=rate, seed=0)
    assert noisy.dtype == np.int64 and changed.dtype == bool and noisy.shape == y.shape
    np.testing.assert_array_equal(changed, noisy != y)
    assert _within(changed.sum(), N, rate * (K - 1) / K)
    # the true class is included among the replacements: a rate of 1 still keeps about 1/K
    if rate == 1.0:
        assert _within((~changed).sum(), N, 1 / K)
    # replacements are uniform over the other classes
    counts = np.bincount((noisy[changed] - y[changed]) % K, minlength=K)
    assert counts[0] == 0
    assert all(_within(c, changed.sum(), 1 / (K - 1)) for c in counts[1:])


def test_pairflip_goes_to_next_class_only():
    y = _labels()
    noisy, changed = corrupt_labels(y, num_classes=K, rate=0.3, noise="pairflip", seed=1)
    np.testing.assert_array_equal(noisy[changed], (y[changed] + 1) % K)
    assert _within(changed.sum(), N, 0.3)


def test_rate_zero_changes_nothing():
    y = _labels(n=500)
    noisy, changed = corrupt_labels(y, num_classes=K, rate=0.0, seed=3)
    np.testing.assert_array_equal(noisy, y)
    assert not changed.any()


def test_seeds_reproduce_and_differ():
    y = _labels(n=2000)
    a, _ = corrupt_labels(y, num_classes=K, rate=0.5, seed=7)
    b, _ = corrupt_labels(y, num_classes=K, rate=0.5, seed=7)
    c, _ = corrupt_labels(y, num_classes=K, rate=0.5, seed=8)
    d, _ = corrupt_labels(y, num_classes=K, rate=0.5, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)
    assert (a != c).any()


def test_arbitrary_matrix_follows_its_rows():
    m = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.1, 0.0, 0.9]])
    y = np.repeat(np.arange(3), 10_000)
    noisy, changed = corrupt_with_matrix(y, m, seed=0)
    assert set(np.unique(noisy[y == 0])) == {0, 1}
    assert (noisy[y == 1] == 1).all()
    assert _within((noisy[y == 0] == 1).sum(), 10_000, 0.5)
    assert _within((noisy[y == 2] == 0).sum(), 10_000, 0.1)
    np.testing.assert_array_equal(changed, noisy != y)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_rate(rate):
    with pytest.raises(ConfigError, match="outside"):
        corrupt_labels(_labels(n=10), num_classes=K, rate=rate, seed=0)


def test_bad_noise_type_and_classes():
    with pytest.raises(ConfigError, match="unknown noise type 'asym'"):
        corrupt_labels(_labels(n=10), num_classes=K, rate=0.1, noise="asym")
    with pytest.raises(ConfigError, match="num_classes"):
        symmetric_matrix(1, 0.1)


@pytest.mark.parametrize(
    "matrix, match",
    [
        (np.ones((2, 3)) / 3, "square"),
        ([[0.5, 0.4], [0.0, 1.0]], "row 0 sums to 0.9"),
        ([[1.5, -0.5], [0.0, 1.0]], "negative"),
        ([[np.nan, 1.0], [0.0, 1.0]], "non-finite"),
    ],
)
def test_bad_matrix(matrix, match):
    with pytest.raises(ConfigError, match=match):
        corrupt_with_matrix([0, 1], matrix, seed=0)


@pytest.mark.parametrize("labels, match", [([0, 10], "label 10 is outside"), ([-1], "-1"), ([0.5], "dtype")])
def test_bad_labels(labels, match):
    with pytest.raises(DataError, match=match):
        corrupt_labels(labels, num_classes=K, rate=0.1, seed=0)
