"""A linear probe: multinomial logistic regression on standardized activations.

Activations X (N, d), labels in [0, K). Features are standardized with the training mean and standard
deviation (constant features are left unscaled); the weights minimize the mean cross-entropy plus
||W||^2 / (2 C N) (scikit-learn's C convention), by full-batch L-BFGS in torch. The standardization is
folded into the weights, so X is never copied: logits = X (W / s) + (b - (mu / s) W).
"""

from __future__ import annotations

import numpy as np
import torch

from noisefix.errors import ProbeError
from noisefix.probes.base import Probe
from noisefix.probes.stats import as_features, as_labels


def _standardization(X: torch.Tensor, block: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Column mean and scale (std, or 1 for a constant column) of X (N, d): two (d,) float32 tensors.

    Column sums as GEMVs over row blocks: torch's own dim-0 reductions are an order of magnitude slower.
    """
    N = len(X)
    ones = torch.ones(min(N, block), dtype=X.dtype, device=X.device)
    mean = sum(ones[:len(c)] @ c for c in X.split(block)) / N                               # (d,)
    var = sum(ones[:len(c)] @ (c - mean).square_() for c in X.split(block)) / N
    std = var.sqrt()
    return mean, torch.where(std > 0, std, 1.0)


def _logits(X, W, b, mean, scale) -> torch.Tensor:
    """((X - mean) / scale) W + b without materializing the standardized X: (N, K).

    Computed as (Ws^T X^T)^T, which BLAS runs faster than X Ws for a skinny Ws.
    """
    Ws = W / scale[:, None]                                                                  # (d, K)
    return (Ws.T @ X.T).T + (b - mean @ Ws)


class LogRegProbe(Probe):
    """Multinomial logistic regression (L2-regularized) as a probe.

    Args:
        C: inverse regularization strength (as in scikit-learn), > 0.
        max_iter: L-BFGS iterations.
        seed: seeds the small random initial weights. The objective is convex, so the seed moves only
            the starting point; fits from different seeds agree to the solver tolerance.
        device: where the optimization runs; None: where X is.

    Attributes (K classes, d features):
        classes_: int64 (K,).
        n_features_in_: int, d.
        class_counts_: int64 (K,), training vectors per class (0: empty class, scored -inf).
        mean_, scale_: float32 torch (d,), the standardization.
        coef_: float32 torch (d, K), weights on standardized features; intercept_: float32 torch (K,).
        n_iter_: int, L-BFGS iterations run.

    `decision_function` returns the logits, `predict_proba` their softmax (the class probabilities), which are
    also the `ranking_scores` that cross-fitting stores. Ties in `predict` go to the lowest class index.
    Fitted on the activations only (no capability flag: cross-fitting refits it on each fold's rows).
    """

    def __init__(self, C: float = 1.0, max_iter: int = 100, seed: int = 0, device=None):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed
        self.device = device

    def fit(self, X, y, *, num_classes: int | None = None) -> LogRegProbe:
        """Fit on activations X (N, d) and labels y (N,); validates C and max_iter first."""
        if not (self.C > 0 and int(self.max_iter) >= 1):
            raise ProbeError(f"LogRegProbe needs C > 0 and max_iter >= 1, got C={self.C}, max_iter={self.max_iter}")
        X = as_features(X, device=self.device)
        y, K = as_labels(y, len(X), num_classes)
        if len(X) == 0:
            raise ProbeError("LogRegProbe needs at least one training vector")
        N, d = X.shape
        counts = np.bincount(y, minlength=K)
        mean, scale = _standardization(X)
        onehot = torch.nn.functional.one_hot(torch.from_numpy(y).to(X.device), K).float()  # (N, K)
        empty = torch.from_numpy(counts == 0).to(X.device)
        penalty = 1.0 / (2.0 * self.C * N)
        gen = torch.Generator().manual_seed(int(self.seed))
        W = (0.01 * torch.randn((d, K), generator=gen)).to(X.device)
        b = torch.zeros(K, device=X.device)
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=int(self.max_iter), history_size=10,
                                tolerance_grad=1e-5, tolerance_change=1e-7, line_search_fn="strong_wolfe")

        def closure():
            # Hand-written gradient: autograd would form X^T G through a slow transposed GEMM.
            logp = torch.log_softmax(_logits(X, W, b, mean, scale).masked_fill(empty, float("-inf")), dim=1)
            loss = -(logp.masked_fill(empty, 0.0) * onehot).sum() / N + penalty * W.square().sum()
            G = (logp.exp() - onehot) / N                                                # (N, K) dloss/dlogits
            col = G.sum(dim=0)                                                           # (K,)
            grad_ws = (G.T @ X).T - torch.outer(mean, col)                               # (d, K)
            W.grad = (grad_ws / scale[:, None] + 2.0 * penalty * W).contiguous()
            b.grad = col
            return loss

        opt.step(closure)
        self.classes_ = np.arange(K)
        self.n_features_in_ = d
        self.class_counts_ = counts.astype(np.int64)
        self.mean_, self.scale_ = mean, scale
        self.coef_, self.intercept_ = W, b
        self.n_iter_ = int(opt.state[W]["n_iter"])
        self._empty = empty
        return self

    def decision_function(self, X) -> np.ndarray:
        """Logits of each row of X (N, d): float32 (N, K); empty classes -inf."""
        return self._masked_logits(X).cpu().numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of each row of X (N, d), the softmax of the logits: float32 (N, K); empty classes 0."""
        return torch.softmax(self._masked_logits(X), dim=1).cpu().numpy()

    def ranking_scores(self, X) -> np.ndarray:
        """The class probabilities with empty classes at -inf (as every probe scores them): float32 (N, K)."""
        probs = torch.softmax(self._masked_logits(X), dim=1)
        return probs.masked_fill(self._empty, float("-inf")).cpu().numpy()

    def _masked_logits(self, X) -> torch.Tensor:
        """Logits (N, K) on the probe's device, empty classes -inf."""
        self._check_fitted()
        X = self._check_features(X, device=self.coef_.device)
        with torch.no_grad():
            return _logits(X, self.coef_, self.intercept_, self.mean_, self.scale_).masked_fill(self._empty,
                                                                                                float("-inf"))
