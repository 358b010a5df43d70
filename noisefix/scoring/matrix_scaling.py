"""Matrix scaling: a calibration map from probe log probabilities to P(true class), fitted on images whose labels
are known to be right (numpy / scipy only).

One temperature can only make a probe uniformly more or less sure. A probe's mistakes are not uniform: on
Fashion-MNIST it is sure of "T-shirt" for some shirts and rarely wrong about trousers, and EM on noisy labels
reads such confident mistakes as wrong labels. With clean labels the map can learn them:

    P(true | x) = softmax(u W + b),   u = the (N, K) log probabilities, centred per row,

W (K, K) and b (K,) fitted by L-BFGS on the cross-entropy of the clean labels, with an L2 penalty
`lam * (sum of W's off-diagonal entries squared + sum of b squared) / K` (off-diagonal-and-intercept
regularization, Kull et al., NeurIPS 2019): the diagonal is free, so as lam grows the map tends to one scale
per class (temperature scaling when the classes agree; the fit starts there, W = I / t). `lam` is chosen from
`LAMBDAS` by the log loss on `FOLDS`-fold cross-validation over the clean images, so a small clean set keeps
the map close to its start. The final fit on all of them starts from the mean of the folds' solutions at that
lam (the loss is convex: the same optimum, in fewer steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisefix.errors import DataError
from noisefix.nn.device import one_blas_thread, thread_map
from noisefix.scoring.calibration import log_softmax

LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # penalties tried; the cross-validated best is used
FOLDS = 3
MAX_ITER = 300  # L-BFGS iterations per fit (measured: 50-300 on 10,000 test images of 10 classes)
#: L-BFGS-B stops when the loss changes by less than FTOL of itself. scipy's default 2.2e-9 took 3,682 loss
#: evaluations on Fashion-MNIST's clean test split at 0 % noise; 1e-6 halves the fit and moved 7 of 248 flags
#: there (9 of 21,150 at 40 % noise), the noise estimate not at all (docs/cleaning.md, "clean's cost").
FTOL = 1e-6


@dataclass
class MatrixScaling:
    """A fitted map (module docstring).

    Attributes:
        weight: float64 (K, K); bias: float64 (K,).
        lam: the chosen penalty; cv_log_loss: its mean cross-validated log loss per image.
        n_fit: number of clean images it was fitted on.
    """

    weight: np.ndarray
    bias: np.ndarray
    lam: float
    cv_log_loss: float
    n_fit: int

    def log_probs(self, log_probs: np.ndarray) -> np.ndarray:
        """(N, K) calibrated log P(true class) from (N, K) log probabilities."""
        return log_softmax(_centred(log_probs) @ self.weight + self.bias)


def _centred(log_probs: np.ndarray) -> np.ndarray:
    u = np.asarray(log_probs, dtype=np.float64)
    return u - u.mean(axis=1, keepdims=True)


def _unpack(theta: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat parameters -> (W (K, K), b (K,))."""
    return theta[: K * K].reshape(K, K), theta[K * K:]


def _fit(u: np.ndarray, labels: np.ndarray, lam: float, start: np.ndarray) -> np.ndarray:
    """Flat (W, b) minimizing the penalized mean cross-entropy, from flat `start`.

    With A = [u, 1] (n, K + 1) and Theta = [W; b] the logits are A Theta; the label terms of the loss and its
    gradient are linear in Theta through the constant C = A^T onehot(labels) (K + 1, K), so an evaluation is
    two products with A, one exp and a few reductions. The logits are held as (K, n), one image per column:
    numpy's reductions over the K rows of that layout are 2.5x faster than over the K columns of (n, K)
    (0.33 against 0.84 ms per evaluation at n = 8,000, K = 10; pair-flip noise takes ~1,700 of them)."""
    from scipy.optimize import minimize

    n, K = u.shape
    At = np.vstack([u.T, np.ones((1, n))])                                    # A^T (K + 1, n)
    C = np.zeros((K + 1, K))
    np.add.at(C.T, labels, At.T)                                              # C[:, k] = sum of A's rows of class k
    penalty = np.vstack([1.0 - np.eye(K), np.ones((1, K))])                   # W's off-diagonal and b

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        Theta = theta.reshape(K + 1, K)                                       # [W; b]: the flat (W, b) layout
        z = Theta.T @ At                                                      # logits (K, n)
        top = z.max(axis=0)
        z -= top
        np.exp(z, out=z)
        total = z.sum(axis=0)
        z /= total                                                            # softmax, per column
        reg = Theta * penalty
        value = (np.sum(np.log(total) + top) - np.sum(Theta * C)) / n + lam * np.sum(reg * reg) / K
        grad = (At @ z.T - C) / n + 2.0 * lam * reg / K
        return float(value), grad.ravel()

    with one_blas_thread():  # (n, K) x (K, K) products: a thread pool only adds overhead
        return minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITER, "ftol": FTOL}).x


def _log_loss(u: np.ndarray, labels: np.ndarray, theta: np.ndarray) -> float:
    W, b = _unpack(theta, u.shape[1])
    return float(-log_softmax(u @ W + b)[np.arange(len(labels)), labels].sum())


def fit_matrix_scaling(log_probs, labels, *, temperature: float = 1.0, lambdas=LAMBDAS, folds: int = FOLDS,
                       seed: int = 0) -> MatrixScaling:
    """Fit the map on (n, K) log probabilities of images whose (n,) labels are right, starting from
    temperature scaling with `temperature` (W = I / temperature); lam by `folds`-fold cross-validation."""
    u = _centred(log_probs)
    n, K = u.shape
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= K)):
        raise DataError(f"matrix scaling needs {n} labels in [0, {K}), got shape {labels.shape}")
    if n < folds:
        raise DataError(f"matrix scaling needs at least {folds} clean images, got {n}")
    start = np.concatenate([(np.eye(K) / temperature).ravel(), np.zeros(K)])
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    path = sorted(range(len(lambdas)), key=lambda j: -lambdas[j])  # strongest penalty first

    def fold_path(f: int) -> dict[int, tuple[float, np.ndarray]]:
        """Per penalty j: (held-out log loss, solution) of fold f."""
        fit, test = fold_of != f, fold_of == f
        theta, out = start, {}
        for j in path:  # warm start from the next stronger penalty's solution (a convex loss: the same optimum)
            theta = _fit(u[fit], labels[fit], lambdas[j], theta)
            out[j] = (_log_loss(u[test], labels[test], theta), theta)
        return out

    losses = np.zeros(len(lambdas))
    solutions = np.zeros((len(lambdas), len(start)))
    for fold in thread_map(fold_path, range(folds)):  # the folds side by side; summed in fold order
        for j, (loss, theta) in fold.items():
            losses[j] += loss / n
            solutions[j] += theta / folds
    best = int(np.argmin(losses))
    W, b = _unpack(_fit(u, labels, lambdas[best], solutions[best]), K)  # from the folds' mean: near the optimum
    return MatrixScaling(weight=W, bias=b, lam=float(lambdas[best]), cv_log_loss=float(losses[best]), n_fit=n)
