"""relabel / ensemble / metrics on synthetic scores with known noise (precision and recall floors)."""

import numpy as np
import pytest

from noisefix.errors import ConfigError, DataError
from noisefix.scoring.issues import (
    confusion_table,
    ensemble,
    flag_issues,
    issue_metrics,
    label_accuracy,
    normalize_scores,
    ranking_metrics,
    relabel,
    resolve_max_issues,
)


def make_data(n=2000, K=5, noise=0.3, signal=0.6, seed=0, views=1):
    """Clean labels, symmetric-noise given labels (each flip is wrong), and `views` independent probe-like
    (N, K) score arrays that favour the clean class by `signal`."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, K, n)
    given = np.where(rng.random(n) < noise, (clean + rng.integers(1, K, n)) % K, clean)
    scores = [rng.random((n, K)) * 0.5 for _ in range(views)]
    for s in scores:
        s[np.arange(n), clean] += signal
    return (scores[0] if views == 1 else scores), given, clean


def test_precision_and_recall_floors():
    scores, given, clean = make_data()
    r = relabel(scores, given)
    m = issue_metrics(r.is_issue, given, clean)
    assert m["precision"] >= 0.9 and m["recall"] >= 0.9 and m["n_true"] == np.sum(given != clean)
    assert label_accuracy(r.suggested, clean) >= 0.95 > label_accuracy(given, clean)
    assert np.all(r.suggested[~r.is_issue] == given[~r.is_issue])
    strict = relabel(scores, given, min_margin=0.5)
    assert strict.is_issue.sum() < r.is_issue.sum()
    assert issue_metrics(strict.is_issue, given, clean)["precision"] >= m["precision"]


def test_margin_score_and_order():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.4, 0.8]])
    r = relabel(scores, np.array([0, 0, 1, 0]))
    np.testing.assert_allclose(r.score, [0, 0.75, 0, 0.5])              # margins on max-normalized rows
    assert r.is_issue.tolist() == [False, True, False, True]            # the tie in row 2 is no issue
    assert r.order.tolist() == [1, 3, 0, 2] and r.suggested.tolist() == [0, 1, 1, 1]


def test_normalization_handles_scale_sign_and_missing_classes():
    s = np.array([[10.0, -5.0, -np.inf], [0.0, 0.0, 0.0], [-1.0, -2.0, -4.0]])
    np.testing.assert_allclose(normalize_scores(s), [[1, -0.5, -1], [0, 0, 0], [-0.25, -0.5, -1]])
    np.testing.assert_allclose(normalize_scores(s * 7), normalize_scores(s))


def test_ensemble_averages_normalized_scores():
    scores, given, clean = make_data(seed=1)
    scaled = scores * 100                                               # a probe on another scale
    np.testing.assert_allclose(ensemble([scores, scaled]), normalize_scores(scores))
    views, given, clean = make_data(signal=0.15, seed=2, views=3)        # three weak, independent views
    single = [label_accuracy(relabel(v, given).suggested, clean) for v in views]
    assert label_accuracy(relabel(ensemble(views), given).suggested, clean) > max(single) + 0.03
    weak = views[0]
    with pytest.raises(ConfigError, match="weights"):
        ensemble([scores, weak], weights=[1])
    with pytest.raises(DataError, match="shape"):
        ensemble([scores, scores[:10]])


def test_metrics_edge_cases_and_bad_input():
    given = np.array([0, 1, 2])
    m = issue_metrics(np.zeros(3, bool), given, given)
    assert m == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "n_issues": 0, "n_true": 0}
    m = issue_metrics(np.array([True, False, False]), given, np.array([0, 0, 2]))
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(DataError, match="given labels"):
        relabel(np.ones((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="min_margin"):
        relabel(np.ones((3, 2)), np.array([0, 1, 1]), min_margin=-1)


def hand_case():
    """Six examples, two classes: quality, margin and posterior chosen by hand."""
    given = np.array([0, 0, 0, 1, 1, 1])
    quality = np.array([0.1, 0.4, 0.9, 0.05, 0.3, 0.95])
    margin = np.array([0.8, 0.2, 0.0, 0.9, 0.3, 0.0])
    posterior = np.empty((6, 2))
    posterior[np.arange(6), given] = quality
    posterior[np.arange(6), 1 - given] = 1 - quality
    return quality, given, margin, posterior


def test_noise_aware_flags_the_expected_number_per_class_lowest_quality_first():
    quality, given, margin, posterior = hand_case()
    f = flag_issues(quality, given, margin=margin, posterior=posterior, expected_wrong=[1.4, 2.6])
    assert f.is_issue.tolist() == [True, False, False, True, True, False]
    assert f.order.tolist() == [3, 0, 4, 1, 2, 5]
    assert f.suggested.tolist() == [1, 0, 0, 0, 0, 1] and not f.needs_review.any()
    many = flag_issues(quality, given, margin=margin, posterior=posterior, expected_wrong=[3, 3])
    assert many.is_issue.tolist() == [True, True, False, True, True, False]            # margin 0: never flagged
    strict = flag_issues(quality, given, margin=margin, posterior=posterior, expected_wrong=[3, 3], min_margin=0.25)
    assert strict.is_issue.tolist() == [True, False, False, True, True, False]
    sure = flag_issues(quality, given, margin=margin, posterior=posterior, expected_wrong=[3, 3], max_quality=0.35)
    assert sure.is_issue.tolist() == [True, False, False, True, True, False]           # row 1: quality 0.4
    with pytest.raises(ConfigError, match="max_quality"):
        flag_issues(quality, given, margin=margin, posterior=posterior, expected_wrong=[3, 3], max_quality=2)
    dis = flag_issues(quality, given, margin=margin, posterior=posterior, flag="disagree")
    assert dis.is_issue.tolist() == (margin > 0).tolist()


def test_max_issues_caps_by_count_or_fraction_and_review_needs_no_suggestion():
    quality, given, margin, posterior = hand_case()
    kw = dict(margin=margin, posterior=posterior, flag="disagree")
    assert flag_issues(quality, given, max_issues=2, **kw).is_issue.tolist() == [True, False, False, True, False, False]
    assert flag_issues(quality, given, max_issues=0.5, **kw).is_issue.sum() == 3
    assert flag_issues(quality, given, max_issues=0, **kw).is_issue.sum() == 0
    review = flag_issues(quality, given, min_suggest=0.92, **kw)                          # only row 3 is that sure
    assert review.needs_review.tolist() == [True, True, False, False, True, False]
    assert np.array_equal(review.suggested[review.needs_review], given[review.needs_review])
    never = flag_issues(quality, given, min_suggest=1.0, **kw)
    assert np.array_equal(never.needs_review, never.is_issue) and np.array_equal(never.suggested, given)
    assert resolve_max_issues(None, 10) is None and resolve_max_issues(3.0, 10) == 3
    for bad in (-1, 1.5, "10", True, float("nan")):
        with pytest.raises(ConfigError, match="max_issues"):
            resolve_max_issues(bad, 10)
    with pytest.raises(ConfigError, match="noise-aware"):
        flag_issues(quality, given, margin=margin, posterior=posterior)
    with pytest.raises(ConfigError, match="flag must be one of noise-aware, disagree"):
        flag_issues(quality, given, margin=margin, posterior=posterior, flag="all")
    with pytest.raises(DataError, match="margin"):
        flag_issues(quality, given, margin=margin[:3], posterior=posterior, flag="disagree")


def test_confusion_table_and_ranking_metrics():
    given = np.array([0, 0, 1, 1, 2])
    suggested = np.array([1, 0, 1, 2, 2])
    table = confusion_table(given, suggested, np.array([True, True, False, True, True]), num_classes=3)
    assert table.tolist() == [[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]]                  # last column: review
    clean = np.array([1, 0, 1, 1, 2])
    perfect = ranking_metrics(np.array([0.1, 0.9, 0.8, 0.7, 0.95]), given, clean)
    assert perfect == {"auroc": 1.0, "average_precision": 1.0}
    assert ranking_metrics(np.array([-np.inf, 1.0, 2.0, np.inf, 0.0]), given, clean)["auroc"] == 1.0
    assert ranking_metrics(np.ones(5), given, given) == {"auroc": None, "average_precision": None}


@pytest.mark.parametrize("seed", range(4))
def test_ranking_metrics_match_scikit_learn_with_ties(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    quality = np.round(rng.normal(size=300), 1)                                        # many tied qualities
    quality[:20] = np.inf
    given = rng.integers(0, 3, 300)
    clean = np.where(rng.random(300) < 0.3, (given + 1) % 3, given)
    got = ranking_metrics(quality, given, clean)
    wrong, suspicion = given != clean, -np.clip(quality, -1e300, 1e300)
    assert got["auroc"] == pytest.approx(roc_auc_score(wrong, suspicion), abs=1e-12)
    assert got["average_precision"] == pytest.approx(average_precision_score(wrong, suspicion), abs=1e-12)
