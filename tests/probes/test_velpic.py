"""VeLPIC: top-1 uncentered direction per class, sign by the total mean, raw dot-product scores."""

import numpy as np
import pytest

from noisefix.errors import ProbeError
from noisefix.probes import VeLPIC
from noisefix.probes.stats import ClassStats


def _rays(n=300, K=3, d=8, seed=0):
    """Each class spreads along its own direction (both signs) plus noise."""
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.standard_normal((d, K)))[0].T
    y = rng.integers(0, K, n)
    X = dirs[y] * (2 + rng.random(n))[:, None] + 0.2 * rng.standard_normal((n, d))
    return X.astype(np.float32), y, dirs


def test_direction_sign_and_scores():
    X, y, dirs = _rays()
    model = VeLPIC().fit(X, y)
    v = model.directions_.numpy()
    assert np.all(np.abs(np.sum(v * dirs, axis=1)) > 0.99)                 # the principal directions
    assert np.all(v @ X.mean(0) > 0)                                       # mean projection positive
    np.testing.assert_allclose(model.decision_function(X), X @ v.T, atol=1e-5)
    assert np.mean(model.predict(X) == y) >= 0.98


def test_sign_flips_toward_the_total_mean():
    X = np.array([[-1, 0], [-2, 0], [0, 1], [0, 2]], dtype=np.float32)    # class 0 points along -x
    v = VeLPIC().fit(X, np.array([0, 0, 1, 1])).directions_.numpy()
    np.testing.assert_allclose(v, [[-1, 0], [0, 1]], atol=1e-6)


def test_fit_equals_fit_moments():
    X, y, _ = _rays(seed=1)
    s = ClassStats(8, 3)
    s.update(X, y)
    a, b = VeLPIC().fit(X, y), VeLPIC().fit_moments(s.total())
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-4)


def test_degenerate_inputs():
    X = np.array([[1, 0], [0, 0], [0, 0]], dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="classes"):
        model = VeLPIC().fit(X, np.array([0, 1, 1]), num_classes=3)      # class 1 all zeros, class 2 empty
    s = model.decision_function(np.array([[1, 1]], dtype=np.float32))
    assert s[0, 2] == -np.inf and s[0, 1] == 0 and s[0, 0] == pytest.approx(1)
    with pytest.raises(ProbeError, match="NaN"):
        VeLPIC().fit(np.array([[np.inf, 0]]), np.array([0]))
