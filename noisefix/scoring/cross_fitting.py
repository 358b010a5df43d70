"""Cross-fitted probe scores per layer, their summary rows, and the choice of layer x probe.

N training images with given (possibly noisy) labels in [0, K), M test images, F folds. Every training
image is scored by a probe fitted WITHOUT its fold (out-of-fold, "oof"), so a probe cannot simply
reproduce the label it was trained on; the test images by a probe fitted on all training images.

Choosing without clean labels (see scoring.selection): under symmetric noise of rate p a prediction that does
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
from noisefix.probes import Probe, probe_class
from noisefix.probes.masc import ClassBlock, gram_matrix
from noisefix.probes.rows import RowSource, as_rows
from noisefix.probes.stats import ClassMoments, ClassStats, as_labels


def refits_on_activations(probe: str, class_counts, dim: int) -> bool:
    """True when `cross_fit` refits `probe` on the activations rather than fitting it from class statistics.

    A probe that cannot be fitted from statistics (no `fits_from_moments`: logreg) always is; a `gram_route`
    one (MASC, VeLPIC) is, class by class through n_c x n_c Gram matrices, when every class has fewer
    training images than d (`class_counts` (K,): images per class over all folds), which beats d x d
    eigendecompositions and needs no d x d second moments. The one rule for `cross_fit`, the probe stage's
    memory plan and its torchrun gathers; driven by the probe's capability flags (probes/base.py).
    """
    cls = probe_class(probe)
    if not cls.fits_from_moments:
        return True
    return cls.gram_route and int(np.max(np.asarray(class_counts), initial=0)) < int(dim)


def needs_second_moments(probes, class_counts, dim: int) -> bool:
    """True when some probe in `probes` is fitted from d x d second moments (`uses_second_moments`, and
    not refitted on the activations: MASC / VeLPIC off the Gram route)."""
    return any(probe_class(p).uses_second_moments and not refits_on_activations(p, class_counts, dim)
               for p in probes)


@dataclass
class ProbeScores:
    """Scores of one probe on one layer (the probe's `ranking_scores`: LogRegProbe's are probabilities).

    Attributes:
        layer, probe: names.
        oof_scores: float32 (N, K), each training image scored by a probe fitted without its fold.
        test_scores: float32 (M, K) from the probe fitted on all training images, or None without a test set.
        n_components: int64 (K,) MASC k_c of the all-data fit, None for other probes.
        holdout_scores: float32 (H, K) like test_scores, for the held-out images, or None without them.
    """

    layer: str
    probe: str
    oof_scores: np.ndarray
    test_scores: np.ndarray | None
    n_components: np.ndarray | None
    holdout_scores: np.ndarray | None = None


GRAM_CACHE_BYTES = 2**30   # per-class Gram matrices kept across cross-fitting fits while they fit in this


def _class_blocks(X: RowSource, labels: np.ndarray, keep: np.ndarray, K: int,
                  grams: dict[int, torch.Tensor] | None, starts=None):
    """For c = 0..K-1 the `ClassBlock` of the rows `keep` labeled c, float32 in row order, one at a time.

    Without `grams` only the kept rows are read and multiplied. With it (a dict), all of the class's rows
    are read and its Gram matrix over them is formed once and kept there; a later fit on a subset (a
    cross-fitting fold) takes its sub-block instead of a new product. `starts`: per class the block's
    `start` basis (the all-data fit's components, for a fold), or None.
    """
    for c in range(K):
        rows = np.flatnonzero(labels == c)
        start = None if starts is None else starts[c]
        if grams is None:
            yield ClassBlock(X.take(rows[keep[rows]]), None, start)                       # (n_kept, d)
            continue
        Xc = X.take(rows)                                                                 # (n_c, d)
        if c not in grams:
            grams[c] = gram_matrix(Xc)                                                    # (n_c, n_c) float64
        sel = torch.from_numpy(np.flatnonzero(keep[rows])).to(Xc.device)
        yield ClassBlock(Xc[sel], grams[c][sel[:, None], sel], start)                      # one gather, not two


def _fit_by_class(probe: Probe, X: RowSource, labels: np.ndarray, keep: np.ndarray, K: int, *,
                  moments: ClassMoments, k_hint: np.ndarray | None = None,
                  grams: dict[int, torch.Tensor] | None = None, starts=None) -> Probe:
    """A `gram_route` probe fitted on the rows `keep` by `fit_by_class`, one class block at a time.

    Same subspaces as `fit` on X[keep] without the (N, d) copy of the training rows: the peak is one
    class's block (n_c x d float32) and the fitted bases. `grams`, `starts`: see `_class_blocks`. `k_hint`:
    (K,) guesses of k_c (the all-data fit's). VeLPIC's signs come from the float64 class sums of `moments` (the
    statistics of the same rows), as in `VeLPIC.fit_moments`.
    """
    return probe.fit_by_class(_class_blocks(X, labels, keep, K, grams, starts), k_hint=k_hint,
                              total_sum=moments.sums.sum(dim=0).cpu())


def _oof_scores(X: RowSource, folds: np.ndarray, K: int, F: int, fit_without) -> np.ndarray:
    """float32 (N, K): the rows of each fold f scored by `fit_without(f)`, a probe fitted without fold f."""
    oof = np.zeros((len(X), K), dtype=np.float32)
    for f in range(F):
        rows = np.flatnonzero(folds == f)
        oof[rows] = X.score(rows, fit_without(f).ranking_scores, K)
    return oof


def _moment_route(make, stats: ClassStats, X: RowSource, folds: np.ndarray, K: int, F: int):
    """Out-of-fold scores and the all-data probe from class statistics: fold f's probe from
    stats.excluding(f), no refit over the data. The all-data fit comes first: MASC's k_c seed the folds'
    eigensolver and its class bases are the folds' starting subspaces (probes/masc.py)."""
    full = make().fit_moments(stats.total())
    hint, starts = getattr(full, "n_components_", None), getattr(full, "components_", None)
    return _oof_scores(X, folds, K, F, lambda f: make().fit_moments(stats.excluding(f), k_hint=hint,
                                                                    starts=starts)), full


def _gram_route(make, stats: ClassStats, X: RowSource, labels: np.ndarray, folds: np.ndarray, K: int, F: int,
                counts: np.ndarray):
    """Out-of-fold scores and the all-data probe of a `gram_route` probe refitted per fold class by class.

    The all-data fit first: its k_c seed the folds' eigensolver and its class bases (MASC's `components_`)
    are the folds' starting subspaces (refined on each fold's own rows, probes/masc.py), and each class's Gram
    matrix is formed once and kept (when all of them, `counts` (K,) images per class, fit GRAM_CACHE_BYTES)
    for the folds, whose matrices are its sub-blocks.
    """
    grams = {} if 8 * float(np.sum(counts.astype(np.float64) ** 2)) <= GRAM_CACHE_BYTES else None
    full = _fit_by_class(make(), X, labels, np.ones(len(X), dtype=bool), K, moments=stats.total(), grams=grams)
    hint, starts = getattr(full, "n_components_", None), getattr(full, "components_", None)
    oof = _oof_scores(X, folds, K, F, lambda f: _fit_by_class(make(), X, labels, folds != f, K, k_hint=hint,
                                                             moments=stats.excluding(f), grams=grams,
                                                             starts=starts))
    return oof, full


def _refit_route(make, X: RowSource, labels: np.ndarray, folds: np.ndarray, K: int, F: int, *, fit_all: bool):
    """Out-of-fold scores of a probe refitted on X[folds != f] per fold (those rows in RAM), and the probe
    fitted on all of X when `fit_all` (a test or held-out set is scored), else None."""
    def fit_without(f):
        train = np.flatnonzero(folds != f)
        return make().fit(X.take(train), labels[train], num_classes=K)

    oof = _oof_scores(X, folds, K, F, fit_without)
    return oof, (make().fit(X.take(np.arange(len(X))), labels, num_classes=K) if fit_all else None)


def _score_all(probe: Probe | None, A, K: int, *, what: str) -> np.ndarray | None:
    """float32 (M, K) ranking scores of every row of A (M, d) (None when A is None)."""
    if A is None:
        return None
    A = as_rows(A, what=what)
    return A.score(np.arange(len(A)), probe.ranking_scores, K)


def _fold_ids(folds, n: int) -> tuple[np.ndarray, int]:
    """Fold ids as int64 (n,) and the number of folds F (max id + 1); DataError for a bad shape or a negative id."""
    folds = np.asarray(folds, dtype=np.int64)
    if folds.shape != (n,) or (len(folds) and folds.min() < 0):
        raise DataError(f"folds must be {n} non-negative fold ids, got shape {folds.shape}")
    return folds, int(folds.max()) + 1 if len(folds) else 0


def probe_maker(probe_name: str, *, variance: float = 0.99, seed: int = 0):
    """A callable making new, unfitted `probe_name` probes, given the options it takes of `variance` and `seed`."""
    cls = probe_class(probe_name)
    options = {"variance": variance, "seed": seed}
    return partial(cls, **{name: options[name] for name in cls.param_names() if name in options})


def cross_fit(probe_name: str, *, stats: ClassStats | None, X, labels, folds, X_test=None, X_holdout=None,
              variance: float = 0.99, seed: int = 0, layer: str = "", num_classes: int | None = None
              ) -> ProbeScores:
    """Out-of-fold scores of one probe on one layer's activations X (N, d) (+ test scores on X_test (M, d)
    and held-out scores on X_holdout (H, d): images the network was not trained on, scored like the test set).

    X, X_test, X_holdout: tensors / arrays in RAM or `RowSource`s (e.g. an on-disk `extract.ActivationCache`),
    read block by block. Probes that `fits_from_moments` (masc, ncm, velpic): fold f's probe comes from
    stats.excluding(f) (no refit over the data), the test probe from stats.total(); `gram_route` ones (MASC /
    VeLPIC) when every class has fewer than d images (`refits_on_activations`) are refitted per fold instead,
    class by class through the cheaper Gram route, and need no second moments in `stats`. `stats` must have
    been accumulated with these labels and folds (None: computed here from X, second moments only when
    needed). Others (logreg): refitted on X[folds != f] per fold (those rows in RAM) and on all of X for the
    test set. `variance` and `seed` go to the probes that take them. Scores are each probe's
    `ranking_scores`. K is stats.num_classes, else num_classes, else max label + 1.
    """
    X = as_rows(X, what=f"layer {layer!r} activations")
    folds, F = _fold_ids(folds, len(X))
    labels, K = as_labels(labels, len(X), stats.num_classes if stats is not None else num_classes)
    if stats is not None and (stats.num_folds != F or stats.dim != X.dim):
        raise ProbeError(f"layer {layer!r}: statistics have {stats.num_folds} folds and dim {stats.dim}, "
                         f"activations {F} folds and dim {X.dim}; accumulate them with the same folds")
    counts = stats.counts.sum(0).cpu().numpy() if stats is not None else np.bincount(labels, minlength=K)
    refit = refits_on_activations(probe_name, counts, X.dim)  # the same rule decides the probe stage's plan
    cls = probe_class(probe_name)
    make = probe_maker(probe_name, variance=variance, seed=seed)
    if stats is None and cls.fits_from_moments:
        stats = ClassStats(X.dim, K, F, name=layer, second_moments=not refit)
        for pos, block in X.blocks(np.arange(len(X))):
            stats.update(block, labels[pos], folds[pos])
    if not refit:
        oof, full = _moment_route(make, stats, X, folds, K, F)
    elif cls.gram_route:
        oof, full = _gram_route(make, stats, X, labels, folds, K, F, counts)
    else:
        oof, full = _refit_route(make, X, labels, folds, K, F, fit_all=X_test is not None or X_holdout is not None)
    test = _score_all(full, X_test, K, what=f"layer {layer!r} test activations")
    held = _score_all(full, X_holdout, K, what=f"layer {layer!r} held-out activations")
    return ProbeScores(layer=layer, probe=probe_name, oof_scores=oof, test_scores=test,
                       n_components=getattr(full, "n_components_", None), holdout_scores=held)
