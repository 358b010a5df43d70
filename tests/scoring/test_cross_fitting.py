"""Folds, cross-fitted scores for every probe, score rows, layer choice, noise-rate estimate."""

from functools import partial

import numpy as np
import pytest

from noisefix.data.splits import make_folds
from noisefix.errors import ConfigError, ProbeError
from noisefix.probes import MASC, NCM, make_probe
from noisefix.probes.stats import ClassStats
from noisefix.scoring import cross_fitting as cross_fit_module
from noisefix.scoring.cross_fitting import (
    cross_fit,
    needs_second_moments,
    refits_on_activations,
)
from noisefix.scoring.selection import ScoreRow, choose, estimate_noise_rate, score_rows


def test_folds_are_stratified_balanced_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 31, 7])
    folds = make_folds(labels, 5, seed=3)
    assert folds.shape == labels.shape and set(folds) == set(range(5))
    for c in range(3):
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(folds, make_folds(labels, 5, seed=3))
    assert not np.array_equal(folds, make_folds(labels, 5, seed=4))
    with pytest.raises(ConfigError, match="folds"):
        make_folds(labels, 1, seed=0)


def _layer(n=400, K=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    means = 4 * rng.standard_normal((K, d))
    y = rng.integers(0, K, n)
    return (means[y] + rng.standard_normal((n, d))).astype(np.float32), y


@pytest.mark.parametrize("probe", ["masc", "ncm", "velpic", "logreg"])
def test_cross_fit_scores_each_image_without_its_fold(probe):
    X, y = _layer()
    folds = make_folds(y, 4, seed=0)
    stats = ClassStats(8, 3, 4)
    stats.update(X, y, folds)
    r = cross_fit(probe, stats=stats, X=X, labels=y, folds=folds, X_test=X[:30], layer="fc", variance=2)
    assert r.oof_scores.shape == (400, 3) and r.oof_scores.dtype == np.float32
    assert r.test_scores.shape == (30, 3) and (r.layer, r.probe) == ("fc", probe)
    assert np.mean(r.oof_scores.argmax(1) == y) >= 0.95
    assert (r.n_components is not None) == (probe == "masc")


@pytest.mark.parametrize("cache_grams", [True, False])
@pytest.mark.parametrize("probe", ["masc", "velpic"])
def test_gram_route_for_small_classes_matches_the_moment_route(probe, cache_grams, monkeypatch):
    """Classes smaller than d are refitted per fold through Gram matrices: same scores as d x d moments,
    whether each class's Gram matrix is kept for the folds or (over GRAM_CACHE_BYTES) formed per fit."""
    if not cache_grams:
        monkeypatch.setattr(cross_fit_module, "GRAM_CACHE_BYTES", 0)
    rng = np.random.default_rng(3)
    X = np.maximum(rng.standard_normal((60, 40)), 0).astype(np.float32)     # 3 classes of ~20 < d = 40
    y = rng.integers(0, 3, 60)
    folds = make_folds(y, 3, seed=0)
    stats = ClassStats(40, 3, 3)
    stats.update(X, y, folds)
    gram = cross_fit(probe, stats=stats, X=X, labels=y, folds=folds, X_test=X[:10], variance=0.9)
    make = partial(make_probe, probe, **({"variance": 0.9} if probe == "masc" else {}))
    for f in range(3):
        rows = folds == f
        expected = make().fit_moments(stats.excluding(f)).decision_function(X[rows])
        np.testing.assert_allclose(gram.oof_scores[rows], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gram.test_scores, make().fit_moments(stats.total()).decision_function(X[:10]),
                               rtol=1e-4, atol=1e-4)


def test_gram_route_folds_refined_from_the_all_data_subspace_are_the_leave_fold_out_fits(monkeypatch):
    """MASC's folds start from the all-data class bases (which saw the fold) and are refined on the fold's
    own Gram matrix: the scores equal the exact fits from the statistics without the fold."""
    from noisefix.probes import eigensolvers

    rng = np.random.default_rng(5)
    Z = rng.standard_normal((400, 10)) * np.geomspace(3, 0.1, 10)
    X = np.maximum(Z @ rng.standard_normal((10, 300)) + 0.05 * rng.standard_normal((400, 300)), 0).astype(np.float32)
    y = rng.integers(0, 2, 400)                                              # 2 classes of ~200 < d = 300
    folds = make_folds(y, 4, seed=0)
    stats = ClassStats(300, 2, 4)
    stats.update(X, y, folds)
    warm = []
    warm_subspace = eigensolvers.warm_subspace
    monkeypatch.setattr(eigensolvers, "warm_subspace",
                        lambda *a, **kw: warm.append(warm_subspace(*a, **kw)) or warm[-1])
    gram = cross_fit("masc", stats=stats, X=X, labels=y, folds=folds)
    assert len(warm) == 10 and all(w is not None for w in warm)              # (all data + 4 folds) x 2 classes
    for f in range(4):
        rows = folds == f
        exact = MASC().fit_moments(stats.excluding(f))
        np.testing.assert_allclose(gram.oof_scores[rows], exact.decision_function(X[rows]), atol=1e-4)


@pytest.mark.parametrize("probe", ["masc", "velpic", "ncm", "logreg"])
def test_gram_route_needs_no_second_moments(probe):
    """Where every class is smaller than d, statistics without d x d moments give the very same scores."""
    rng = np.random.default_rng(4)
    X = np.maximum(rng.standard_normal((60, 40)), 0).astype(np.float32)     # 3 classes of ~20 < d = 40
    y = rng.integers(0, 3, 60)
    folds = make_folds(y, 3, seed=0)
    assert refits_on_activations(probe, np.bincount(y), 40) == (probe != "ncm")
    assert not needs_second_moments([probe], np.bincount(y), 40)
    results = []
    for second in (True, False):
        stats = ClassStats(40, 3, 3, second_moments=second)
        stats.update(X, y, folds)
        results.append(cross_fit(probe, stats=stats, X=X, labels=y, folds=folds, X_test=X[:10], X_holdout=X[10:15],
                                 variance=0.9))
    with_d2, without = results
    for attr in ("oof_scores", "test_scores", "holdout_scores"):
        np.testing.assert_array_equal(getattr(with_d2, attr), getattr(without, attr))
    assert (with_d2.n_components is None) == (without.n_components is None)
    if with_d2.n_components is not None:
        np.testing.assert_array_equal(with_d2.n_components, without.n_components)


def test_capability_flags_drive_the_route(monkeypatch):
    """The route follows the probe classes' flags, not their names."""
    counts = np.array([20, 20, 20])                                    # every class smaller than d = 40
    assert refits_on_activations("masc", counts, 40) and not needs_second_moments(["masc"], counts, 40)
    assert not refits_on_activations("masc", counts, 10) and needs_second_moments(["masc"], counts, 10)
    monkeypatch.setattr(MASC, "gram_route", False)                      # no Gram route: d x d moments instead
    assert not refits_on_activations("masc", counts, 40) and needs_second_moments(["masc"], counts, 40)
    rng = np.random.default_rng(4)
    X = np.maximum(rng.standard_normal((60, 40)), 0).astype(np.float32)
    y = rng.integers(0, 3, 60)
    folds = make_folds(y, 3, seed=0)
    stats = ClassStats(40, 3, 3, second_moments=False)
    stats.update(X, y, folds)
    with pytest.raises(ProbeError, match="without second moments"):   # the moment route now needs them
        cross_fit("masc", stats=stats, X=X, labels=y, folds=folds)
    monkeypatch.setattr(NCM, "fits_from_moments", False)                # no fit from statistics: refitted
    assert refits_on_activations("ncm", counts, 10)
    calls = []
    monkeypatch.setattr(NCM, "fit_moments", lambda *a, **k: calls.append(a))
    r = cross_fit("ncm", stats=stats, X=X, labels=y, folds=folds, X_test=X[:5])
    assert not calls and r.test_scores.shape == (5, 3)
    monkeypatch.setattr(NCM, "uses_second_moments", True)
    monkeypatch.setattr(NCM, "fits_from_moments", True)
    assert needs_second_moments(["ncm"], counts, 40)


def test_moment_route_without_second_moments_is_a_clear_error():
    X, y = _layer()                                                   # ~130 images per class > d = 8
    folds = make_folds(y, 4, seed=0)
    assert needs_second_moments(["masc", "ncm"], np.bincount(y), 8)
    stats = ClassStats(8, 3, 4, second_moments=False)
    stats.update(X, y, folds)
    with pytest.raises(ProbeError, match="without second moments"):
        cross_fit("masc", stats=stats, X=X, labels=y, folds=folds)
    r = cross_fit("ncm", stats=stats, X=X, labels=y, folds=folds)   # NCM needs only the sums
    assert np.mean(r.oof_scores.argmax(1) == y) >= 0.95


def test_moment_probes_use_leave_fold_out_statistics():
    """A fold whose only class-2 images are in that fold gets -inf for class 2: it never saw them."""
    X, y = _layer(seed=1)
    folds = make_folds(y, 2, seed=0)
    y = y.copy()
    y[(y == 2) & (folds == 1)] = 0                                   # class 2 only in fold 0
    r = cross_fit("ncm", stats=None, X=X, labels=y, folds=folds)
    assert np.all(r.oof_scores[folds == 0, 2] == -np.inf)
    assert np.all(np.isfinite(r.oof_scores[folds == 1]))


def test_cross_fit_rejects_mismatched_statistics_and_unknown_probes():
    X, y = _layer()
    folds = make_folds(y, 4, seed=0)
    with pytest.raises(ProbeError, match="folds"):
        cross_fit("masc", stats=ClassStats(8, 3, 5), X=X, labels=y, folds=folds)
    with pytest.raises(ConfigError, match="masc, ncm, logreg, velpic"):
        cross_fit("svm", stats=None, X=X, labels=y, folds=folds)


def test_score_rows_and_choice():
    X, y = _layer()
    folds = make_folds(y, 4, seed=0)
    noisy = np.where(np.arange(400) % 4 == 0, (y + 1) % 3, y)
    good = cross_fit("ncm", stats=None, X=X, labels=noisy, folds=folds, X_test=X, layer="good")
    bad = cross_fit("ncm", stats=None, X=np.random.default_rng(0).standard_normal((400, 8)), labels=noisy,
                    folds=folds, X_test=X, layer="bad")
    rows = score_rows([bad, good], labels=noisy, clean_labels=y, test_labels=y, dims={"good": 8, "bad": 8})
    assert rows[1].agreement == pytest.approx(0.75, abs=0.05) and rows[1].clean_acc >= 0.95
    assert rows[1].dim == 8 and rows[1].mean_k is None
    assert choose(rows).layer == "good" and choose(rows, by="clean_acc").layer == "good"
    assert choose(rows, by="test_acc").layer == "good"


def _row(layer, agreement, test_acc):
    return ScoreRow(layer, "masc", agreement, None, test_acc, None, None)


def test_choose_label_only_vs_oracle_and_ties():
    rows = [_row("a", 0.7, 0.9), _row("b", 0.8, 0.85), _row("c", 0.8, 0.95)]
    assert choose(rows).layer == "b"                                   # label-only; tie -> first row
    assert choose(rows, by="test_acc").layer == "c"                    # oracle
    with pytest.raises(ConfigError, match="clean_acc"):
        choose(rows, by="clean_acc")
    with pytest.raises(ConfigError, match="choose by"):
        choose(rows, by="loss")


@pytest.mark.parametrize("p", [0.0, 0.2, 0.6, 0.9])
def test_noise_rate_round_trip(p):
    K, acc = 10, 0.93
    agreement = (1 - p) * acc + p / K
    assert estimate_noise_rate(agreement, acc, K) == pytest.approx(p)
    assert estimate_noise_rate(1.0, 0.9, K) == 0.0                      # clipped
    assert np.isnan(estimate_noise_rate(0.1, 0.1, K))


def test_agreement_ranks_like_accuracy_under_symmetric_noise():
    """Simulated probes of increasing accuracy: agreement with noisy labels keeps their order."""
    rng = np.random.default_rng(0)
    K, n = 10, 20000
    clean = rng.integers(0, K, n)
    noisy = np.where(rng.random(n) < 0.6, rng.integers(0, K, n), clean)
    agreements = []
    for acc in (0.5, 0.7, 0.9):
        pred = np.where(rng.random(n) < acc, clean, (clean + rng.integers(1, K, n)) % K)
        agreements.append(np.mean(pred == noisy))
        assert estimate_noise_rate(agreements[-1], np.mean(pred == clean), K) == pytest.approx(0.6, abs=0.03)
    assert agreements == sorted(agreements)
