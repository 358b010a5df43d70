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

from noisefix.errors import ConfigError, DataError, ProbeError
from noisefix.probes import make_probe
from noisefix.probes.stats import ClassStats, as_features, as_labels

#: Probes fitted from per-class statistics; the others are refitted on the activations of each fold.
MOMENT_PROBES = ("masc", "ncm", "velpic")


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


def cross_fit(probe_name: str, *, stats: ClassStats | None, X, labels, folds, X_test=None, X_holdout=None,
              variance: float = 0.99, seed: int = 0, layer: str = "", num_classes: int | None = None
              ) -> ProbeScores:
    """Out-of-fold scores of one probe on one layer's activations X (N, d) (+ test scores on X_test (M, d)
    and held-out scores on X_holdout (H, d): images the network was not trained on, scored like the test set).

    masc, ncm, velpic: fold f's probe comes from stats.excluding(f) (no refit over the data), the test
    probe from stats.total() (MASC when every class has fewer than d images: refitted per fold on X through
    the cheaper Gram route instead); `stats` must have been accumulated with these labels and folds (None:
    computed here from X). logreg: refitted on X[folds != f] per fold and on all of X for the test set.
    K is stats.num_classes, else num_classes, else max label + 1.
    """
    X = as_features(X, what=f"layer {layer!r} activations")
    folds = np.asarray(folds, dtype=np.int64)
    if folds.shape != (len(X),) or (len(folds) and folds.min() < 0):
        raise DataError(f"folds must be {len(X)} non-negative fold ids, got shape {folds.shape}")
    F = int(folds.max()) + 1 if len(folds) else 0
    K = stats.num_classes if stats is not None else num_classes
    labels, K = as_labels(labels, len(X), K)
    params = {"masc": {"variance": variance}, "logreg": {"seed": seed}}.get(probe_name, {})
    make = partial(make_probe, probe_name, **params)
    oof = np.zeros((len(X), K), dtype=np.float32)
    if stats is not None and (stats.num_folds != F or stats.dim != X.shape[1]):
        raise ProbeError(f"layer {layer!r}: statistics have {stats.num_folds} folds and dim {stats.dim}, "
                         f"activations {F} folds and dim {X.shape[1]}; accumulate them with the same folds")
    # MASC / VeLPIC with every class smaller than d: refitting through the n_c x n_c Gram matrices beats
    # d x d eigendecompositions (and the d x d leave-one-fold-out copies)
    gram = probe_name in ("masc", "velpic") and stats is not None and int(stats.counts.sum(0).max()) < X.shape[1]
    if probe_name in MOMENT_PROBES and not gram:
        if stats is None:
            stats = ClassStats(X.shape[1], K, F, name=layer)
            stats.update(X, labels, folds)
        full = make().fit_moments(stats.total())
        hint = {"k_hint": full.n_components_} if probe_name == "masc" else {}
        for f in range(F):
            rows = np.flatnonzero(folds == f)
            oof[rows] = make().fit_moments(stats.excluding(f), **hint).decision_function(X[torch.from_numpy(rows)])
    else:
        for f in range(F):
            rows, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
            probe = make().fit(X[torch.from_numpy(train)], labels[train], num_classes=K)
            oof[rows] = probe.decision_function(X[torch.from_numpy(rows)])
        full = make().fit(X, labels, num_classes=K) if X_test is not None or X_holdout is not None else None
    test, held = (None if A is None else full.decision_function(as_features(A, what=f"layer {layer!r} {what}"))
                  for A, what in ((X_test, "test activations"), (X_holdout, "held-out activations")))
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
