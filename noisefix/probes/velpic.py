"""VeLPIC: one principal direction per class, scored by the raw dot product (arXiv 2603.19865).

Activations X (N, d), labels in [0, K). For each class, v_c is the top eigenvector of the uncentered
second moment S_c = X_c^T X_c (MASC with exactly one component), its sign fixed so that the mean
projection of ALL training vectors on it is positive; a vector x is scored by x . v_c.
"""

from __future__ import annotations

import numpy as np
import torch

from noisefix.errors import ProbeError
from noisefix.probes.base import Probe
from noisefix.probes.masc import MASC
from noisefix.probes.stats import ClassMoments, as_features


def _orient(directions: torch.Tensor, total_sum: torch.Tensor) -> torch.Tensor:
    """Flip each row of directions (K, d) so its dot product with total_sum (d,) is positive.

    When the dot product is exactly 0 the largest-magnitude coordinate is made positive instead.
    """
    dots = directions.double() @ total_sum.double()                                      # (K,)
    peak = directions.gather(1, directions.abs().argmax(dim=1, keepdim=True)).flatten()  # (K,)
    sign = torch.where(dots != 0, torch.sign(dots), torch.sign(peak).double())
    return directions * torch.where(sign == 0, 1.0, sign).to(directions)[:, None]


class VeLPIC(Probe):
    """Top-1 uncentered principal direction per class, raw dot-product scores. No parameters.

    Attributes (K classes, d features):
        classes_: int64 (K,).
        n_features_in_: int, d.
        class_counts_: int64 (K,), training vectors per class (0: empty, scored -inf, never predicted).
        directions_: float32 torch (K, d), unit vectors v_c (zero for a class with only zero vectors).

    Fitted like MASC with one component (from the vectors, per-class statistics or per-class row blocks).
    Ties in `predict` go to the lowest class index.
    """

    fits_from_moments = True
    uses_second_moments = True
    gram_route = True

    def fit(self, X, y, *, num_classes: int | None = None) -> VeLPIC:
        """Fit from activations X (N, d) and labels y (N,)."""
        X = as_features(X)
        masc = MASC(variance=1).fit(X, y, num_classes=num_classes)
        ones = torch.ones(len(X), dtype=X.dtype, device=X.device)
        return self._set_fitted(masc, (ones @ X).double())                               # column sums (d,)

    def fit_moments(self, moments: ClassMoments, *, k_hint=None, starts=None) -> VeLPIC:
        """Fit from per-class statistics; the sign uses the sum over all classes.

        k_hint, starts: ignored (one component per class); present so that every `fits_from_moments` probe is
        fitted the same way.
        """
        return self._set_fitted(MASC(variance=1).fit_moments(moments), moments.sums.sum(dim=0))

    def fit_by_class(self, blocks, *, k_hint=None, total_sum=None) -> VeLPIC:
        """Fit class by class from per-class row blocks, as `MASC.fit_by_class` (whose `blocks` these are).

        total_sum: (d,) the sum of every training row over all classes (e.g. `ClassMoments.sums.sum(0)` of
            the same rows), which orients the directions. k_hint: ignored (one component per class).
        """
        if total_sum is None:
            raise ProbeError("VeLPIC.fit_by_class needs total_sum, the (d,) sum of all training rows "
                             "(e.g. ClassMoments.sums.sum(0)), to orient its directions")
        return self._set_fitted(MASC(variance=1).fit_by_class(blocks), torch.as_tensor(total_sum))

    def _set_fitted(self, masc: MASC, total_sum: torch.Tensor) -> VeLPIC:
        """The fitted attributes from a fitted MASC (each class's first component) and the total sum (d,)."""
        self.classes_ = masc.classes_
        self.n_features_in_ = masc.n_features_in_
        self.class_counts_ = masc.class_counts_
        top = torch.stack([U[:, 0] if U.shape[1] else U.new_zeros(len(U)) for U in masc.components_])
        self.directions_ = _orient(top, total_sum.to(top.device))                          # (K, d)
        self._empty = torch.from_numpy(self.class_counts_ == 0).to(top.device)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Dot product of each row of X (N, d) with each direction: float32 (N, K); empty classes -inf."""
        self._check_fitted()
        X = self._check_features(X, device=self.directions_.device)
        return (X @ self.directions_.T).masked_fill(self._empty, float("-inf")).cpu().numpy()

