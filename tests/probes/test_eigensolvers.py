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
