"""Turn cross-fitted probe scores into suggested labels, issue scores and an issue mask (numpy only).

N examples, K classes. `scores` is an (N, K) array in which higher means "more likely this class", produced
for every training example by a probe that did not see that example's label (out-of-fold), e.g.
`ProbeScores.oof_scores`; `given` is the (N,) array of labels in [0, K) the dataset came with.

Normalization (used by `relabel` and `ensemble`): each row is divided by its largest absolute finite score,
so every row's scores lie in [-1, 1] and a row's best class scores 1 when its best raw score is positive.
This removes the per-example scale (VeLPIC's raw dot products grow with ||x||) and puts probes with
different ranges (MASC's cos^2 in [0, 1], NCM's cosine in [-1, 1], logistic-regression probabilities)
on one scale, while keeping the relative gap between classes, which is what a margin measures.
Non-finite scores (-inf: a class absent from a fold's training data) become -1; a row of zeros stays zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisefix.errors import ConfigError, DataError


@dataclass
class Relabeling:
    """Result of `relabel` for N examples.

    Attributes:
        suggested: int64 (N,), the label to use: the probe's best class for issues, the given label otherwise.
        score: float64 (N,), normalized margin s[best] - s[given] in [0, 2]: how strongly the geometry
            disagrees with the given label (0 when the given label is a best class).
        is_issue: bool (N,), score > min_margin.
        order: int64 (N,), example indices, most suspicious first (score descending, ties by index).
    """

    suggested: np.ndarray
    score: np.ndarray
    is_issue: np.ndarray
    order: np.ndarray


def _check_scores(scores, given=None) -> tuple[np.ndarray, np.ndarray | None]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise DataError(f"scores must be an (examples, classes) array, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise DataError("scores contain NaN; recompute the probe scores")
    if given is None:
        return scores, None
    given = np.asarray(given)
    if given.shape != (len(scores),) or (len(given) and not np.issubdtype(given.dtype, np.integer)):
        raise DataError(f"given labels must be {len(scores)} integer class indices, got shape {given.shape} "
                        f"dtype {given.dtype}")
    if len(given) and (given.min() < 0 or given.max() >= scores.shape[1]):
        raise DataError(f"given labels must lie in [0, {scores.shape[1]}), got {given.min()}..{given.max()}")
    return scores, given.astype(np.int64)


def normalize_scores(scores) -> np.ndarray:
    """(N, K) scores divided row-wise by the largest absolute finite score; -inf -> -1 (module docstring)."""
    scores, _ = _check_scores(scores)
    finite = np.isfinite(scores)
    scale = np.abs(np.where(finite, scores, 0.0)).max(axis=1, keepdims=True)               # (N, 1)
    out = np.divide(scores, scale, out=np.zeros_like(scores), where=finite & (scale > 0))
    out[~finite] = np.where(scores[~finite] > 0, 1.0, -1.0)
    return out


def relabel(scores, given, *, min_margin: float = 0.0) -> Relabeling:
    """Suggested labels and issue scores from (N, K) out-of-fold `scores` and (N,) `given` labels.

    An example is an issue when its normalized margin (best class minus given class) exceeds `min_margin`;
    the best class is the lowest-index argmax, so a tie with the given label is never an issue.
    """
    if not min_margin >= 0:
        raise ConfigError(f"min_margin must be >= 0, got {min_margin}")
    scores, given = _check_scores(scores, given)
    norm = normalize_scores(scores)
    rows = np.arange(len(norm))
    best = np.argmax(norm, axis=1)
    score = norm[rows, best] - norm[rows, given]                                             # (N,) >= 0
    is_issue = score > min_margin
    return Relabeling(suggested=np.where(is_issue, best, given).astype(np.int64), score=score,
                      is_issue=is_issue, order=np.argsort(-score, kind="stable"))


def ensemble(score_list, *, weights=None) -> np.ndarray:
    """Weighted mean of several (N, K) score arrays after row normalization (module docstring): (N, K).

    weights: one non-negative number per array (default equal), not all zero.
    """
    if len(score_list) == 0:
        raise ConfigError("ensemble needs at least one score array")
    mats = [normalize_scores(s) for s in score_list]
    if any(m.shape != mats[0].shape for m in mats):
        raise DataError(f"score arrays to ensemble must share one shape, got {[m.shape for m in mats]}")
    w = np.ones(len(mats)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(mats),) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be {len(mats)} non-negative numbers, not all zero; got {weights}")
    return sum(wi * m for wi, m in zip(w / w.sum(), mats))


def issue_metrics(is_issue, given, clean) -> dict:
    """Precision, recall and F1 of an (N,) issue mask against the true issues given != clean.

    With no flagged issues precision is 1.0 (no false alarms); with no true issues recall is 1.0 (none
    missed). Also returns n_issues (flagged) and n_true (actually wrong labels).
    """
    is_issue = np.asarray(is_issue, dtype=bool)
    given, clean = np.asarray(given), np.asarray(clean)
    if not (is_issue.shape == given.shape == clean.shape) or is_issue.ndim != 1:
        raise DataError(f"is_issue, given and clean must be (N,) arrays of one length, got "
                        f"{is_issue.shape}, {given.shape}, {clean.shape}")
    true = given != clean
    tp = int(np.count_nonzero(is_issue & true))
    n_issues, n_true = int(is_issue.sum()), int(true.sum())
    precision = tp / n_issues if n_issues else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_issues": n_issues, "n_true": n_true}


def label_accuracy(labels, clean) -> float:
    """Fraction of (N,) labels equal to the (N,) clean labels."""
    labels, clean = np.asarray(labels), np.asarray(clean)
    if labels.shape != clean.shape or labels.ndim != 1:
        raise DataError(f"labels and clean labels must be (N,) arrays of one length, got {labels.shape}, "
                        f"{clean.shape}")
    return float(np.mean(labels == clean)) if len(labels) else 1.0
