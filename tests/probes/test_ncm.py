"""NCM: cosine to uncentered class means; fit == fit_moments; degenerate inputs."""

import numpy as np
import pytest

from noisefix.errors import ProbeError
from noisefix.probes import NCM
from noisefix.probes.stats import ClassStats


def _blobs(n=400, K=4, d=10, seed=0):
    rng = np.random.default_rng(seed)
    means = 3 * rng.standard_normal((K, d))
    y = rng.integers(0, K, n)
    return (means[y] + rng.standard_normal((n, d))).astype(np.float32), y


def test_separable_data_and_cosine_scores():
    X, y = _blobs()
    model = NCM().fit(X, y)
    assert np.mean(model.predict(X) == y) >= 0.98
    mean0 = X[y == 0].mean(0)
    expected = X @ mean0 / (np.linalg.norm(X, axis=1) * np.linalg.norm(mean0))
    np.testing.assert_allclose(model.decision_function(X)[:, 0], expected, atol=1e-5)


def test_fit_equals_fit_moments():
    X, y = _blobs(seed=1)
    s = ClassStats(10, 4, 2)
    s.update(X, y, np.arange(len(X)) % 2)
    a, b = NCM().fit(X, y), NCM().fit_moments(s.total())
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-5)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_degenerate_inputs():
    X = np.array([[1, 0], [2, 0], [0, 0], [0, 1]], dtype=np.float32)
    model = NCM().fit(X, np.array([0, 0, 1, 3]), num_classes=4)            # class 1: zero mean, class 2: empty
    s = model.decision_function(np.array([[0, 0], [1, 1]], dtype=np.float32))
    assert np.all(s[:, 2] == -np.inf)
    np.testing.assert_allclose(s[0, [0, 1, 3]], 0)                          # zero vector scores 0
    assert model.predict(np.zeros((1, 2), np.float32)).tolist() == [0]      # tie -> lowest index
    with pytest.raises(ProbeError, match="NaN"):
        model.decision_function(np.array([[np.nan, 0]], dtype=np.float32))
    with pytest.raises(ProbeError, match="features"):
        model.decision_function(np.ones((1, 3), dtype=np.float32))
