"""NCM: nearest class mean by cosine similarity (uncentered), a baseline beside MASC.

Activations X (N, d), labels in [0, K). Each class is summarized by the mean m_c of its training vectors
and a vector x is scored by cos(x, m_c) = x . m_c / (||x|| ||m_c||).
"""

from __future__ import annotations

import numpy as np
import torch

from noisefix.errors import ProbeError
from noisefix.probes.base import Probe
from noisefix.probes.stats import ClassMoments, as_features, as_labels


def _unit_rows(A: torch.Tensor) -> torch.Tensor:
    """Rows of A scaled to unit L2 norm; all-zero rows stay zero."""
    norms = torch.linalg.vector_norm(A, dim=1, keepdim=True)
    return torch.where(norms > 0, A / norms.clamp_min(torch.finfo(A.dtype).tiny), 0.0)


class NCM(Probe):
    """Nearest class mean with cosine similarity. No parameters.

    Attributes (K classes, d features):
        classes_: int64 (K,).
        n_features_in_: int, d.
        class_counts_: int64 (K,), training vectors per class (0: empty, scored -inf, never predicted).
        means_: float32 torch (K, d), uncentered class means (zero for an empty class).

    An all-zero input vector, or a class whose mean is zero, scores 0. Ties in `predict` go to the
    lowest class index.
    """

    fits_from_moments = True
    uses_second_moments = False                      # the class sums and counts are enough

    def fit(self, X, y, *, num_classes: int | None = None) -> NCM:
        """Fit from activations X (N, d) and labels y (N,)."""
        X = as_features(X)
        y, K = as_labels(y, len(X), num_classes)
        onehot = torch.nn.functional.one_hot(torch.from_numpy(y).to(X.device), K).float()  # (N, K)
        sums = (onehot.T @ X).double()                                                    # (K, d)
        return self._set_fitted(sums, np.bincount(y, minlength=K))

    def fit_moments(self, moments: ClassMoments, *, k_hint=None, starts=None) -> NCM:
        """Fit from per-class statistics (only the sums and counts are used).

        k_hint, starts: ignored; present so that every `fits_from_moments` probe is fitted the same way.
        """
        if not bool(torch.isfinite(moments.sums).all()):
            raise ProbeError("class statistics contain NaN or inf; the activations were not finite")
        return self._set_fitted(moments.sums, moments.counts.cpu().numpy())

    def _set_fitted(self, sums: torch.Tensor, counts: np.ndarray) -> NCM:
        """The fitted attributes from the class sums (K, d) and counts (K,); caches _unit (K, d) float32, the
        unit-length means, and _empty (K,) bool."""
        self.classes_ = np.arange(len(counts))
        self.n_features_in_ = sums.shape[1]
        self.class_counts_ = np.asarray(counts, dtype=np.int64)
        n = torch.from_numpy(np.maximum(self.class_counts_, 1)).to(sums)
        self.means_ = (sums / n[:, None]).float()                                         # (K, d)
        self._unit = _unit_rows(self.means_)
        self._empty = torch.from_numpy(self.class_counts_ == 0).to(sums.device)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Cosine similarity of each row of X (N, d) to each class mean: float32 (N, K); empty classes -inf."""
        self._check_fitted()
        X = self._check_features(X, device=self.means_.device)
        norms = torch.linalg.vector_norm(X, dim=1, keepdim=True)                          # (N, 1)
        scores = torch.where(norms > 0, (X @ self._unit.T) / norms.clamp_min(torch.finfo(X.dtype).tiny), 0.0)
        return scores.masked_fill(self._empty, float("-inf")).cpu().numpy()

