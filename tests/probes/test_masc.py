"""MASC against a direct implementation of the paper's algorithm, fit == fit_moments, degenerate inputs,
and the reason for cross-fitting (in-sample MASC memorizes noisy labels)."""

import warnings

import numpy as np
import pytest
import torch

from noisefix.data.splits import make_folds
from noisefix.errors import ProbeError
from noisefix.probes import MASC
from noisefix.probes import eigensolvers
from noisefix.probes.stats import ClassStats
from noisefix.scoring.cross_fitting import cross_fit


def make_subspace_data(n, K, d, rank, noise, seed):
    """Each class lives near its own random rank-`rank` subspace of R^d; returns float32 X (n, d), y (n,)."""
    rng = np.random.default_rng(seed)
    bases = np.stack([np.linalg.qr(rng.standard_normal((d, rank)))[0] for _ in range(K)])   # (K, d, r)
    y = rng.integers(0, K, n)
    coef = rng.standard_normal((n, rank)) * np.linspace(2, 1, rank)
    X = np.einsum("ndr,nr->nd", bases[y], coef) + noise * rng.standard_normal((n, d))
    return X.astype(np.float32), y


def reference_masc(X, y, Xtest, K, variance=0.99):
    """The paper's recipe, written plainly: PCA of [X_c; -X_c], 99 % rule, smallest angle wins."""
    ks, angles = [], []
    for c in range(K):
        Xc = X[y == c].astype(np.float64)
        w, V = np.linalg.eigh(np.cov(np.vstack([Xc, -Xc]).T))
        w, V = w[::-1], V[:, ::-1]
        k = int(np.sum(np.cumsum(w / w.sum()) <= variance)) + 1
        ks.append(k)
        cos = np.linalg.norm(Xtest @ V[:, :k], axis=1) / np.linalg.norm(Xtest, axis=1)
        angles.append(np.arccos(np.clip(cos, -1, 1)))
    return np.array(ks), np.argmin(np.stack(angles, axis=1), axis=1)


@pytest.mark.parametrize("d, n", [(24, 900), (80, 240)])     # n_c > d: second-moment route; n_c < d: Gram route
def test_matches_reference_implementation(d, n):
    X, y = make_subspace_data(n, 4, d, 4, 0.3, seed=0)
    Xt, _ = make_subspace_data(500, 4, d, 4, 0.3, seed=1)
    ks, pred = reference_masc(X, y, Xt, 4)
    model = MASC().fit(X, y)
    np.testing.assert_array_equal(model.n_components_, ks)
    assert np.mean(model.predict(Xt) == pred) >= 0.999
    for U in model.components_:                                  # orthonormal bases
        np.testing.assert_allclose((U.T @ U).numpy(), np.eye(U.shape[1]), atol=1e-4)


@pytest.mark.parametrize("d, n", [(24, 900), (80, 240)])
def test_fit_equals_fit_moments(d, n):
    X, y = make_subspace_data(n, 4, d, 4, 0.3, seed=2)
    stats = ClassStats(d, 4, 3)
    for i in range(0, n, 64):                                    # streamed in batches, spread over folds
        stats.update(X[i:i + 64], y[i:i + 64], np.arange(i, min(i + 64, n)) % 3)
    a, b = MASC().fit(X, y), MASC().fit_moments(stats.total())
    np.testing.assert_array_equal(a.n_components_, b.n_components_)
    assert np.mean(a.predict(X) == b.predict(X)) >= 0.999
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-4)


def test_k_hint_changes_speed_not_result():
    X, y = make_subspace_data(2000, 3, 200, 4, 0.3, seed=3)
    stats = ClassStats(200, 3)
    stats.update(X, y)
    ref = MASC().fit_moments(stats.total())
    for hint in ([1, 1, 1], ref.n_components_, [150, 150, 150]):     # too small, exact, too large
        other = MASC().fit_moments(stats.total(), k_hint=hint)
        np.testing.assert_array_equal(other.n_components_, ref.n_components_)
        np.testing.assert_allclose(other.decision_function(X), ref.decision_function(X), atol=1e-5)


