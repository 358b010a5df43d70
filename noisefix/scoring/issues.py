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

Flagging (`flag_issues`) ranks by a label quality (lower = more suspicious; `quality.assess_labels` gives the
calibrated one and its log odds) and has two rules: "noise-aware" (default) flags the labels more likely wrong
than right (quality below `max_quality`, 0.5), lowest quality first, in each given class at most a cap on its
wrong labels (`expected_wrong`; `quality.find_issues` passes the upper end of their estimate); "disagree" flags every example whose normalized
margin exceeds `min_margin` (what `relabel` does). Both only flag examples with margin > min_margin, so an
example whose given label is a best class is never flagged, and both can be capped by `max_issues`. A flagged
example gets a suggested label only when the posterior of its most likely other class reaches
`min_suggest`; otherwise it is left for review with no suggestion (min_suggest = 1: every flag is left for
review).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisefix.errors import ConfigError, DataError

FLAG_RULES = ("noise-aware", "disagree")


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


@dataclass
class Flags:
    """Result of `flag_issues` for N examples.

    Attributes:
        is_issue: bool (N,), the flagged examples.
        suggested: int64 (N,), the label to use: the suggestion for a flagged example with strong evidence,
            the given label otherwise (also for examples left for review).
        needs_review: bool (N,), flagged examples without a strong suggestion.
        order: int64 (N,), example indices, most suspicious first (quality ascending, then margin descending,
            then index).
    """

    is_issue: np.ndarray
    suggested: np.ndarray
    needs_review: np.ndarray
    order: np.ndarray


def resolve_max_issues(max_issues, n: int) -> int | None:
    """A cap on the number of flags from `max_issues`: None (no cap), a count (int >= 0) or a fraction of
    the n examples (a float in (0, 1), rounded down). Raises ConfigError otherwise."""
    if max_issues is None:
        return None
    bad = ConfigError(f"max_issues must be a count >= 0 or a fraction in (0, 1), got {max_issues!r}")
    if isinstance(max_issues, bool) or not isinstance(max_issues, (int, float, np.integer, np.floating)):
        raise bad
    if isinstance(max_issues, (int, np.integer)):
        if max_issues < 0:
            raise bad
        return int(max_issues)
    if 0 < max_issues < 1:
        return int(np.floor(max_issues * n))
    if max_issues >= 1 and float(max_issues).is_integer():
        return int(max_issues)
    raise bad


def check_flag_options(flag: str, min_margin: float, min_suggest: float) -> None:
    if flag not in FLAG_RULES:
        raise ConfigError(f"flag must be one of {', '.join(FLAG_RULES)}, got {flag!r}")
    if not min_margin >= 0:
        raise ConfigError(f"min_margin must be >= 0, got {min_margin}")
    if not 0 <= min_suggest <= 1:
        raise ConfigError(f"min_suggest must be in [0, 1], got {min_suggest}")


def _check_row_array(a, n: int, name: str, *, ndim: int = 1) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim or len(a) != n or np.isnan(a).any():
        raise DataError(f"{name} must be a NaN-free array with {n} rows and {ndim} dimension(s), got shape {a.shape}")
    return a


def _noise_aware(quality, given, candidates, expected_wrong, K: int) -> np.ndarray:
    """In each given class c, the round(expected_wrong[c]) candidates of lowest quality (all if fewer)."""
    expected = _check_row_array(expected_wrong, K, "expected_wrong")
    if (expected < 0).any():
        raise DataError(f"expected_wrong must be >= 0 for every class, got {expected.tolist()}")
    flags = np.zeros(len(given), dtype=bool)
    for c in range(K):
        rows = np.flatnonzero(candidates & (given == c))
        take = rows[np.argsort(quality[rows], kind="stable")][: int(np.round(expected[c]))]
        flags[take] = True
    return flags


