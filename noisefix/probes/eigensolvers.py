"""Top eigenpairs of symmetric PSD matrices for MASC's class subspaces (probes/masc.py): Lanczos or torch's full
decompositions with fallbacks (`eigh_desc`), the energy rule for k (`n_keep`), the kept subspace
(`subspace`), a start when no nearby basis is known (`range_basis`, a randomized range finder;
`single_precision_basis` for a wide subspace), the refinement of a nearby basis by Rayleigh-Ritz with
residual checks (`warm_subspace`) and the orthonormal bases both use (`orthonormal_columns`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg as sla
from scipy.sparse.linalg import eigsh

from noisefix.nn.device import one_blas_thread

#: Eigenvalues at or below RANK_RTOL times the largest one count as zero.
RANK_RTOL = 1e-9
#: A start basis wider than this fraction of its matrix is not refined (probes/masc.py): Davidson from it would
#: pass half the matrix's size before converging; the fit starts from its own float32 decomposition instead.
PARTIAL_FRACTION = 0.25
#: From this size on, up to n / _LANCZOS_FRACTION top eigenpairs come from ARPACK's Lanczos iteration.
_LANCZOS_MIN_DIM = 256
_LANCZOS_FRACTION = 16
#: Without a hint, first try this many leading eigenpairs before computing the whole spectrum.
_FIRST_GUESS = 32
#: Warm start (`warm_subspace`): Rayleigh-Ritz steps at most (the basis restarted from its best Ritz vectors
#: when it would pass half the matrix's size; before, such a fit fell back to the exact decomposition: 6 of
#: the 60 fits of a 3,136-wide conv layer's cross-fit at 1,800 images per class, 2.5 of its 22 s), the
#: residual accepted relative to the largest eigenvalue and, for a start fitted on other rows too (a
#: cross-fitting fold's), relative to the smallest kept one. 1e-5 of the largest alone let a fold keep its
#: all-data start's tail directions: on a 2,048-wide ReLU layer (k ~ 85 of 1,440 rows) out-of-fold scores
#: 6e-3 from the exact fold fits', 1.2 % of the predictions different and 0.36 points more agreement with the
#: given labels; with 1e-3 of the smallest kept, 2.7e-6 and none.
_WARM_STEPS = 8
WARM_RTOL = 1e-5
FOLD_RTOL = 1e-3
#: Randomized range finder (`range_basis`): a block of at least _RANGE_OVERSAMPLE times the energy rule's k
#: columns, _RANGE_POWER power steps in float32, tried while the block stays within n / _RANGE_MAX_FRACTION.
#: 3 and 2 measured on 2,048-wide ReLU layers of 1,800 images per class: the same k_c and scores within 8e-6 of
#: numpy's exact fit (a 1.25 k block: 5e-4, where the eigenvalues at the 99 % cut are 0.5-3 % apart); with the
#: float32 Gram products, one such layer's 5-fold cross-fit 9.7 -> 4.9 s (docs/benchmarks.md 1b).
_RANGE_OVERSAMPLE = 3
_RANGE_POWER = 2
_RANGE_MAX_FRACTION = 3
#: `orthonormal_columns` accepts its Cholesky QR when Q^T Q is within this of the identity, entry by entry.
_ORTHO_TOL = 1e-10


def orthonormal_columns(Z: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (n, m) of the span of Z's columns (n, m), m <= n, in Z's dtype.

    CholeskyQR2 in float64 (Z^T Z = R^T R, Q = Z R^-1, done twice; Yamamoto et al. 2015): GEMMs, a small
    Cholesky and a triangular solve, where torch's Householder QR of the tall blocks of this module spends
    most of its time in unblocked LAPACK (on 2 cores, float32 1,800 x 260: 28 against 2 ms; float64 1,440 x
    114: 2.6 against 0.8 ms). Householder QR in float64 when a factorization fails or the result is not
    orthonormal to _ORTHO_TOL: a nearly rank-deficient Z (condition number above about 1e8)."""
    Q = Z.double()
    for _ in range(2):
        R, info = torch.linalg.cholesky_ex(Q.T @ Q, upper=True)
        if int(info) != 0:
            break
        Q = torch.linalg.solve_triangular(R, Q, upper=True, left=False)
    else:
        E = Q.T @ Q
        E.diagonal().sub_(1.0)
        if float(E.abs().max()) <= _ORTHO_TOL:                               # False for NaN too
            return Q.to(Z.dtype)
    return torch.linalg.qr(Z.double()).Q.to(Z.dtype)