def test_integer_variance_keeps_exactly_that_many_components():
    X, y = make_subspace_data(600, 3, 30, 4, 0.3, seed=4)
    assert MASC(variance=5).fit(X, y).n_components_.tolist() == [5, 5, 5]
    assert MASC(variance=100).fit(X, y).n_components_.tolist() == [30, 30, 30]      # capped at d
    assert MASC(variance=0.5).fit(X, y).n_components_.max() < 4


def test_scores_are_squared_cosines():
    X = np.array([[1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 3, 0]], dtype=np.float32)
    model = MASC().fit(X, np.array([0, 0, 1, 1]))
    s = model.decision_function(np.array([[1, 1, 0], [0, 0, 5]], dtype=np.float32))
    np.testing.assert_allclose(s, [[0.5, 0.5], [0, 0]], atol=1e-6)
    assert model.predict(np.array([[1, 1, 0]], dtype=np.float32)).tolist() == [0]   # tie -> lowest index


def test_degenerate_classes_and_vectors():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 6)).astype(np.float32)
    y = np.repeat([0, 1, 3], 20)
    y[-1] = 4                                                        # class 4: one image; class 2: empty
    X[:20, 4:] = 0                                                   # dead units of class 0
    X[20:40] = 0                                                     # class 1: only zero vectors
    with pytest.warns(RuntimeWarning, match="classes"):
        model = MASC().fit(X, y, num_classes=5)
    assert model.n_components_[1] == 0 and model.n_components_[2] == 0 and model.n_components_[4] == 1
    assert np.all(model.components_[0][4:].numpy() == 0)             # dead coordinates stay out of U_0
    s = model.decision_function(X[-1:])
    assert s[0, 2] == -np.inf and s[0, 4] == pytest.approx(1.0, abs=1e-5)  # the lone image lies in its subspace
    assert model.predict(X[:20]).max() != 2
    with pytest.warns(RuntimeWarning, match="all zero"):
        zs = model.decision_function(np.zeros((2, 6), dtype=np.float32))
        assert model.predict(np.zeros((1, 6), np.float32)).tolist() == [0]
    assert np.all(zs[:, [0, 1, 3, 4]] == 0)


def test_non_finite_input_is_a_probe_error():
    X = np.ones((4, 3), dtype=np.float32)
    X[1, 2] = np.nan
    with pytest.raises(ProbeError, match="NaN"):
        MASC().fit(X, np.array([0, 0, 1, 1]))
    with pytest.raises(ProbeError, match="variance"):
        MASC(variance=0).fit(np.ones((4, 3)), np.array([0, 0, 1, 1]))


@pytest.mark.parametrize("also_numpy_fails", [False, True])
def test_eigh_failure_falls_back(monkeypatch, also_numpy_fails):
    X, y = make_subspace_data(600, 3, 20, 3, 0.2, seed=6)
    ref = MASC().fit(X, y)

    def fail(*args, **kwargs):
        raise np.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(eigensolvers, "full_eigh", fail)
    if also_numpy_fails:
        monkeypatch.setattr(np.linalg, "eigh", fail)                 # leaves the SVD
    with pytest.warns(RuntimeWarning, match="falling back"):
        model = MASC().fit(X, y)
    np.testing.assert_array_equal(model.n_components_, ref.n_components_)
    np.testing.assert_allclose(model.decision_function(X), ref.decision_function(X), atol=1e-5)


