"""Calibration (scoring.calibration), label quality and the noise estimate (scoring.quality) on synthetic scores
whose calibration and noise are known."""

import numpy as np
import pytest

from noisefix.errors import ConfigError, DataError
from noisefix.scoring.issues import issue_metrics, normalize_scores, ranking_metrics, relabel
from noisefix.scoring.calibration import (
    GivenLogOdds,
    Trusted,
    calibrated_log_probs,
    fit_noise_model,
    held_out_fit,
    label_posterior,
    symmetric_transition,
)
from noisefix.scoring.quality import assess_labels, find_issues, rank_matched


def make_scores(n=4000, K=5, *, temperature=0.1, wrong=0.2, noise="symmetric", seed=0, scale=3.0):
    """Probe-like (N, K) scores, true classes drawn from softmax(normalized scores / temperature) (so that
    calibration is exact at `temperature`) and given labels with `wrong` of them wrong: spread evenly over
    the other classes ("symmetric") or all moved to the next class ("pairflip")."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, K)) * scale
    z = normalize_scores(scores) / temperature
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    true = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    shift = rng.integers(1, K, n) if noise == "symmetric" else np.ones(n, dtype=np.int64)
    given = np.where(rng.random(n) < wrong, (true + shift) % K, true)
    return scores, given, true


@pytest.mark.parametrize("wrong,noise", [(0.05, "symmetric"), (0.2, "symmetric"), (0.5, "symmetric"),
                                         (0.1, "pairflip")])
def test_calibration_recovers_temperature_and_noise_rate(wrong, noise):
    scores, given, true = make_scores(wrong=wrong, noise=noise, seed=1)
    found = assess_labels(scores, given, n_boot=50)
    assert found.model.temperatures[0] == pytest.approx(0.1, rel=0.15)
    true_rate = np.mean(given != true)
    assert abs(found.noise.rate - true_rate) < 0.02
    low, high = found.noise.interval
    assert low <= found.noise.rate <= high and high - low < 0.06
    per_class_true = np.array([np.mean(given[given == c] != true[given == c]) for c in range(5)])
    np.testing.assert_allclose(found.noise.per_class, per_class_true, atol=0.05)
    np.testing.assert_allclose(found.noise.expected_wrong.sum(), np.sum(given != true), rtol=0.15, atol=5)
    if noise == "pairflip":                                                           # T finds the flip direction
        T = found.model.transition
        assert all(T[c, (c + 1) % 5] > 5 * T[c, (c + 2) % 5] for c in range(5))


def test_held_out_fit_sees_through_memorized_training_images():
    """Trained-on images whose scores lean to the given label look clean; the held-out images do not."""
    scores, given, true = make_scores(n=6000, wrong=0.2, seed=2)
    rng = np.random.default_rng(0)
    held = rng.random(len(given)) < 0.2
    memorized = scores.copy()
    memorized[~held, :] *= 0.3
    memorized[np.flatnonzero(~held), given[~held]] += 4.0                             # features carry the label
    naive = assess_labels(memorized, given, n_boot=50)
    aware = assess_labels(memorized, given, fit_mask=held, n_boot=50)
    true_rate = np.mean(given != true)
    assert naive.noise.rate < true_rate - 0.1                                          # fooled by memorization
    assert abs(aware.noise.rate - true_rate) < 0.03 and aware.noise.fit_weight > 0.9
    assert aware.noise.rank_matched and not naive.noise.rank_matched
    np.testing.assert_allclose(aware.posterior.sum(1), 1.0)
    assert np.allclose(aware.posterior[np.arange(len(given)), given], aware.label_quality)


def test_trained_on_images_take_the_held_out_calibration():
    """A pull towards the given label that keeps the order: rank matching calibrates trained-on images."""
    scores, given, true = make_scores(n=6000, wrong=0.2, seed=2)
    held = np.random.default_rng(0).random(len(given)) < 0.3
    pulled = scores.copy()
    pulled[np.flatnonzero(~held), given[~held]] += 1.0
    found = assess_labels(pulled, given, fit_mask=held, n_boot=0)
    raw = label_posterior(calibrated_log_probs(pulled, found.model), given, found.model.transition)[0]
    right, errors = (given == true)[~held], {}
    for name, quality in (("matched", found.label_quality), ("unmatched", raw[np.arange(len(given)), given])):
        q = quality[~held]
        sel = q < 0.7                                                                  # the doubtful labels
        errors[name] = abs(right[sel].mean() - q[sel].mean())
    assert errors["matched"] < 0.02 < errors["unmatched"]


def test_few_held_out_images_fit_temperatures_on_every_image():
    scores, given, _ = make_scores(n=2000, wrong=0.2, seed=7)
    held = np.zeros(len(given), dtype=bool)
    held[: 5 * 30 - 1] = True                                                          # one short of 30 per class
    assert not held_out_fit(held, len(given), 5) and held_out_fit(held | (np.arange(2000) == 500), 2000, 5)
    assert not held_out_fit(np.ones(2000, dtype=bool), 2000, 5) and not held_out_fit(None, 2000, 5)
    few = assess_labels(scores, given, fit_mask=held, n_boot=0)
    assert not few.noise.rank_matched
    assert few.model.temperatures[0] == pytest.approx(assess_labels(scores, given, n_boot=0).model.temperatures[0])


def test_rank_matched_keeps_order_and_takes_the_reference_distribution():
    rng = np.random.default_rng(0)
    values, reference = rng.normal(size=3000) * 0.2 + 5.0, rng.normal(size=1000)
    out = rank_matched(values, reference)
    assert np.all(np.diff(out[np.argsort(values)]) > 0)                                 # strict where values are
    assert abs(out.mean() - reference.mean()) < 0.01 and abs(out.std() - reference.std()) < 0.02
    tied = rank_matched([1.0, 1.0, 2.0], [0.0, 10.0])
    assert tied[0] == tied[1] < tied[2]                                                # ties share a value
    assert rank_matched([], [1.0]).shape == (0,)


def test_label_quality_is_a_calibrated_probability():
    scores, given, true = make_scores(n=8000, wrong=0.3, seed=3)
    q = assess_labels(scores, given, n_boot=0).label_quality
    right = given == true
    for lo, hi in [(0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.0)]:
        sel = (q >= lo) & (q < hi)
        assert sel.sum() > 100 and abs(right[sel].mean() - q[sel].mean()) < 0.05


def test_label_quality_is_monotone_in_the_margin():
    scores, given, _ = make_scores(seed=4)
    model = fit_noise_model(scores, given)

    def log_odds(rows, labels):
        return label_posterior(calibrated_log_probs(rows, model), labels, model.transition)[1]

    path = np.tile(np.array([[0.0, 1.0, -0.3, 0.1, 0.5]]), (41, 1))                   # row max |score| stays 1
    path[:, 0] = np.linspace(-1, 1, 41)                                                # the given class's score
    given0 = np.zeros(41, dtype=np.int64)
    margin = relabel(path, given0).score
    assert np.all(np.diff(margin) <= 0) and np.all(np.diff(log_odds(path, given0)) > 0)
    rival = np.tile(np.array([[1.0, 0.0, -0.3, 0.1, 0.5]]), (30, 1))                    # given is the best class
    rival[:, 1] = np.linspace(-1, 1, 30)                                               # while a rival grows
    assert np.all(np.diff(log_odds(rival, given0[:30])) < 0)
    two, labels, _ = make_scores(n=300, K=2, seed=5)                                    # K = 2: a function of the margin
    found = assess_labels(two, labels, n_boot=0)
    m = relabel(two, labels).score
    z = normalize_scores(two)
    signed = z[np.arange(300), 1 - labels] - z[np.arange(300), labels]                 # = margin where it is > 0
    for c in (0, 1):                                                                   # T differs by given class
        rows = np.flatnonzero(labels == c)[np.argsort(signed[labels == c])]
        assert np.all(np.diff(found.log_odds[rows]) < 0)
    assert np.array_equal(m > 0, signed > 0)


def test_every_row_is_finite_and_ranked():
    scores, given, _ = make_scores(n=500, seed=5)
    scores[0] = 0.0                                                                    # dead units
    scores[1] = [-np.inf, 1.0, -np.inf, 0.0, 0.0]                                      # classes absent from a fold
    scores[2] = [1e30, -1e30, 0.0, 0.0, 0.0]                                           # huge raw scores
    scores[3] = [5.0, 5.0, 5.0, 5.0, 5.0]                                              # a tie
    scores[4] = [-1e-30, 1.0, 0.0, 0.0, 0.0]
    found = assess_labels(scores, given, n_boot=5)
    assert np.isfinite(found.log_odds).all() and np.isfinite(found.label_quality).all()
    assert ((found.label_quality >= 0) & (found.label_quality <= 1)).all()
    np.testing.assert_allclose(found.posterior.sum(1), 1.0)
    sharp = assess_labels(scores * 1e6, given, n_boot=0)                               # scale-free
    np.testing.assert_allclose(sharp.label_quality, assess_labels(scores, given, n_boot=0).label_quality)


def test_given_log_odds_in_probability_space_match_the_log_space_posterior():
    """The bootstrap's fast log odds equal label_posterior's, also for rows whose probabilities underflow."""
    rng = np.random.default_rng(3)
    log_probs = np.log(rng.dirichlet(np.ones(6) * 0.3, size=500))
    log_probs[:5] = [0.0, -800.0, -900.0, -1000.0, -750.0, -2000.0]     # other classes far below the best
    log_probs[5:10] = [-900.0, 0.0, -1.0, -2.0, -3.0, -4.0]            # the given class far below it
    given = rng.integers(0, 6, 500)
    given[:10] = 0
    T = symmetric_transition(0.1, 6)
    T[2, 0] = 0.0                                                     # floored, as label_posterior floors it
    odds = GivenLogOdds(log_probs, given)
    for transition in (T, symmetric_transition(0.4, 6)):
        want = label_posterior(log_probs, given, transition)[1]
        got = odds(transition)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_ensemble_averages_calibrated_probabilities():
    scores, given, true = make_scores(n=2000, seed=6, temperature=0.3)
    rng = np.random.default_rng(1)
    views = [scores + rng.normal(size=scores.shape) * 2.0 for _ in range(3)]           # three noisy views
    single = [ranking_metrics(assess_labels(v, given, n_boot=0).log_odds, given, true)["auroc"] for v in views]
    both = assess_labels(views, given, n_boot=0)
    assert ranking_metrics(both.log_odds, given, true)["auroc"] > max(single) + 0.01
    assert len(both.model.temperatures) == 3 and both.model.ensemble_temperature > 0
    rescaled = assess_labels([views[0], views[0] * 50.0], given, n_boot=0)             # one probe on two scales
    np.testing.assert_allclose(rescaled.label_quality, assess_labels(views[0], given, n_boot=0).label_quality,
                               atol=1e-3)


def test_bad_options_and_inputs_give_one_line_errors():
    scores, given, _ = make_scores(n=50, seed=7)
    bad = [
        (ConfigError, lambda: assess_labels(scores, given, smoothing=-1), "smoothing"),
        (ConfigError, lambda: assess_labels(scores, given, n_boot=-2), "n_boot"),
        (ConfigError, lambda: assess_labels(scores, given, level=1.5), "level"),
        (ConfigError, lambda: assess_labels([], given), "at least one"),
        (DataError, lambda: assess_labels(scores, given, fit_mask=np.zeros(50, bool)), "fit_mask"),
        (DataError, lambda: assess_labels(scores, given, fit_mask=np.ones(3, bool)), "fit_mask"),
        (DataError, lambda: assess_labels(scores, given + 10), "given labels"),
        (DataError, lambda: assess_labels(scores[:, :1], given * 0), "2 classes"),
        (DataError, lambda: assess_labels([scores, scores[:10]], given), "shape"),
        (ConfigError, lambda: find_issues(scores, given, flag="maybe"), "flag"),
        (ConfigError, lambda: find_issues(scores, given, max_issues=-3), "max_issues"),
        (ConfigError, lambda: find_issues(scores, given, min_margin=-0.1), "min_margin"),
        (ConfigError, lambda: find_issues(scores, given, min_suggest=2), "min_suggest"),
    ]
    for kind, call, word in bad:
        with pytest.raises(kind, match=word) as err:
            call()
        assert "\n" not in str(err.value)


def test_symmetric_transition():
    T = symmetric_transition(0.3, 4)
    np.testing.assert_allclose(T.sum(1), 1.0)
    assert T[0, 0] == pytest.approx(0.7) and T[0, 1] == pytest.approx(0.1)


@pytest.mark.parametrize("wrong", [0.05, 0.1])
def test_noise_aware_flags_reach_precision_and_recall_floors(wrong):
    scores, given, true = make_scores(n=5000, K=10, wrong=wrong, temperature=0.05, seed=8)
    aware = find_issues(scores, given, n_boot=20)
    disagree = find_issues(scores, given, flag="disagree", n_boot=0)
    m_aware = issue_metrics(aware.flags.is_issue, given, true)
    m_dis = issue_metrics(disagree.flags.is_issue, given, true)
    assert m_aware["precision"] >= 0.85 and m_aware["recall"] >= 0.8
    assert m_aware["f1"] > m_dis["f1"]
    rank = ranking_metrics(aware.quality.log_odds, given, true)
    assert rank["auroc"] > 0.95 and rank["average_precision"] > 0.8


def test_noise_aware_keeps_up_with_disagree_at_heavy_noise():
    scores, given, true = make_scores(n=5000, K=10, wrong=0.5, temperature=0.05, seed=9)
    aware = issue_metrics(find_issues(scores, given, n_boot=0).flags.is_issue, given, true)
    disagree = issue_metrics(find_issues(scores, given, flag="disagree", n_boot=0).flags.is_issue, given, true)
    assert aware["f1"] >= disagree["f1"] - 0.01


@pytest.mark.parametrize("temperature", [0.02, 0.1])
def test_clean_labels_are_almost_never_flagged(temperature):
    scores, given, true = make_scores(n=5000, K=10, wrong=0.0, temperature=temperature, seed=10)
    assert np.array_equal(given, true)
    aware = find_issues(scores, given, n_boot=20)
    disagree = find_issues(scores, given, flag="disagree", n_boot=0)
    assert aware.flags.is_issue.mean() <= 0.01 < disagree.flags.is_issue.mean()
    assert aware.quality.noise.rate < 0.01 and aware.quality.noise.interval[0] <= 0.005


def confusing_probe(n, *, wrong, seed, K=5):
    """Scores of a probe that is sure of class 1 for 15 % of the class-0 images (and of 0 for 15 % of class 1),
    and given labels with `wrong` of them wrong (symmetric)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, n)
    scores = rng.normal(size=(n, K))
    scores[np.arange(n), true] += 2.5
    swap = (true < 2) & (rng.random(n) < 0.15)
    scores[np.flatnonzero(swap), 1 - true[swap]] += 4.0
    given = np.where(rng.random(n) < wrong, (true + rng.integers(1, K, n)) % K, true)
    return scores, given, true


