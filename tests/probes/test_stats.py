"""ClassStats: streamed per-(fold, class) moments equal the direct sums; leave-one-fold-out; guards."""

import numpy as np
import pytest
import torch

from noisefix.errors import DataError, ProbeError
from noisefix.probes import stats as stats_module
from noisefix.probes.stats import ClassStats, all_finite, as_features


def _data(n=500, d=12, K=3, F=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, K, n), rng.integers(0, F, n))


def _direct(X, y, keep, K):
    X = X.astype(np.float64)
    second = np.stack([X[keep & (y == c)].T @ X[keep & (y == c)] for c in range(K)])
    sums = np.stack([X[keep & (y == c)].sum(0) for c in range(K)])
    counts = np.array([np.sum(keep & (y == c)) for c in range(K)])
    return second, sums, counts


@pytest.mark.parametrize("buffer_rows", [None, 7])                  # 7 rows: a flush inside most batches
def test_streamed_moments_match_direct_sums(monkeypatch, buffer_rows):
    if buffer_rows:
        monkeypatch.setattr(stats_module, "_buffer_rows", lambda d: buffer_rows)
    X, y, f = _data()
    s = ClassStats(12, 3, 4, name="fc1")
    for i in range(0, len(X), 33):
        s.update(torch.from_numpy(X[i:i + 33]), y[i:i + 33], f[i:i + 33])
    for got, keep in ((s.total(), np.ones(len(X), bool)), (s.excluding(2), f != 2)):
        second, sums, counts = _direct(X, y, keep, 3)
        np.testing.assert_allclose(got.second.numpy(), second, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got.sums.numpy(), sums, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(got.counts.numpy(), counts)
    assert got.second.dtype == torch.float64 and got.counts.dtype == torch.int64


def test_updates_after_total_are_counted():
    X, y, _ = _data(F=1)
    s = ClassStats(12, 3)
    s.update(X[:100], y[:100])
    first = s.total().counts.sum().item()
    s.update(X[100:], y[100:])
    assert first == 100 and s.total().counts.sum().item() == len(X)


def test_zero_vectors_are_counted_per_class():
    X = np.ones((6, 4), dtype=np.float32)
    X[[0, 1, 4]] = 0
    s = ClassStats(4, 2)
    s.update(X, np.array([0, 0, 0, 1, 1, 1]))
    assert s.zero_counts.tolist() == [2, 1]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (3, 17), (299, 99)])
def test_every_non_finite_entry_is_caught(value, where):
    X = np.random.default_rng(0).standard_normal((300, 100)).astype(np.float32)
    assert all_finite(torch.from_numpy(X)) and all_finite(torch.empty(0, 4))
    X[where] = value
    assert not all_finite(torch.from_numpy(X))
    with pytest.raises(ProbeError, match="NaN or inf"):
        as_features(X)
    with pytest.raises(ProbeError, match="NaN or inf"):
        ClassStats(100, 2).update(X, np.arange(300) % 2)


def test_bad_inputs_raise_named_errors():
    s = ClassStats(4, 2, 2, name="layer3")
    bad = np.ones((2, 4), dtype=np.float32)
    bad[0, 1] = np.inf
    with pytest.raises(ProbeError, match="layer3.*NaN or inf"):
        s.update(bad, [0, 1], [0, 1])
    with pytest.raises(ProbeError, match="shape"):
        s.update(np.ones((2, 5)), [0, 1], [0, 1])
    with pytest.raises(DataError, match="labels"):
        s.update(np.ones((2, 4)), [0, 2], [0, 1])
    with pytest.raises(DataError, match="fold"):
        s.update(np.ones((2, 4)), [0, 1], [0, 2])
    with pytest.raises(ProbeError, match="fold"):
        s.excluding(2)


def test_memory_model():
    assert ClassStats.nbytes(2048, 10, 5) >= 10 * 5 * 2048**2 * 8
    assert ClassStats.nbytes(2048, 10, 5) < 3e9                       # 1.7 GB accumulators + total + buffer
    assert ClassStats.nbytes(16384, 10, 5) > 100e9                    # the design's "impossible" case


def test_without_second_moments_only_sums_and_counts():
    X, y, f = _data()
    full, lean = ClassStats(12, 3, 4), ClassStats(12, 3, 4, second_moments=False)
    for s in (full, lean):
        s.update(X, y, f)
    assert lean.second is None and lean.total().second_or_none is None
    for a, b in ((full.total(), lean.total()), (full.excluding(1), lean.excluding(1))):
        assert torch.equal(a.sums, b.sums) and torch.equal(a.counts, b.counts)
    with pytest.raises(ProbeError, match="without second moments"):
        lean.excluding(0).second
    assert ClassStats.nbytes(16384, 10, 5, second_moments=False) < 0.5e9   # F*K*d*8 + flush buffer
    assert ClassStats.nbytes(16384, 10, 5, second_moments=False) >= 8 * 5 * 10 * 16384


def test_impossible_statistics_fail_before_allocating():
    with pytest.raises(ProbeError, match=r"layer 'conv1'.*need [0-9.]+ GiB.*--pool avg:S.*--folds.*--layers"):
        ClassStats(16384 * 8, 10, 5, name="conv1")                           # 27 PB of d^2 accumulators
    lean = ClassStats(16384 * 8, 10, 5, name="conv1", second_moments=False)  # 42 MB: fine
    assert lean.sums.shape == (5, 10, 16384 * 8)


def test_all_reduce_without_process_group_only_flushes():
    X, y, f = _data()
    s = ClassStats(12, 3, 4)
    s.update(X, y, f)
    s.all_reduce()
    assert s.counts.sum().item() == len(X) and s.second.abs().sum() > 0
