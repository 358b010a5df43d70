"""MASC, the Minimum Angle Subspace Classifier (Ketha & Ramaswamy, arXiv 2501.14687).

One layer's activations: N vectors x of length d, labels in [0, K). For each class c with training matrix
X_c (rows = the n_c vectors labeled c) MASC takes the **uncentered** PCA of X_c, i.e. the eigenvectors of
the second-moment matrix S_c = X_c^T X_c (the paper stacks X_c with -X_c, which is the same thing). It
keeps k_c = (number of components whose cumulative explained-variance ratio is <= tau) + 1 components,
tau = `variance`; tau >= 1 means exactly int(tau) components. U_c (d, k_c) are the top-k_c eigenvectors
and a vector is assigned to the class whose subspace makes the smallest angle with it:
argmax_c ||U_c^T x||^2 / ||x||^2 (the squared cosine of that angle).

k_c is also capped at the numerical rank of X_c (eigenvalues above `eigensolvers.RANK_RTOL` times the largest): a
zero-variance direction is arbitrary and cannot be recovered from the Gram matrix. With tau < 1 the
cap only matters for tau within about 1e-9 * d of 1.

Speed: S_c is eigendecomposed in float64. On CPU a few top eigenpairs come from ARPACK's Lanczos iteration
when they suffice (a first guess of k_c, or `k_hint`, e.g. the k_c of an all-data fit when fitting
cross-validation folds), else one full decomposition by torch (`eigensolvers.eigh_desc`). Coordinates that
are zero for every vector of a class (dead ReLU units) are dropped before the decomposition; their
eigenvector entries are exactly zero. With n_c < d, `fit` (and `fit_by_class`, which cross-fitting feeds one
class block at a time) decomposes the n_c x n_c Gram matrix X_c X_c^T instead and maps the eigenvectors back.

Cross-validation folds (`ClassBlock.start`, `fit_moments(starts=)`): a fold's class subspace is a small
perturbation of the all-data one, so both routes refine the all-data basis instead of decomposing the fold's
matrix from scratch. The Gram route (the second-moment route likewise, on the fold's d x d S_c from U_all):
Rayleigh-Ritz on the fold's own Gram matrix G (n_f x n_f) from the start Z0 = X_f U_all, the subspace grown
by the residuals of the unconverged Ritz pairs (Davidson; `eigensolvers._WARM_STEPS` at most). It is accepted only when
every kept Ritz pair (theta_i, z_i) has a residual ||G z_i - theta_i z_i|| <= eigensolvers.WARM_RTOL * theta_1 and
<= eigensolvers.FOLD_RTOL * theta_k (the smallest kept; each theta_i is then within that of an eigenvalue of G, the
kept subspace within about that over the spectral gap of the exact one) and the Ritz values reach the energy
fraction tau within the basis (Ritz values are lower bounds of the leading eigenvalues, so the exact k is at most
the Ritz k); otherwise the fold gets the exact decomposition. The result lies in the span of the fold's own rows
and is, to that tolerance, the exact fold fit. The test relative to theta_k matters: the all-data basis saw the
fold's images, and a test relative to theta_1 alone accepted folds whose tail directions were still the start's
(out-of-fold scores up to 6e-3 from the exact fold fits' and more agreement with the given labels: a leak; until
2026-12-07). Orthonormal bases come from `eigensolvers.orthonormal_columns` (Cholesky QR, Householder fallback).
The all-data fit (no start) on CPU, on either route, starts the same refinement from
`eigensolvers.range_basis` when k_c is small against the matrix: a randomized range finder in float32 (a seeded
Gaussian block of about 3 k_c columns, two power steps); the residual checks decide as for a fold, with the
exact decomposition as the fallback. A wider subspace (no start, or a start of more than `PARTIAL_FRACTION`
of the matrix, e.g. raw pixels) starts from the float32 decomposition of its own matrix
(`eigensolvers.single_precision_basis`), refined and checked the same way (docs/benchmarks.md 1b).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch

from noisefix.errors import ProbeError
from noisefix.probes import eigensolvers
from noisefix.probes.eigensolvers import PARTIAL_FRACTION, subspace
from noisefix.probes.base import Probe
from noisefix.probes.stats import ClassMoments, all_finite, as_features, as_labels

#: Score this many vector-component products at a time (bounds the (rows, sum k_c) temporary).
_SCORE_BLOCK = 2**24



class _ClassFit(NamedTuple):
    """One class's subspace: eigenvalues (k,) float64 descending, basis (d, k) float64, trace of S_c."""

    vals: np.ndarray
    basis: torch.Tensor
    total: float