@pytest.mark.parametrize("wrong", [0.0, 0.05, 0.4])
def test_clean_test_images_keep_the_probes_own_mistakes_out_of_the_noise(wrong):
    """EM on noisy labels reads the probe's confident confusions as wrong labels; calibrated on clean images
    (temperature, then matrix scaling) it does not."""
    scores, given, true = confusing_probe(20000, wrong=wrong, seed=1)
    test_scores, _, test_labels = confusing_probe(5000, wrong=0.0, seed=2)
    held = np.random.default_rng(0).random(len(given)) < 0.2
    em = assess_labels(scores, given, fit_mask=held, n_boot=0)
    trusted = assess_labels(scores, given, fit_mask=held, trusted=Trusted(test_scores, test_labels), n_boot=20)
    rate = np.mean(given != true)
    assert trusted.model.scaling is not None and em.model.scaling is None
    assert abs(trusted.noise.rate - rate) < 0.01
    assert wrong == 0.4 or em.noise.rate > rate + 0.015                                # EM over-calls light noise
    flags = find_issues(scores, given, fit_mask=held, trusted=Trusted(test_scores, test_labels), n_boot=20).flags
    assert flags.is_issue.mean() < rate + 0.015 and (wrong or flags.is_issue.mean() < 0.01)


def test_too_few_or_mismatched_clean_images():
    scores, given, _ = confusing_probe(3000, wrong=0.1, seed=3)
    test_scores, _, test_labels = confusing_probe(49, wrong=0.0, seed=4)               # one short of 10 per class
    few = assess_labels(scores, given, trusted=Trusted(test_scores, test_labels), n_boot=0)
    assert few.model.scaling is None
    assert few.model.temperatures[0] == pytest.approx(assess_labels(scores, given, n_boot=0).model.temperatures[0])
    with pytest.raises(DataError, match="trusted scores must be 1 source"):
        assess_labels(scores, given, trusted=Trusted(np.zeros((60, 3)), np.zeros(60, dtype=int)), n_boot=0)