def test_cross_fitting_does_not_memorize_noisy_labels():
    """In-sample MASC puts every training image in its (noisy) class's subspace; cross-fitted MASC cannot."""
    n, K, rank = 300, 3, 3
    X, clean = make_subspace_data(n, K, 128, rank, 0.05, seed=0)
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(n) < 0.4, rng.integers(0, K, n), clean)          # 40 % symmetric noise
    folds = make_folds(noisy, 5, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_sample = MASC().fit(X, noisy).predict(X)
        oof = cross_fit("masc", stats=None, X=X, labels=noisy, folds=folds).oof_scores.argmax(1)
        oof_rank = cross_fit("masc", stats=None, X=X, labels=noisy, folds=folds, variance=rank).oof_scores.argmax(1)
    assert np.mean(in_sample == noisy) >= 0.97                       # memorized
    assert np.mean(oof == noisy) <= np.mean(in_sample == noisy) - 0.25
    assert np.mean(oof == clean) > np.mean(oof == noisy) + 0.1       # leans to the true labels
    # 40 % noise adds the other classes' directions to each class's 99 % subspace; with the true rank the
    # cross-fitted subspaces recover the clean labels almost perfectly.
    assert np.mean(oof_rank == clean) >= 0.95


def test_torch_and_numpy_inputs_agree():
    X, y = make_subspace_data(300, 3, 10, 2, 0.1, seed=7)
    a = MASC().fit(X, y).decision_function(X)
    b = MASC().fit(torch.from_numpy(X), torch.from_numpy(y)).decision_function(torch.from_numpy(X))
    np.testing.assert_array_equal(a, b)



def _relu_layer(n, d, seed):
    """A ReLU layer's activations (n, d) float32 of low-rank inputs: a decaying spectrum, dead units."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 12)) * np.geomspace(3, 0.1, 12)
    return np.maximum(Z @ rng.standard_normal((12, d)) + 0.05 * rng.standard_normal((n, d)), 0).astype(np.float32)


class _Exact:
    """MASC written plainly, no eigensolver of noisefix: numpy's full eigh of each class's float64 second moments,
    the 99 % rule, squared cosines. n_components_, explained_variance_ and decision_function as MASC's."""

    def __init__(self, X, y, K, variance=0.99):
        self.bases, self.explained_variance_ = [], []
        for c in range(K):
            Xc = X[y == c].astype(np.float64)
            w, V = np.linalg.eigh(Xc.T @ Xc)
            w, V = w[::-1], V[:, ::-1]
            k = int(np.searchsorted(np.cumsum(w) / w.sum(), variance, side="right")) + 1
            self.bases.append(V[:, :k])
            self.explained_variance_.append(w[:k] / len(Xc))
        self.n_components_ = np.array([U.shape[1] for U in self.bases])

    def decision_function(self, X):
        X = X.astype(np.float64)
        return np.stack([np.square(X @ U).sum(1) for U in self.bases], axis=1) / np.square(X).sum(1, keepdims=True)


def _recording_warm_subspace(monkeypatch):
    outcomes, warm_subspace = [], eigensolvers.warm_subspace
    monkeypatch.setattr(eigensolvers, "warm_subspace",
                        lambda *a, **kw: outcomes.append(warm_subspace(*a, **kw)) or outcomes[-1])
    return outcomes


def test_gram_route_refines_a_start_to_the_exact_fit(monkeypatch):
    """The Gram route's refinement (Rayleigh-Ritz with residual checks), from the float32 decomposition (all
    data) or from the all-data basis (a fold), gives the exact fit: same k_c, eigenvalues and scores."""
    X, y = _relu_layer(500, 300, 0), np.repeat([0, 1], 250)
    outcomes = _recording_warm_subspace(monkeypatch)
    full = MASC().fit(X, y)
    keep = np.random.default_rng(1).random(500) > 0.2
    rows = [torch.from_numpy(X[keep & (y == c)]) for c in range(2)]
    fold = MASC().fit_by_class([(r, None, U) for r, U in zip(rows, full.components_)])
    assert len(outcomes) == 4 and all(o is not None for o in outcomes)        # 2 classes x (all data, fold)
    for fit, exact, Xs in ((full, _Exact(X, y, 2), X), (fold, _Exact(X[keep], y[keep], 2), X[~keep])):
        assert (fit.n_components_ == exact.n_components_).all() and (exact.n_components_ > 1).all()
        for a, b in zip(fit.explained_variance_, exact.explained_variance_):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * b[0])     # reference: float32 GEMM moments
        np.testing.assert_allclose(fit.decision_function(Xs), exact.decision_function(Xs), atol=1e-4)