def _second_moment_subspace(S: torch.Tensor, variance: float, hint: int | None,
                            start: torch.Tensor | None = None) -> _ClassFit:
    """Subspace from S_c (d, d) float64; coordinates that are zero for every vector are dropped first.
    `start`: (d, m) basis near the subspace (the all-data one, for a fold), refined by
    `eigensolvers.warm_subspace` with its fold test as the Gram route does, with the exact decomposition when that
    does not converge; used only for a start of at most `PARTIAL_FRACTION` of d columns (raw MNIST pixels keep
    ~240 of 784: refined from there, it fails).
    Without a usable start, on CPU, the refinement starts from `range_basis` or, for a wide subspace, from the
    matrix's own float32 decomposition."""
    S = (S + S.T) / 2
    total = float(S.diagonal().sum())
    active = torch.nonzero(S.diagonal() > 0).flatten()
    whole = len(active) == len(S)
    A = S if whole else S[active][:, active]
    warm = None
    if start is not None and 0 < start.shape[1] <= PARTIAL_FRACTION * len(A):
        warm = eigensolvers.warm_subspace(A, (start if whole else start[active.to(start.device)]).to(A), variance,
                                          fold=True)
    elif A.device.type == "cpu" and variance < 1:                            # no start, or a wide one
        Z0 = eigensolvers.range_basis(A, variance, hint) if start is None else None
        Z0 = eigensolvers.single_precision_basis(A, variance) if Z0 is None else Z0
        warm = eigensolvers.warm_subspace(A, Z0, variance)
    vals, vecs = subspace(A, variance, hint) if warm is None else warm
    if whole:
        return _ClassFit(vals, vecs, total)
    basis = S.new_zeros((len(S), vecs.shape[1]))
    basis[active] = vecs
    return _ClassFit(vals, basis, total)


def _gram_subspace(Xc: torch.Tensor, variance: float, hint: int | None = None, *,
                   G: torch.Tensor | None = None, start: torch.Tensor | None = None) -> _ClassFit:
    """Subspace from the rows of Xc (n_c, d) float32 with n_c < d, through the Gram matrix Xc Xc^T (n_c, n_c).

    If Xc Xc^T v = lam v then u = Xc^T v / sqrt(lam) is a unit eigenvector of Xc^T Xc with eigenvalue lam.
    The products with Xc are float32 GEMMs (as `ClassStats` forms second moments), the eigenproblem float64.
    `hint`: a guess of k_c (e.g. from an all-data fit), which saves the all-eigenvalues pass when it suffices.
    `G`: Xc Xc^T float64 when already known (a sub-block of a larger class's Gram matrix, for cross-fitting folds).
    `start`: (d, m) basis near the subspace (the all-data one, for a fold): refined by
    `eigensolvers.warm_subspace` with its fold test, with the exact decomposition when that does not converge.
    Without one, on CPU, the start is
    `eigensolvers.range_basis` (a randomized range finder) or, for a wide subspace, G's float32 decomposition
    (LAPACK in single precision is about twice as fast), refined and checked the same way.
    """
    G = gram_matrix(Xc) if G is None else G
    if start is not None:
        warm = eigensolvers.warm_subspace(G, (Xc @ start.to(Xc)).double(), variance, fold=True)
    elif G.device.type == "cpu" and variance < 1:
        Z0 = eigensolvers.range_basis(G, variance, hint)
        Z0 = eigensolvers.single_precision_basis(G, variance) if Z0 is None else Z0
        warm = eigensolvers.warm_subspace(G, Z0, variance)
    else:
        warm = None
    vals, V = subspace(G, variance, hint) if warm is None else warm
    basis = (Xc.T @ V.to(Xc)).double() / torch.from_numpy(np.sqrt(vals)).to(Xc.device)
    return _ClassFit(vals, basis, float(G.diagonal().sum()))


def gram_matrix(rows: torch.Tensor) -> torch.Tensor:
    """rows @ rows.T (n, n) float64 from a float32 GEMM: the Gram route's matrix, as ClassStats forms S_c."""
    rows = rows.float()
    return (rows @ rows.T).double()


class ClassBlock(NamedTuple):
    """One class's training rows for `MASC.fit_by_class`.

    rows: (n_c, d), any float dtype. gram: rows @ rows.T (n_c, n_c) float64 when already known (e.g. a
    sub-block of a larger set's Gram matrix, for cross-fitting folds), else None; used only when n_c < d.
    start: (d, m) basis near this class's subspace (the all-data fit's `components_[c]`, for a fold), else
    None; the Gram route then refines it (module docstring) instead of a full decomposition.
    """

    rows: torch.Tensor
    gram: torch.Tensor | None = None
    start: torch.Tensor | None = None