def flag_issues(quality, given, *, margin, posterior, expected_wrong=None, flag: str = "noise-aware",
                max_issues=None, min_margin: float = 0.0, min_suggest: float = 0.5,
                max_quality: float = 0.5) -> Flags:
    """Flag likely wrong labels among N examples (module docstring).

    quality: (N,) ranking key, lower = more suspicious (label_quality or its log odds); margin: (N,)
    normalized margin of the best class over the given one (`relabel(...).score`); posterior: (N, K)
    P(true class | scores, given), whose given-label column is the label quality; expected_wrong: (K,)
    expected number of wrong labels per given class (required by "noise-aware"); max_issues: None, a count
    or a fraction of N (`resolve_max_issues`); max_quality: "noise-aware" flags only labels whose quality
    is below it (default 0.5: more likely wrong than right).
    """
    check_flag_options(flag, min_margin, min_suggest)
    if not 0 <= max_quality <= 1:
        raise ConfigError(f"max_quality must be in [0, 1], got {max_quality}")
    posterior = np.asarray(posterior, dtype=np.float64)
    if posterior.ndim != 2:
        raise DataError(f"posterior must be an (examples, classes) array, got shape {posterior.shape}")
    _, given = _check_scores(posterior, given)
    n, K = posterior.shape
    quality = _check_row_array(quality, n, "quality")
    margin = _check_row_array(margin, n, "margin")
    cap = resolve_max_issues(max_issues, n)
    order = np.lexsort((np.arange(n), -margin, quality))                                  # last key first
    candidates = margin > min_margin
    if flag == "disagree":
        is_issue = candidates
    elif expected_wrong is None:
        raise ConfigError("the noise-aware rule needs expected_wrong per class; use flag='disagree' without it")
    else:
        likely = posterior[np.arange(n), given] < max_quality
        is_issue = _noise_aware(quality, given, candidates & likely, expected_wrong, K)
    if cap is not None and is_issue.sum() > cap:
        kept = order[is_issue[order]][:cap]                                                # most suspicious
        is_issue = np.zeros(n, dtype=bool)
        is_issue[kept] = True
    others = posterior.copy()
    others[np.arange(n), given] = -1.0
    alt = others.argmax(axis=1)
    strong = is_issue & (others.max(axis=1) >= min_suggest) & (min_suggest < 1)        # 1: never suggest
    return Flags(is_issue=is_issue, suggested=np.where(strong, alt, given).astype(np.int64),
                 needs_review=is_issue & ~strong, order=order)


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


def sorted_mid_ranks(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, the sorted values, their 1-based mid-ranks) of (N,) `values` from one argsort: tied values share
    the mean of their ranks, so the order within a tie does not matter to any caller and the sort need not be
    stable (numpy's default sort is 6x faster on 54,000 float64 values than its stable one: 0.7 against 4.3 ms,
    called once per bootstrap resample)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values)
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    return order, ordered, np.repeat((starts + ends + 1) / 2.0, ends - starts)


def ranking_metrics(quality, given, clean) -> dict:
    """AUROC and average precision of (N,) `quality` (lower = more suspicious) at finding given != clean, tied
    qualities counted as one threshold (the definitions of scikit-learn's roc_auc_score and
    average_precision_score, in one sort).

    Both are None when every label is right or every label is wrong (nothing to rank against).
    """
    quality = np.asarray(quality, dtype=np.float64)
    given, clean = np.asarray(given), np.asarray(clean)
    if not (quality.shape == given.shape == clean.shape) or quality.ndim != 1 or np.isnan(quality).any():
        raise DataError(f"quality, given and clean must be NaN-free (N,) arrays of one length, got "
                        f"{quality.shape}, {given.shape}, {clean.shape}")
    wrong = given != clean
    if wrong.all() or not wrong.any():
        return {"auroc": None, "average_precision": None}
    order, ordered, ranks = sorted_mid_ranks(quality)               # most suspicious (lowest quality) first
    hit = wrong[order]
    pos, neg = int(hit.sum()), int((~hit).sum())
    auroc = 1.0 - (ranks[hit].sum() - pos * (pos + 1) / 2) / (pos * neg)  # Mann-Whitney U of the qualities
    last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])  # the last image of each tie group
    found = np.cumsum(hit)[last]
    recall_step = np.diff(np.r_[0, found]) / pos
    return {"auroc": float(auroc), "average_precision": float(np.sum(recall_step * found / (last + 1)))}


def confusion_table(given, suggested, is_issue, *, num_classes: int) -> np.ndarray:
    """int64 (K, K + 1) counts of flagged examples: row = given class, column = suggested class, the last
    column = flagged for review (no suggestion: suggested equals given)."""
    given, suggested, is_issue = np.asarray(given), np.asarray(suggested), np.asarray(is_issue, dtype=bool)
    if not (given.shape == suggested.shape == is_issue.shape) or given.ndim != 1:
        raise DataError(f"given, suggested and is_issue must be (N,) arrays of one length, got {given.shape}, "
                        f"{suggested.shape}, {is_issue.shape}")
    K = num_classes
    column = np.where(suggested == given, K, suggested)[is_issue]
    table = np.zeros((K, K + 1), dtype=np.int64)
    np.add.at(table, (given[is_issue], column), 1)
    return table
