"""LogRegProbe: separable data, agreement with scikit-learn's multinomial fit, guards."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from noisefix.errors import ProbeError
from noisefix.probes import LogRegProbe


def _blobs(n=600, K=3, d=6, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    means = spread * rng.standard_normal((K, d)) + 5                         # far from zero: tests standardizing
    y = rng.integers(0, K, n)
    return (means[y] + rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d)).astype(np.float32), y


def test_matches_sklearn_on_standardized_features():
    X, y = _blobs()
    ours = LogRegProbe(C=1.0, max_iter=200).fit(X, y)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(StandardScaler().fit_transform(X), y)
    probs = ours.predict_proba(X)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(probs, ref.predict_proba(StandardScaler().fit_transform(X)), atol=5e-3)
    assert np.mean(ours.predict(X) == y) >= 0.9


def test_seed_only_moves_the_start():
    X, y = _blobs(seed=1)
    a = LogRegProbe(seed=0, max_iter=200).fit(X, y).predict_proba(X)
    b = LogRegProbe(seed=1, max_iter=200).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_empty_class_and_constant_features():
    X, y = _blobs(K=2, seed=2)
    X[:, 0] = 7.0                                                            # constant column: scale 1
    model = LogRegProbe().fit(X, y, num_classes=3)
    s = model.decision_function(X)
    assert np.all(s[:, 2] == -np.inf) and model.predict(X).max() <= 1
    assert np.isfinite(s[:, :2]).all()


def test_bad_params_and_inputs():
    X, y = _blobs(n=20)
    with pytest.raises(ProbeError, match="C > 0"):
        LogRegProbe(C=0).fit(X, y)
    X[3, 1] = np.nan
    with pytest.raises(ProbeError, match="NaN"):
        LogRegProbe().fit(X, y)


def test_decision_function_gives_logits_and_predict_proba_their_softmax():
    X, y = _blobs(K=2, seed=3)
    model = LogRegProbe().fit(X, y, num_classes=3)                           # class 2 empty
    logits, probs = model.decision_function(X), model.predict_proba(X)
    assert np.all(logits[:, 2] == -np.inf) and np.all(probs[:, 2] == 0)
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), dim=1).numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert np.abs(logits[:, :2]).max() > 1                                   # scores, not probabilities
    ranking = model.ranking_scores(X)                                        # what cross_fit stores
    np.testing.assert_array_equal(ranking[:, :2], probs[:, :2])
    assert np.all(ranking[:, 2] == -np.inf)
    np.testing.assert_array_equal(model.predict(X), np.argmax(probs, axis=1))