@pytest.mark.parametrize("n, d", [(500, 800), (1500, 600)])     # n_c < d: Gram route; n_c > d: second moments
def test_all_data_fit_from_a_randomized_start_is_the_exact_fit(monkeypatch, n, d):
    """A class with a small subspace (k_c about 40 of hundreds) starts on either route from the leading Ritz
    vectors of the randomized range finder's block (k_c and a margin); the refinement converges and gives the
    exact fit."""
    X, y = _relu_layer(n, d, 6), np.zeros(n, dtype=int)
    outcomes, warm_subspace = [], eigensolvers.warm_subspace
    monkeypatch.setattr(eigensolvers, "warm_subspace", lambda M, start, v: outcomes.append(
        (start.shape[1], warm_subspace(M, start, v))) or outcomes[-1][1])
    fit, exact = MASC().fit(X, y), _Exact(X, y, 1)
    assert len(outcomes) == 1 and outcomes[0][1] is not None
    assert fit.n_components_[0] == exact.n_components_[0] > 10
    assert outcomes[0][0] > exact.n_components_[0]                           # not a decomposition's k columns
    np.testing.assert_allclose(fit.explained_variance_[0], exact.explained_variance_[0], rtol=1e-5)
    np.testing.assert_allclose(fit.decision_function(X), exact.decision_function(X), atol=1e-5)


def test_fold_fit_falls_back_to_the_exact_route_from_a_useless_start(monkeypatch):
    """A start too small to converge within the Rayleigh-Ritz steps (one random direction) gives the exact fit."""
    X = _relu_layer(120, 150, 2)
    exact = _Exact(X, np.zeros(120, int), 1)
    outcomes = _recording_warm_subspace(monkeypatch)
    start = torch.from_numpy(np.random.default_rng(3).standard_normal((150, 1)))
    warm = MASC().fit_by_class([(torch.from_numpy(X), None, start)])
    assert outcomes == [None] and warm.n_components_[0] == exact.n_components_[0] > 3
    np.testing.assert_allclose(warm.decision_function(X), exact.decision_function(X), atol=1e-5)


def test_second_moment_route_refines_the_all_data_basis_to_the_exact_fold_fit(monkeypatch):
    """Fold fits from leave-fold-out statistics, started from the all-data bases: the exact fold fit (same k_c,
    eigenvalues and scores); dead units (zero coordinates) are dropped from the start as from the matrix."""
    X, y = _relu_layer(3000, 300, 4), np.repeat([0, 1], 1500)
    X[y == 1, :7] = 0.0                                                               # dead for class 1
    folds = np.random.default_rng(5).integers(0, 5, 3000)
    stats = ClassStats(300, 2, 5)
    stats.update(X, y, folds)
    full = MASC().fit_moments(stats.total())
    outcomes = _recording_warm_subspace(monkeypatch)
    warm = MASC().fit_moments(stats.excluding(2), k_hint=full.n_components_, starts=full.components_)
    assert len(outcomes) == 2 and all(o is not None for o in outcomes)
    exact = _Exact(X[folds != 2], y[folds != 2], 2)
    assert (warm.n_components_ == exact.n_components_).all() and (exact.n_components_ > 1).all()
    for a, b in zip(warm.explained_variance_, exact.explained_variance_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * b[0])
    assert float(warm.components_[1][:7].abs().max()) == 0.0
    np.testing.assert_allclose(warm.decision_function(X[folds == 2]), exact.decision_function(X[folds == 2]),
                               atol=1e-4)


def test_masc_is_not_informative_on_as_many_features_as_classes():
    from noisefix.probes.ncm import NCM

    assert not MASC.informative(10, 10) and not MASC.informative(3, 10) and MASC.informative(11, 10)
    assert NCM.informative(10, 10)
