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

import copy
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from noisefix.errors import ConfigError, DataError, ProbeError
from noisefix.probes import make_probe
from noisefix.probes import masc as masc_module
from noisefix.probes.stats import ClassMoments, ClassStats, as_features, as_labels

#: Probes fitted from per-class statistics; the others are refitted on the activations of each fold.
MOMENT_PROBES = ("masc", "ncm", "velpic")
#: Moment probes that switch to the per-class Gram route when every class has fewer images than d.
GRAM_PROBES = ("masc", "velpic")
#: Rows scored at once when activations are in RAM (bounds the copy of a fold's rows).
SCORE_ROWS = 8192


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


class RowSource:
    """One layer's activations, (N, d) float32, read by rows wherever they live (RAM: `TensorRows`; disk:
    `extract.ActivationCache`). `subset(rows)` is a view of some rows, renumbered 0..len(rows)-1.

    Subclasses implement `_take(g)` (rows g, in that order, as one tensor) and `_blocks(g)` (yield
    (positions into g, tensor of those rows), a bounded number of rows at a time, covering g once).
    """

    dim: int
    _n: int
    _rows: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n if self._rows is None else len(self._rows)

    def _global(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return idx if self._rows is None else self._rows[idx]

    def subset(self, rows) -> "RowSource":
        view = copy.copy(self)
        view._rows = self._global(rows)
        return view

    def take(self, idx) -> torch.Tensor:
        """Rows idx (in that order): float32 (len(idx), d)."""
        return self._take(self._global(idx))

    def blocks(self, idx):
        """(positions into idx, float32 rows) blocks covering rows idx, a bounded number at a time."""
        return self._blocks(self._global(idx))

    def score(self, idx, fn, num_classes: int) -> np.ndarray:
        """fn (rows -> (b, K) scores) applied to rows idx block by block: float32 (len(idx), K)."""
        out = np.zeros((len(idx), num_classes), dtype=np.float32)
        for pos, X in self.blocks(idx):
            out[pos] = fn(X)
        return out

    def _take(self, g: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _blocks(self, g: np.ndarray):
        raise NotImplementedError


class TensorRows(RowSource):
    """Activations held in RAM as one float32 (N, d) tensor (checked for NaN/inf once)."""

    def __init__(self, X, *, what: str = "activations"):
        self.X = as_features(X, what=what)
        self._n, self.dim = self.X.shape

    def _take(self, g: np.ndarray) -> torch.Tensor:
        if len(g) == self.X.shape[0] and np.array_equal(g, np.arange(len(g))):
            return self.X                                                     # all rows in order: no copy
        return self.X[torch.from_numpy(g)]

    def _blocks(self, g: np.ndarray):
        for start in range(0, len(g), SCORE_ROWS):
            pos = np.arange(start, min(start + SCORE_ROWS, len(g)))
            yield pos, self._take(g[pos])


def as_rows(X, *, what: str) -> RowSource:
    """X itself when it is a RowSource, else its rows in RAM (a tensor or array (N, d))."""
    return X if isinstance(X, RowSource) else TensorRows(X, what=what)


def make_folds(labels, num_folds: int, *, seed: int) -> np.ndarray:
    """Stratified fold ids (N,) int64 in [0, num_folds): each class is shuffled and dealt out round-robin.

    The deal continues across classes, so fold sizes differ by at most one overall and within each class.
    """
    labels = np.asarray(labels)
    if not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
        raise ConfigError(f"folds must be an integer >= 2 for cross-fitting, got {num_folds!r}")
    if num_folds > len(labels):
        raise ConfigError(f"folds ({num_folds}) cannot exceed the number of images ({len(labels)})")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (offset + np.arange(len(idx))) % num_folds
        offset += len(idx)
    return folds


def stratified_holdout(labels, fraction: float, *, seed: int) -> np.ndarray:
    """bool (N,) mask of a stratified, seeded `fraction` of the samples (at least one per class with >= 2)."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng(seed)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        take = int(round(fraction * len(idx))) if len(idx) >= 2 else 0
        mask[idx[: max(take, 1 if len(idx) >= 2 else 0)]] = True
    return mask


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


@dataclass
class ScoreRow:
    """Summary of one layer x probe: agreement of oof predictions with the given labels (label-only),
    accuracy against clean labels and on the test set when known (oracles), MASC mean k_c, layer dim."""

    layer: str
    probe: str
    agreement: float
    clean_acc: float | None
    test_acc: float | None
    mean_k: float | None
    dim: int | None
    holdout_agreement: float | None = None


def _accuracy(scores: np.ndarray, labels) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))


def score_rows(results: list[ProbeScores], *, labels, clean_labels=None, test_labels=None,
               holdout_labels=None, dims: dict[str, int] | None = None) -> list[ScoreRow]:
    """One ScoreRow per ProbeScores, in order; dims maps layer name -> feature dimension.

    `agreement` is out-of-fold agreement with the given labels on the images the network trained on;
    `holdout_agreement` the agreement with the given labels on held-out images it never saw.
    """
    return [ScoreRow(layer=r.layer, probe=r.probe,
                     agreement=_accuracy(r.oof_scores, labels),
                     clean_acc=None if clean_labels is None else _accuracy(r.oof_scores, clean_labels),
                     test_acc=(None if test_labels is None or r.test_scores is None
                               else _accuracy(r.test_scores, test_labels)),
                     mean_k=None if r.n_components is None else float(np.mean(r.n_components)),
                     dim=None if dims is None else dims.get(r.layer),
                     holdout_agreement=(None if holdout_labels is None or r.holdout_scores is None
                                        else _accuracy(r.holdout_scores, holdout_labels)))
            for r in results]


def choose(rows: list, *, by: str = "agreement"):
    """The row with the highest `by`: "holdout_agreement" or "agreement" (labels only) or the oracles
    "test_acc" / "clean_acc". Rows are ScoreRows or dicts with those keys. Ties go to the earliest row.
    """
    if by not in ("agreement", "holdout_agreement", "test_acc", "clean_acc"):
        raise ConfigError(f"choose by agreement, holdout_agreement, test_acc or clean_acc, not {by!r}")
    values = [r[by] if isinstance(r, dict) else getattr(r, by) for r in rows]
    if not rows or any(v is None for v in values):
        raise ConfigError(f"cannot choose by {by}: it is unknown for some rows (no test set or clean labels?); "
                          "use by='agreement'")
    return rows[int(np.argmax(values))]


def estimate_noise_rate(agreement: float, accuracy: float, num_classes: int) -> float:
    """Symmetric noise rate p from agreement = (1 - p) * accuracy + p / K, clipped to [0, 1].

    NaN when accuracy <= 1/K (a chance-level probe says nothing about p).
    """
    chance = 1.0 / num_classes
    if accuracy <= chance:
        return float("nan")
    return float(np.clip((accuracy - agreement) / (accuracy - chance), 0.0, 1.0))
