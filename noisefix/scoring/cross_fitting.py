"""Cross-fitted probe scores per layer, their summary rows, and the choice of layer x probe.

N training images with given (possibly noisy) labels in [0, K), M test images, F folds. Every training
image is scored by a probe fitted WITHOUT its fold (out-of-fold, "oof"), so a probe cannot simply
reproduce the label it was trained on; the test images by a probe fitted on all training images.

Choosing without clean labels (DESIGN.md section 5): under symmetric noise of rate p a prediction that does
not depend on an image's own label agrees with it with probability (1 - p) * acc + p / K, an increasing
function of the true accuracy acc, so ranking layers by agreement with the given labels ranks them by
accuracy in expectation; `estimate_noise_rate` inverts the relation. Under class-dependent noise this is a
heuristic; a clean test or validation accuracy, when there is one, is the better ("oracle") criterion.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from noisefix.errors import DataError, ProbeError
from noisefix.probes import make_probe
from noisefix.probes import masc as masc_module
from noisefix.probes.rows import RowSource, as_rows
from noisefix.probes.stats import ClassMoments, ClassStats, as_labels

#: Probes fitted from per-class statistics; the others are refitted on the activations of each fold.
MOMENT_PROBES = ("masc", "ncm", "velpic")


#: Moment probes that switch to the per-class Gram route when every class has fewer images than d.
GRAM_PROBES = ("masc", "velpic")


def refits_on_activations(probe: str, class_counts, dim: int) -> bool:
    """True when `cross_fit` refits `probe` on the activations rather than fitting it from class statistics.

    logreg always does; MASC and VeLPIC do through the per-class Gram route (n_c x n_c Gram matrices)
    when every class has fewer training images than d (`class_counts` (K,): images per class over all
    folds), which beats d x d eigendecompositions and needs no d x d second moments. The one rule for
    `cross_fit`, the probe stage's memory plan and its torchrun gathers.
    """
    if probe not in MOMENT_PROBES:
        return True
    return probe in GRAM_PROBES and int(np.max(np.asarray(class_counts), initial=0)) < int(dim)


def needs_second_moments(probes, class_counts, dim: int) -> bool:
    """True when some probe in `probes` is fitted from d x d second moments (MASC / VeLPIC off the Gram route)."""
    return any(p in GRAM_PROBES and not refits_on_activations(p, class_counts, dim) for p in probes)


@dataclass
class ProbeScores:
    """Scores of one probe on one layer.

    Attributes:
        layer, probe: names.
        oof_scores: float32 (N, K), each training image scored by a probe fitted without its fold.
        test_scores: float32 (M, K) from the probe fitted on all training images, or None without a test set.
        n_components: int64 (K,) MASC k_c of the all-data fit, None for other probes.
    """

    layer: str
    probe: str
    oof_scores: np.ndarray
    test_scores: np.ndarray | None
    n_components: np.ndarray | None
    holdout_scores: np.ndarray | None = None


GRAM_CACHE_BYTES = 2**30   # per-class Gram matrices kept across cross-fitting fits while they fit in this


def _fit_by_class(probe_name: str, X: RowSource, labels: np.ndarray, keep: np.ndarray, K: int, *,
                  variance: float, moments: ClassMoments, k_hint: np.ndarray | None = None,
                  grams: dict[int, torch.Tensor] | None = None):
    """MASC (or VeLPIC) fitted on the rows `keep` through the per-class Gram route, one class block at a time.

    Same subspaces as `MASC.fit` on X[keep] when every class has fewer rows than d (class rows in the same
    order, so the same n_c x n_c Gram matrices), without the (N, d) copy of the training rows: the peak is
    one class's block (n_c x d float64) and the fitted bases. `grams`: a dict in which each class's Gram
    matrix over ALL its rows is kept; a later fit on a subset (a cross-fitting fold) takes its sub-block
    instead of a new product. `k_hint`: (K,) guesses of k_c (the all-data fit's), as in
    `MASC.fit_moments`. VeLPIC's signs come from the float64 class sums of `moments` (the statistics of the
    same rows), as in `VeLPIC.fit_moments`.
    """
    masc = make_probe("masc", variance=1 if probe_name == "velpic" else variance)
    masc._check_params()
    fits, device = [], torch.device("cpu")
    for c in range(K):
        rows = np.flatnonzero(labels == c)
        hint = None if k_hint is None else int(k_hint[c])
        if grams is None:                                       # only the kept rows are read and multiplied
            Xc = X.take(rows[keep[rows]]).double()                                        # (n_kept, d)
            fits.append(masc_module._gram_subspace(Xc, masc.variance, hint))
        else:                                                   # all of the class's rows: its Gram matrix
            Xc = X.take(rows).double()                                                    # (n_c, d)
            if c not in grams:
                grams[c] = Xc @ Xc.T                                                      # (n_c, n_c)
            sel = torch.from_numpy(np.flatnonzero(keep[rows])).to(Xc.device)
            fits.append(masc_module._gram_subspace(Xc[sel], masc.variance, hint, G=grams[c][sel][:, sel]))
        device = Xc.device
    masc._set_fitted(fits, np.bincount(labels[keep], minlength=K), X.dim, device)
    if probe_name == "masc":
        return masc
    return make_probe("velpic")._set_fitted(masc, moments.sums.sum(dim=0).cpu())


def cross_fit(probe_name: str, *, stats: ClassStats | None, X, labels, folds, X_test=None, X_holdout=None,
              variance: float = 0.99, seed: int = 0, layer: str = "", num_classes: int | None = None
              ) -> ProbeScores:
    """Out-of-fold scores of one probe on one layer's activations X (N, d) (+ test scores on X_test (M, d)
    and held-out scores on X_holdout (H, d): images the network was not trained on, scored like the test set).

    X, X_test, X_holdout: tensors / arrays in RAM or `RowSource`s (e.g. an on-disk `extract.ActivationCache`),
    read block by block. masc, ncm, velpic: fold f's probe comes from stats.excluding(f) (no refit over the
    data), the test probe from stats.total(); MASC / VeLPIC when every class has fewer than d images
    (`refits_on_activations`) are refitted per fold instead, class by class through the cheaper Gram route,
    and need no second moments in `stats`. `stats` must have been accumulated with these labels and folds
    (None: computed here from X, second moments only when needed). logreg: refitted on X[folds != f] per
    fold (those rows in RAM) and on all of X for the test set. K is stats.num_classes, else num_classes,
    else max label + 1.
    """
    X = as_rows(X, what=f"layer {layer!r} activations")
    folds = np.asarray(folds, dtype=np.int64)
    if folds.shape != (len(X),) or (len(folds) and folds.min() < 0):
        raise DataError(f"folds must be {len(X)} non-negative fold ids, got shape {folds.shape}")
    F = int(folds.max()) + 1 if len(folds) else 0
    K = stats.num_classes if stats is not None else num_classes
    labels, K = as_labels(labels, len(X), K)
    params = {"masc": {"variance": variance}, "logreg": {"seed": seed}}.get(probe_name, {})
    make = partial(make_probe, probe_name, **params)
    oof = np.zeros((len(X), K), dtype=np.float32)
    if stats is not None and (stats.num_folds != F or stats.dim != X.dim):
        raise ProbeError(f"layer {layer!r}: statistics have {stats.num_folds} folds and dim {stats.dim}, "
                         f"activations {F} folds and dim {X.dim}; accumulate them with the same folds")
    counts = stats.counts.sum(0).cpu().numpy() if stats is not None else np.bincount(labels, minlength=K)
    refit = refits_on_activations(probe_name, counts, X.dim)  # the same rule decides the probe stage's plan
    if stats is None and probe_name in MOMENT_PROBES:
        stats = ClassStats(X.dim, K, F, name=layer, second_moments=not refit)
        for pos, block in X.blocks(np.arange(len(X))):
            stats.update(block, labels[pos], folds[pos])
    full = None
    if not refit:
        full = make().fit_moments(stats.total())
        hint = {"k_hint": full.n_components_} if probe_name == "masc" else {}
        for f in range(F):
            rows = np.flatnonzero(folds == f)
            oof[rows] = X.score(rows, make().fit_moments(stats.excluding(f), **hint).decision_function, K)
    else:
        gram, hint, grams = probe_name in GRAM_PROBES, None, None
        if gram:
            # the all-data fit first: its k_c seed the folds' eigensolver (MASC), and each class's Gram matrix
            # is formed once and kept (when small enough) for the folds, whose matrices are its sub-blocks
            grams = {} if 8 * float(np.sum(counts.astype(np.float64) ** 2)) <= GRAM_CACHE_BYTES else None
            full = _fit_by_class(probe_name, X, labels, np.ones(len(X), dtype=bool), K, variance=variance,
                                 moments=stats.total(), grams=grams)
            hint = full.n_components_ if probe_name == "masc" else None
        for f in range(F):
            rows, keep = np.flatnonzero(folds == f), folds != f
            if gram:
                probe = _fit_by_class(probe_name, X, labels, keep, K, variance=variance, moments=stats.excluding(f),
                                      k_hint=hint, grams=grams)
            else:
                train = np.flatnonzero(keep)
                probe = make().fit(X.take(train), labels[train], num_classes=K)
            oof[rows] = X.score(rows, probe.decision_function, K)
        if not gram and (X_test is not None or X_holdout is not None):
            full = make().fit(X.take(np.arange(len(X))), labels, num_classes=K)
    test, held = (None if A is None else A.score(np.arange(len(A)), full.decision_function, K)
                  for A in (None if X_test is None else as_rows(X_test, what=f"layer {layer!r} test activations"),
                            None if X_holdout is None else as_rows(X_holdout, what=f"layer {layer!r} held-out "
                                                                                  "activations")))
    return ProbeScores(layer=layer, probe=probe_name, oof_scores=oof, test_scores=test,
                       n_components=getattr(full, "n_components_", None), holdout_scores=held)
