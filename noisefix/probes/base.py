"""What every probe shares: parameters, the fitted and feature-count checks, `predict`, capability flags.

A probe follows scikit-learn's estimator contract: `__init__` only stores its parameters; `fit` validates
them and the data, sets the trailing-underscore attributes (`classes_`, `n_features_in_`, ...) and returns
self; `decision_function(X)` gives (N, K) scores (higher = more likely), `predict(X)` the class of the
highest score through `classes_`.

Capability flags (class attributes) tell `scoring.cross_fit` how a probe can be fitted, instead of its name:
  fits_from_moments:   has `fit_moments(ClassMoments, *, k_hint=None, starts=None)`, a fit from per-class statistics, so
                       cross-fitting folds come from leave-fold-out statistics without a refit on the data.
  uses_second_moments: that fit reads the d x d second moments (False: the sums and counts only).
  gram_route:          has `fit_by_class(blocks, *, k_hint=None, total_sum=None)`, a fit class by class from
                       per-class row blocks through n_c x n_c Gram matrices (cheaper than d x d moments when
                       every class has fewer vectors than d).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from noisefix.errors import ProbeError
from noisefix.probes.stats import as_features


class Probe:
    """Base class of the probes. Subclasses implement `fit` and `decision_function` and set the flags."""

    #: fitted from per-class statistics by `fit_moments(moments, *, k_hint=None, starts=None)`.
    fits_from_moments: bool = False
    #: `fit_moments` needs the d x d second moments (ClassMoments.second), not only the sums and counts.
    uses_second_moments: bool = False
    #: fitted class by class from per-class row blocks / Gram matrices by `fit_by_class`.
    gram_route: bool = False

    @classmethod
    def informative(cls, dim: int, num_classes: int) -> bool:
        """Whether this probe can tell `num_classes` classes apart on `dim` features (screening fits it only
        where it can; MASC overrides it)."""
        return True

    @classmethod
    def param_names(cls) -> list[str]:
        """The names of the constructor's parameters (scikit-learn's `_get_param_names`)."""
        if cls.__init__ is object.__init__:                                       # no parameters (NCM, VeLPIC)
            return []
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    def get_params(self) -> dict:
        """The constructor's parameters and their values, e.g. {"variance": 0.99, "device": None}."""
        return {name: getattr(self, name) for name in self.param_names()}

    def _check_fitted(self) -> None:
        """Raise ProbeError when `fit` (or `fit_moments` / `fit_by_class`) has not run yet."""
        if not hasattr(self, "classes_"):
            raise ProbeError(f"{type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _check_features(self, X, device=None) -> torch.Tensor:
        """X (N, d) as a float32 tensor on `device`, after the fitted check; ProbeError when d differs from fit."""
        self._check_fitted()
        X = as_features(X, device=device)
        if X.shape[1] != self.n_features_in_:
            raise ProbeError(f"{type(self).__name__} was fitted on {self.n_features_in_} features, got {X.shape[1]}")
        return X

    def decision_function(self, X) -> np.ndarray:
        """float32 (N, K) scores of each row of X (N, d) for each class; higher = more likely."""
        raise NotImplementedError

    def ranking_scores(self, X) -> np.ndarray:
        """float32 (N, K) scores that `scoring.cross_fit` stores and the issue finder ranks by.

        `decision_function` unless a probe says otherwise (LogRegProbe: its class probabilities). Empty
        classes score -inf.
        """
        return self.decision_function(X)

    def predict(self, X) -> np.ndarray:
        """int64 (N,) class of the highest `decision_function` score; ties go to the lowest class index."""
        scores = self.decision_function(X)                                    # checks fitted first
        return self.classes_[np.argmax(scores, axis=1)]
