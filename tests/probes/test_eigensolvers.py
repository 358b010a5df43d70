"""The eigensolvers' randomized start for an all-data fit (`range_basis`) and its refinement (`warm_subspace`)
against numpy's full eigh."""

import numpy as np
import torch

from noisefix.probes import eigensolvers


def _psd(n, d, rank, seed):
    """X X^T (n, n) float64 of a ReLU layer's rows X (n, d): a decaying spectrum over `rank` directions plus noise."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, rank)) * np.geomspace(3, 0.1, rank)
    X = np.maximum(Z @ rng.standard_normal((rank, d)) + 0.05 * rng.standard_normal((n, d)), 0)
    return torch.from_numpy(X @ X.T)


def _exact(G, variance=0.99):
    w, V = np.linalg.eigh(G.numpy())
    w, V = w[::-1], V[:, ::-1]
    k = int(np.searchsorted(np.cumsum(w) / w.sum(), variance, side="right")) + 1
    return w[:k], V[:, :k]


def test_a_small_subspace_starts_from_ritz_vectors_of_a_seeded_randomized_block():
    G = _psd(600, 900, 12, seed=0)
    w, V = _exact(G)
    basis = eigensolvers.range_basis(G, 0.99, None)
    assert basis.dtype == torch.float64 and len(w) < basis.shape[1] < 2 * len(w)    # the kept ones and a margin
    np.testing.assert_allclose((basis.T @ basis).numpy(), np.eye(basis.shape[1]), atol=1e-5)
    assert torch.equal(basis, eigensolvers.range_basis(G, 0.99, None))   # seeded: the same on every call
    vals, vecs = eigensolvers.warm_subspace(G, basis, 0.99)
    assert len(vals) == len(w)
    np.testing.assert_allclose(vals, w, rtol=0, atol=eigensolvers.WARM_RTOL * w[0])   # the residual bound
    assert np.abs(vecs.numpy() @ vecs.numpy().T - V @ V.T).max() < 1e-4              # the same subspace


def test_no_randomized_start_for_a_wide_subspace_or_a_fixed_count():
    """Noise without structure keeps most directions: a block of 3 k would not fit in n / 3."""
    X = np.random.default_rng(1).standard_normal((240, 400))
    G = torch.from_numpy(X @ X.T)
    assert len(_exact(G)[0]) > 240 // 9
    assert eigensolvers.range_basis(G, 0.99, None) is None
    assert eigensolvers.range_basis(_psd(600, 900, 12, seed=0), 5, None) is None


def _fold_refit_error(fold: bool) -> float:
    """Largest entry of the difference between the projectors of a fold's refined fit (started from the
    all-data basis, which saw the other rows) and of the fold's exact fit, in the fold's row space. Low-rank
    rows whose kept eigenvalues span four decades (99.99 % of the energy: k = 47, theta_k / theta_1 ~ 1e-4)."""
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((700, 60)) * np.geomspace(3, 1e-2, 60)) @ rng.standard_normal((60, 900))
    X += 1e-4 * rng.standard_normal(X.shape)
    _, V = _exact(torch.from_numpy(X @ X.T), 0.9999)
    U_all = X.T @ V / np.linalg.norm(X.T @ V, axis=0)                     # (d, k) all-data basis
    Xf = X[:560]                                                           # the fold: 4 of 5 parts
    Gf = torch.from_numpy(Xf @ Xf.T)
    w, Vf = _exact(Gf, 0.9999)
    got = eigensolvers.warm_subspace(Gf, torch.from_numpy(Xf @ U_all), 0.9999, fold=fold)
    assert got is not None and len(got[0]) == len(w)
    Z = got[1].numpy()
    return float(np.abs(Z @ Z.T - Vf @ Vf.T).max())


def test_a_fold_refined_from_the_all_data_basis_is_the_folds_own_fit():
    """The all-data basis saw the fold's held-out rows; a residual test relative to the largest eigenvalue alone
    keeps its tail directions (a leak into the out-of-fold scores: 1.7e-2 here), the fold test washes them out."""
    assert _fold_refit_error(fold=True) < 1e-6
    assert _fold_refit_error(fold=False) > 1e-3


def test_orthonormal_columns_spans_the_input_and_keeps_its_dtype():
    Z = torch.from_numpy(np.random.default_rng(4).standard_normal((300, 40)) * np.geomspace(1, 1e-3, 40))
    Q = eigensolvers.orthonormal_columns(Z)
    np.testing.assert_allclose((Q.T @ Q).numpy(), np.eye(40), atol=1e-12)
    np.testing.assert_allclose((Q @ (Q.T @ Z)).numpy(), Z.numpy(), atol=1e-12)           # the same span
    assert eigensolvers.orthonormal_columns(Z.float()).dtype == torch.float32
    deficient = torch.cat([Z[:, :5], Z[:, :5] @ torch.ones(5, 3, dtype=Z.dtype)], dim=1)   # rank 5 of 8 columns
    Qd = eigensolvers.orthonormal_columns(deficient)                       # Householder fallback: still orthonormal
    np.testing.assert_allclose((Qd.T @ Qd).numpy(), np.eye(8), atol=1e-10)