def _eigh_fallback(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All eigenpairs of symmetric PSD A (n, n), ascending, by numpy's eigh or, failing that, an SVD."""
    try:
        return np.linalg.eigh(A)
    except np.linalg.LinAlgError:
        U, s, _ = sla.svd(A, lapack_driver="gesvd")                 # PSD: singular pairs = eigenpairs
        return s[::-1].copy(), U[:, ::-1].copy()


def eigh_desc(M: torch.Tensor, m: int) -> tuple[np.ndarray, torch.Tensor]:
    """Top-m eigenpairs of symmetric PSD float32/float64 M (n, n): values (m,) descending, vectors (n, m) on M's
    device.

    ARPACK's Lanczos iteration on CPU for a few eigenpairs of a large matrix (`lanczos_suits`), else torch's
    full decomposition (LAPACK's divide and conquer on torch's own threads, or the GPU's). On the 2-core CPU
    torch's full float32 / float64 decomposition took 0.13 / 0.25 s at n = 1,440 and 1.16 / 2.20 s at 3,136,
    against 0.20 / 0.43 and 1.61 / 3.25 s for scipy's partial MRRR driver on one BLAS thread even for only n / 4
    pairs (a second BLAS thread pool beside torch's oversubscribes the cores, 10-25x slower, so scipy ran on
    one). Falls back to numpy's eigh, then to an SVD, with a warning, when the first choice raises (`eigh` can
    fail to converge on matrices with many zero eigenvalues).
    """
    n = M.shape[0]
    try:
        if lanczos_suits(M, m):                                              # few pairs: no O(n^3) reduction
            vals, vecs = eigsh(M.numpy(), k=m, which="LA")
            order = np.argsort(vals)[::-1]
            return vals[order].copy(), torch.from_numpy(vecs[:, order].copy())
        vals, vecs = full_eigh(M)
        return vals.flip(0)[:m].cpu().numpy(), vecs.flip(1)[:, :m]
    except (np.linalg.LinAlgError, RuntimeError, ValueError) as err:
        warnings.warn(f"eigendecomposition of a {n}x{n} second-moment matrix failed ({err}); "
                      "falling back to numpy eigh / SVD", RuntimeWarning, stacklevel=3)
        with one_blas_thread():
            vals, vecs = _eigh_fallback(M.cpu().numpy())
    return vals[::-1][:m].copy(), torch.from_numpy(vecs[:, ::-1][:, :m].copy()).to(M.device)


def full_eigh(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every eigenpair of symmetric M (n, n) by torch: values (n,) ascending, vectors (n, n)."""
    return torch.linalg.eigh(M)


def lanczos_suits(M: torch.Tensor, m: int) -> bool:
    """True when `eigh_desc` takes M's top m eigenpairs from ARPACK's Lanczos iteration: on CPU, for at most
    n / _LANCZOS_FRACTION pairs of an n x n matrix with n >= _LANCZOS_MIN_DIM."""
    n = M.shape[0]
    return M.device.type == "cpu" and n >= _LANCZOS_MIN_DIM and 0 < m <= n // _LANCZOS_FRACTION


def n_keep(vals: np.ndarray, total: float, variance: float, *, complete: bool) -> int | None:
    """k from the leading eigenvalues `vals` (descending) of a matrix with trace `total`.

    Returns None when `vals` is not `complete` and every listed ratio is still <= variance (k unknown).
    """
    vals = np.clip(vals, 0.0, None)
    if variance >= 1:
        k = min(int(variance), len(vals))
    else:
        k = int(np.searchsorted(np.cumsum(vals) / total, variance, side="right")) + 1
        if k > len(vals):
            if not complete:
                return None
            k = len(vals)
    return min(k, int(np.count_nonzero(vals[:k] > RANK_RTOL * vals[0])))


def subspace(M: torch.Tensor, variance: float, hint: int | None) -> tuple[np.ndarray, torch.Tensor]:
    """Kept eigenpairs of symmetric PSD float64 M (n, n): eigenvalues (k,) and eigenvectors (n, k)."""
    n = M.shape[0]
    total = float(M.diagonal().sum())
    if n == 0 or total <= 0:
        return np.zeros(0), M.new_zeros((n, 0))
    if variance >= 1:
        m = min(int(variance), n)
    else:
        guess = _FIRST_GUESS if hint is None else hint + hint // 4 + 8
        if lanczos_suits(M, guess):                                          # a few pairs may be enough
            vals, vecs = eigh_desc(M, guess)
            k = n_keep(vals, total, variance, complete=False)
            if k is not None:
                return vals[:k], vecs[:, :k]
        m = n                                                                # else one full decomposition
    vals, vecs = eigh_desc(M, m)
    k = n_keep(vals, total, variance, complete=True)
    return vals[:k], vecs[:, :k]


def range_basis(M: torch.Tensor, variance: float, hint: int | None) -> torch.Tensor | None:
    """A start for `warm_subspace` when no nearby basis is known (an all-data fit), by a randomized range
    finder (Halko, Martinsson & Tropp 2011): float64 (n, m) leading Ritz vectors of M from a seeded Gaussian
    block of b columns after `_RANGE_POWER` power steps on M in float32 (m = k + k / 4 + 8 of the block's Ritz
    values), or None once b would pass n / `_RANGE_MAX_FRACTION`. b is at least `_RANGE_OVERSAMPLE` times that
    k: without a hint, a first block with no power step only sizes it (Ritz values are lower bounds of the
    leading eigenvalues, so their k is at least the exact one). `hint`: a guess of k, as in `subspace`. None
    also under an integer `variance`."""
    n = M.shape[0]
    total = float(M.diagonal().sum())
    if total <= 0 or variance >= 1:
        return None
    Mf = M.float()
    gen = torch.Generator(device=M.device).manual_seed(0)                  # the same basis on every run
    b = max(4 * _FIRST_GUESS, _RANGE_OVERSAMPLE * hint + 8 if hint else 0)
    power = _RANGE_POWER if hint else 0
    while b <= n // _RANGE_MAX_FRACTION:
        Q = orthonormal_columns(Mf @ torch.randn(n, b, generator=gen, device=M.device, dtype=Mf.dtype))
        for _ in range(power):
            Q = orthonormal_columns(Mf @ Q)
        theta, Y = torch.linalg.eigh(Q.T @ Mf @ Q)
        k = n_keep(theta.flip(0).double().cpu().numpy(), total, variance, complete=False)
        if power and k is not None and _RANGE_OVERSAMPLE * k <= b:
            return (Q @ Y.flip(1)[:, :min(b, k + k // 4 + 8)]).double()
        b = max(b, _RANGE_OVERSAMPLE * k + 8) if k is not None else 4 * b
        power = _RANGE_POWER
    return None


def single_precision_basis(M: torch.Tensor, variance: float) -> torch.Tensor:
    """A start for `warm_subspace` where `range_basis` declines (a subspace wider than a third of M): the kept
    eigenvectors of M's full float32 decomposition, as float64 (LAPACK in single precision is about twice as
    fast; the float64 Rayleigh-Ritz and its residual checks then decide, as for any start). No Lanczos first
    guess: a subspace this wide never fits in one (on raw MNIST pixels it cost 0.07 s per class for nothing)."""
    total = float(M.diagonal().sum())
    if total <= 0:
        return M.new_zeros((M.shape[0], 0), dtype=torch.float64)
    vals, vecs = eigh_desc(M.float(), M.shape[0])
    return vecs[:, :n_keep(vals, total, variance, complete=True)].double()


def warm_subspace(G: torch.Tensor, Z0: torch.Tensor, variance: float, *,
                  fold: bool = False) -> tuple[np.ndarray, torch.Tensor] | None:
    """Kept eigenpairs of symmetric PSD float64 G (n, n) by block Krylov Rayleigh-Ritz from Z0 (n, m), as
    `subspace` returns them, or None when the Ritz pairs have not converged (probes/masc.py's docstring).

    Every kept Ritz pair's residual must be at most WARM_RTOL times the largest Ritz value and, with `fold`
    (Z0 is a basis fitted on more rows than G's: the all-data fit's, for a cross-fitting fold), also at most
    FOLD_RTOL times the smallest kept one, so that the tail directions are the fold's own and not the start's."""
    n, m = Z0.shape
    total = float(G.diagonal().sum())
    if m == 0 or total <= 0 or variance >= 1:
        return None
    Q = orthonormal_columns(Z0)                                              # (n, m) orthonormal
    GQ = G @ Q
    H = Q.T @ GQ                                                             # (m, m), grown block by block
    for step in range(_WARM_STEPS):
        theta, Y = torch.linalg.eigh((H + H.T) / 2)
        theta, Y = theta.flip(0), Y.flip(1)
        vals = theta.cpu().numpy()
        k = n_keep(vals, total, variance, complete=False) if vals[0] > 0 else None
        tested = Q.shape[1] if k is None else min(k + 1, Q.shape[1])        # the kept pairs and the next one
        Z = Q @ Y[:, :tested]                                                # (n, tested) Ritz vectors
        residual = GQ @ Y[:, :tested] - Z * theta[:tested]
        norms = torch.linalg.vector_norm(residual, dim=0)
        tol = WARM_RTOL * max(float(vals[0]), 0.0)
        if fold:
            tol = min(tol, FOLD_RTOL * max(float(vals[(k or tested) - 1]), 0.0))
        if k is not None and k > 0 and float(norms[:k].max()) <= tol:
            return vals[:k].copy(), Z[:, :k]
        W = residual[:, norms > tol]                                         # Davidson: grow by the unconverged
        if step + 1 == _WARM_STEPS or W.shape[1] == 0:
            return None
        if Q.shape[1] + W.shape[1] > n // 2:                                 # thick restart: keep the best Ritz
            keep = min(Q.shape[1], tested + tested // 4)                     # vectors, a quarter beyond the tested
            if keep + W.shape[1] > n // 2:
                return None
            Q, GQ, H = Q @ Y[:, :keep], GQ @ Y[:, :keep], Y[:, :keep].T @ H @ Y[:, :keep]
        for _ in range(2):                                                   # twice: orthogonal to Q to rounding
            W = W - Q @ (Q.T @ W)
        Qn = orthonormal_columns(W)
        GQn = G @ Qn
        C = Q.T @ GQn                                                        # the new rows and columns of H only
        H = torch.cat([torch.cat([H, C], dim=1), torch.cat([C.T, Qn.T @ GQn], dim=1)], dim=0)
        Q, GQ = torch.cat([Q, Qn], dim=1), torch.cat([GQ, GQn], dim=1)
    return None