def _class_subspace(block: ClassBlock, variance: float, hint: int | None) -> _ClassFit:
    """One class's subspace by the cheaper route: the Gram matrix when n_c < d, else the d x d second moment."""
    Xc, G, start = block
    Xc = Xc.float()                                                          # as ClassStats does: float32 GEMMs
    if len(Xc) < Xc.shape[1]:
        return _gram_subspace(Xc, variance, hint, G=G, start=start)
    return _second_moment_subspace((Xc.T @ Xc).double(), variance, hint)


class MASC(Probe):
    """Minimum Angle Subspace Classifier on one layer's activations (uncentered PCA per class).

    Args:
        variance: tau. Keep the components up to the first whose cumulative explained-variance ratio
            exceeds tau (0.99: 99 %); tau >= 1 keeps exactly int(tau) components.
        device: where the decompositions and the scoring run; None: where the data or statistics are.

    Attributes (K classes, d features, k_c components of class c):
        classes_: int64 (K,), the class indices 0..K-1.
        n_features_in_: int, d.
        class_counts_: int64 (K,), training vectors per class (0: empty class, never predicted).
        components_: list of K float32 torch tensors (d, k_c), orthonormal bases U_c.
        n_components_: int64 (K,), k_c (0 for an empty class or one whose vectors are all zero).
        explained_variance_: list of K float64 (k_c,) arrays, eigenvalues of S_c divided by n_c.
        explained_variance_ratio_: list of K float64 (k_c,) arrays, eigenvalues of S_c divided by trace(S_c).

    Fitted from the vectors (`fit`), from per-class statistics (`fit_moments`) or class by class from
    per-class row blocks (`fit_by_class`); all three give the same subspaces. Ties in `predict` go to the
    lowest class index; an all-zero input vector scores 0 for every non-empty class and is therefore
    predicted as the lowest non-empty class.
    """

    fits_from_moments = True
    uses_second_moments = True
    gram_route = True

    def __init__(self, variance: float = 0.99, device=None):
        self.variance = variance
        self.device = device

    @classmethod
    def informative(cls, dim: int, num_classes: int) -> bool:
        """Not on d <= K features (a network's logits): each class's 99 %-variance subspace then spans nearly
        all of them and every angle is near 0 (mlp_small's logits on MNIST at 60 % noise: 37-46 % clean
        accuracy, NCM 94-96)."""
        return dim > num_classes

    def _check_params(self) -> None:
        if not (isinstance(self.variance, (int, float)) and self.variance > 0):
            raise ProbeError(f"variance must be a fraction in (0, 1) or a number of components >= 1, "
                             f"got {self.variance!r}")

    def fit(self, X, y, *, num_classes: int | None = None) -> MASC:
        """Fit from in-memory activations X (N, d) and labels y (N,); the Gram route for classes with n_c < d."""
        self._check_params()
        X = as_features(X, device=self.device)
        y, K = as_labels(y, len(X), num_classes)
        blocks = (ClassBlock(X[torch.from_numpy(np.flatnonzero(y == c)).to(X.device)]) for c in range(K))  # (n_c, d)
        return self._fit_blocks(blocks, None)

    def fit_by_class(self, blocks, *, k_hint=None, total_sum=None) -> MASC:
        """Fit class by class from per-class row blocks: the same subspaces as `fit` on their rows stacked.

        blocks: for c = 0..K-1 a `ClassBlock` (or a (rows, gram[, start]) tuple): the rows (n_c, d) labeled c, all on
            one device (moved to `device` when it is set), and optionally their Gram matrix. Each class is
            decomposed as `fit` does it (through the Gram matrix when n_c < d); an iterator keeps only one
            class's block in memory at a time.
        k_hint: optional (K,) guesses of k_c, as in `fit_moments`.
        total_sum: ignored; present so that every `gram_route` probe is fitted the same way (VeLPIC uses it).
        """
        self._check_params()
        return self._fit_blocks((_checked_block(ClassBlock(*b), self.device) for b in blocks), k_hint)

    def _fit_blocks(self, blocks, k_hint) -> MASC:
        """The per-class routine of `fit` and `fit_by_class`: one `_class_subspace` per block, then the fit."""
        fits, counts, dims, device = [], [], set(), None
        for c, block in enumerate(blocks):
            fits.append(_class_subspace(block, self.variance, None if k_hint is None else int(k_hint[c])))
            counts.append(len(block.rows))
            dims.add(int(block.rows.shape[1]))
            device = block.rows.device
        if len(dims) != 1:
            raise ProbeError(f"MASC.fit_by_class needs one (n_c, d) block per class with the same d, got dims "
                             f"{sorted(dims)}; pass the rows of every class of one layer")
        return self._set_fitted(fits, np.array(counts, dtype=np.int64), dims.pop(), device)

    def fit_moments(self, moments: ClassMoments, *, k_hint=None, starts=None) -> MASC:
        """Fit from per-class statistics (same answer as `fit` on the vectors they summarize).

        k_hint: optional (K,) guesses of k_c, e.g. the `n_components_` of an all-data fit when fitting
        one cross-validation fold; they only make the eigendecomposition faster, never change the result.
        starts: optional K (d, m_c) bases near the class subspaces (the all-data fit's `components_`, for a
        fold): refined on the fold's own second moments (module docstring) instead of decomposed afresh.
        """
        self._check_params()
        second = moments.second.to(self.device if self.device is not None else moments.second.device)
        if not bool(torch.isfinite(second).all()):
            raise ProbeError("class statistics contain NaN or inf; the activations were not finite")
        K = moments.num_classes
        hints = [None] * K if k_hint is None else [int(k) for k in k_hint]
        starts = [None] * K if starts is None else list(starts)
        fits = [_second_moment_subspace(second[c], self.variance, hints[c], starts[c]) for c in range(K)]
        return self._set_fitted(fits, moments.counts.cpu().numpy(), moments.dim, second.device)

    def _set_fitted(self, fits, counts: np.ndarray, d: int, device: torch.device) -> MASC:
        """The fitted attributes from one `_ClassFit` per class, and the scoring caches: _basis (d, sum k_c)
        float32, the stacked bases; _owner (sum k_c, K) float32, one-hot class of each column; _empty (K,) bool."""
        K = len(fits)
        self.classes_ = np.arange(K)
        self.n_features_in_ = d
        self.class_counts_ = np.asarray(counts, dtype=np.int64)
        self.components_ = [f.basis.float() for f in fits]
        self.n_components_ = np.array([U.shape[1] for U in self.components_], dtype=np.int64)
        self.explained_variance_ = [f.vals / max(n, 1) for f, n in zip(fits, self.class_counts_)]
        self.explained_variance_ratio_ = [f.vals / f.total if f.total > 0 else f.vals for f in fits]
        self._warn_degenerate()
        self._basis = torch.cat(self.components_, dim=1)                                  # (d, sum k_c)
        owner = torch.repeat_interleave(torch.arange(K), torch.from_numpy(self.n_components_))
        self._owner = torch.nn.functional.one_hot(owner, K).float().to(device)           # (sum k_c, K)
        self._empty = torch.from_numpy(self.class_counts_ == 0).to(device)                # (K,)
        return self

    def _warn_degenerate(self) -> None:
        for what, mask in (("no training vectors (never predicted)", self.class_counts_ == 0),
                           ("a single training vector (a 1-D subspace through it)", self.class_counts_ == 1),
                           ("only all-zero training vectors (scored 0)",
                            (self.class_counts_ > 0) & (self.n_components_ == 0))):
            if mask.any():
                warnings.warn(f"class subspaces: classes {np.flatnonzero(mask).tolist()} have {what}", RuntimeWarning,
                              stacklevel=3)

    def decision_function(self, X) -> np.ndarray:
        """Squared cosine of the angle between each row of X (N, d) and each class subspace: float32 (N, K).

        Empty classes score -inf; all-zero rows score 0 for every other class (warned once per call).
        """
        X = self._check_features(X)
        device = self._basis.device
        out = torch.empty((len(X), len(self.classes_)), dtype=torch.float32)
        step = max(1, _SCORE_BLOCK // max(1, self._basis.shape[1]))
        n_zero = 0
        for i in range(0, len(X), step):
            x = X[i:i + step].to(device)                                                 # (b, d)
            proj = (x @ self._basis).square_() @ self._owner                             # (b, K) ||U_c^T x||^2
            sq = x.square().sum(dim=1, keepdim=True)                                     # (b, 1) ||x||^2
            s = torch.where(sq > 0, proj / sq.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
            out[i:i + step] = s.masked_fill(self._empty, float("-inf")).cpu()
            n_zero += int((sq == 0).sum())
        if n_zero:
            warnings.warn(f"MASC: {n_zero} of {len(X)} activation vectors are all zero; they score 0 for "
                          "every class and are predicted as the lowest non-empty class", RuntimeWarning,
                          stacklevel=2)
        return out.numpy()


def _checked_block(block: ClassBlock, device) -> ClassBlock:
    """The block on `device` (None: where it is), after checking its rows are finite (no (n_c, d) temporary)."""
    rows, gram, start = block
    if not all_finite(rows):
        raise ProbeError("class rows contain NaN or inf values; check the model weights (a diverged training run?)")
    if device is None:
        return block
    return ClassBlock(*(None if t is None else t.to(device) for t in (rows, gram, start)))
