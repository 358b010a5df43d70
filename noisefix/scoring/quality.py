"""Label quality of every image and the estimated noise rate, from calibrated cross-fitted probe scores
(numpy only; the calibration itself is `calibration`).

N images, K classes; `scores`, `given` and `fit_mask` as in `calibration`.

Trained-on images: a network's features carry the given label of the images it trained on, so their
out-of-fold scores lean to it and a calibration fitted on held-out images calls their wrong labels
uncertain (measured on 20,000 MNIST images at 53 % wrong labels: trained-on labels of estimated P(wrong)
0.1-0.3 were wrong 47 % of the time, held-out ones 21 %; a temperature fitted on every image halves the
estimated noise). Held-out and trained-on images are random halves of one set, so with enough held-out
images (`rank_matched`) each trained-on image gets the held-out log odds at its own rank among the
trained-on images: the calibration of the held-out images, the order of the trained-on ones (assumes the
pull towards the given label keeps the order). The posterior's other classes are rescaled to match.

The noise estimate is a *wrong fraction*: the share of images whose given label is not the true class (the
paper's symmetric rate p redraws the label uniformly, the true class included: wrong fraction p (K - 1) / K).
It is the mean of 1 - label_quality over all images, per given class likewise. With rank matching that is
the held-out images' rate spread over the ranks of all. Without it (few or no held-out images) the overall
rate pools the mean over the fit images (unbiased for held-out images, but from few) with the mean over all
N images (precise, but trained-on images look cleaner than they are) by the evidence that the two differ
(`estimate_noise`), and the per-class rates are scaled to that total. The interval is a bootstrap over the
fit images (T refitted and the ranks matched again on each resample). It covers sampling error only:
confident errors of the probe itself are indistinguishable from wrong labels and count as noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisefix.errors import ConfigError
from noisefix.nn.device import thread_map
from noisefix.scoring.calibration import (
    GivenLogOdds,
    NoiseModel,
    Trusted,
    as_sources,
    calibrated_log_probs,
    check_given,
    check_mask,
    fit_noise_model,
    held_out_fit,
    label_posterior,
    refit_transition,
)
from noisefix.scoring.issues import (
    Flags,
    check_flag_options,
    ensemble,
    flag_issues,
    relabel,
    resolve_max_issues,
    sorted_mid_ranks,
)


@dataclass
class NoiseEstimate:
    """Estimated wrong fraction: the share of images whose given label is not the true class.

    Attributes:
        rate: overall wrong fraction (see `estimate_noise`).
        interval: (low, high), central bootstrap interval of `rate` at `level`.
        per_class: float64 (K,), wrong fraction among the images given each class (0 for an empty class).
        per_class_interval: float64 (K, 2), bootstrap interval of each per-class rate.
        expected_wrong: float64 (K,), expected number of wrong labels among the images given each class.
        fit_rate: mean of 1 - label_quality over the fit images only.
        pooled_rate: mean of 1 - label_quality over all N images before rank matching.
        fit_weight: weight of fit_rate in `rate` (the rest is pooled_rate; see `estimate_noise`); 1.0 with
            rank matching (the estimate rests on the held-out images alone).
        rank_matched: whether trained-on images took the held-out images' calibration (module docstring).
        level: coverage of the intervals; NaN intervals when no bootstrap was run.
    """

    rate: float
    interval: tuple[float, float]
    per_class: np.ndarray
    per_class_interval: np.ndarray
    expected_wrong: np.ndarray
    fit_rate: float
    pooled_rate: float
    fit_weight: float
    level: float
    rank_matched: bool = False


@dataclass
class LabelQuality:
    """`assess_labels` for N images over K classes.

    Attributes:
        label_quality: float64 (N,), P(given label is right | scores, given) in [0, 1].
        log_odds: float64 (N,), finite log(label_quality / (1 - label_quality)); rank by it.
        posterior: float64 (N, K), P(true class | scores, given); rows sum to 1.
        probs: float64 (N, K), calibrated P(true class | scores), ignoring the given label.
        model: the fitted NoiseModel.
        noise: the NoiseEstimate.
    """

    label_quality: np.ndarray
    log_odds: np.ndarray
    posterior: np.ndarray
    probs: np.ndarray
    model: NoiseModel
    noise: NoiseEstimate


def rank_matched(values, reference) -> np.ndarray:
    """`values` (n,) moved onto the distribution of `reference` (m,), keeping their order: each value becomes
    the reference quantile at its mid-rank (ties share one), linear between reference points; values beyond
    the outermost quantiles keep their distance to them, so the result stays strictly ordered where the
    values are. (One sort of the values: the bootstrap calls this once per resample.)"""
    values = np.asarray(values, dtype=np.float64)
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    n, m = len(values), len(ref)
    if not n or not m:
        return values.copy()
    order, ordered, mid_rank = sorted_mid_ranks(values)
    levels = (np.arange(m) + 0.5) / m
    moved = np.interp((mid_rank - 0.5) / n, levels, ref)
    lo, hi = np.interp([levels[0] * (n - 1), levels[-1] * (n - 1)], np.arange(n), ordered)  # linear quantiles
    moved = np.where(ordered < lo, ref[0] + (ordered - lo), np.where(ordered > hi, ref[-1] + (ordered - hi), moved))
    out = np.empty(n)
    out[order] = moved
    return out


def _sigmoid(log_odds: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(log_odds)


def _matched(log_odds: np.ndarray, mask: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Log odds with the images outside `mask` rank-matched to `reference` (default: those inside it)."""
    out = log_odds.copy()
    out[~mask] = rank_matched(log_odds[~mask], log_odds[mask] if reference is None else reference)
    return out


def _quality(log_probs: np.ndarray, given: np.ndarray, transition: np.ndarray, match: np.ndarray | None = None):
    """Posterior, log odds and label quality; with `match` (the held-out mask) trained-on images are
    rank-matched to the held-out ones and their posterior's other classes rescaled to the new quality."""
    posterior, log_odds = label_posterior(log_probs, given, transition)
    rows = np.arange(len(given))
    if match is None:
        return posterior, log_odds, posterior[rows, given]
    log_odds = _matched(log_odds, match)
    quality = _sigmoid(log_odds)
    others = posterior.copy()
    others[rows, given] = 0.0
    share = others.sum(axis=1, keepdims=True)
    flat = np.full_like(others, 1.0 / max(others.shape[1] - 1, 1))
    flat[rows, given] = 0.0
    rel = np.divide(others, share, out=flat, where=share > 0)
    posterior = rel * (1.0 - quality)[:, None]
    posterior[rows, given] = quality
    return posterior, log_odds, quality


def _rates(quality: np.ndarray, given: np.ndarray, mask: np.ndarray, K: int) -> tuple[float, float, np.ndarray]:
    """Mean of 1 - quality over the fit images, over all images, and per given class over all images."""
    count = np.bincount(given, minlength=K)
    per_class = np.bincount(given, weights=1.0 - quality, minlength=K) / np.maximum(count, 1)
    return float(np.mean(1.0 - quality[mask])), float(np.mean(1.0 - quality)), per_class


def _pool_weight(quality: np.ndarray, mask: np.ndarray, se_fit: float) -> float:
    """Weight of the fit-image rate against the all-image rate: d^2 / (d^2 + se^2), d the gap between the
    fit images' and the other images' rates (1 when every image is a fit image: the two coincide)."""
    if mask.all():
        return 1.0
    gap = float(np.mean(quality[~mask]) - np.mean(quality[mask]))
    return gap * gap / (gap * gap + se_fit * se_fit) if gap or se_fit else 0.0


def _check_boot(n_boot: int, level: float) -> None:
    if not (isinstance(n_boot, int) and n_boot >= 0):
        raise ConfigError(f"n_boot must be an integer >= 0, got {n_boot}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")


def _bootstrap(log_probs, given, model: NoiseModel, mask, odds: GivenLogOdds, *, smoothing: float, n_boot: int,
               seed: int, match: bool):
    """(n_boot,) fit-image rates, (n_boot,) all-image rates, (n_boot, K) per-class rates, T refitted on
    resamples of the fit images (and, with `match`, the other images rank-matched to the resample); `odds`:
    the log odds of these log probabilities and labels for any T."""
    K = log_probs.shape[1]
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(mask)
    picks = [rows[rng.integers(0, len(rows), len(rows))] for _ in range(n_boot)]

    def resample(pick: np.ndarray) -> tuple[float, float, np.ndarray]:
        T = refit_transition(log_probs[pick], given[pick], model.transition, smoothing=smoothing)
        log_odds = odds(T)
        if match:
            log_odds = _matched(log_odds, mask, reference=log_odds[pick])
        quality = _sigmoid(log_odds)
        _, pooled, per_class = _rates(quality, given, mask, K)
        return float(np.mean(1.0 - quality[pick])), pooled, per_class

    done = thread_map(resample, picks)                     # independent resamples, side by side
    fit = np.array([d[0] for d in done], dtype=np.float64)
    pooled = np.array([d[1] for d in done], dtype=np.float64)
    per_class = np.array([d[2] for d in done], dtype=np.float64).reshape(n_boot, K)
    return fit, pooled, per_class


def estimate_noise(log_probs, given, model: NoiseModel, *, fit_mask=None, smoothing: float = 10.0,
                   n_boot: int = 200, level: float = 0.95, seed: int = 0) -> NoiseEstimate:
    """Wrong fraction overall and per given class from calibrated (N, K) log probabilities and the model.

    With enough held-out images (`held_out_fit`) the other images are rank-matched to them (module
    docstring) and the rates are means of 1 - label_quality over all images, overall and per given class.
    Otherwise two estimates of the overall rate: the mean over the fit images (unbiased when they are
    held-out images, but from few of them) and over all images (precise, but trained-on images can look
    cleaner than they are), pooled with weight d^2 / (d^2 + se^2) on the fit-image rate, d the gap between
    the fit and the other images' rates, se the bootstrap standard error of the fit-image rate (binomial when
    n_boot < 2); the per-class rates are the all-image ones scaled to the pooled total. The intervals are
    bootstrap quantiles (T refitted on `n_boot` resamples of the fit images).
    """
    _check_boot(n_boot, level)
    log_probs = np.asarray(log_probs, dtype=np.float64)
    n, K = log_probs.shape
    given = check_given(given, n, K)
    mask = check_mask(fit_mask, n, "fit_mask")
    match = held_out_fit(fit_mask, n, K)
    odds = GivenLogOdds(log_probs, given)  # the probabilities scaled once, for the fit and every resample
    log_odds = odds(model.transition)
    raw = _sigmoid(log_odds)
    quality = _sigmoid(_matched(log_odds, mask)) if match else raw
    fit_rate, pooled, per_class = _rates(quality, given, mask, K)
    fit_b, pooled_b, per_class_b = _bootstrap(log_probs, given, model, mask, odds, smoothing=smoothing,
                                              n_boot=n_boot, seed=seed, match=match)
    if match:
        w, rate, scale, scales = 1.0, pooled, 1.0, np.ones(n_boot)
        rates_b, pooled = pooled_b, float(np.mean(1.0 - raw))
    else:
        binomial = np.sqrt(fit_rate * (1.0 - fit_rate) / mask.sum())                      # without a bootstrap
        se = float(np.std(fit_b)) if n_boot > 1 else float(binomial)
        w = _pool_weight(quality, mask, se)
        rate = w * fit_rate + (1.0 - w) * pooled
        scale = rate / pooled if pooled > 0 else 1.0
        rates_b = w * fit_b + (1.0 - w) * pooled_b
        scales = np.divide(rates_b, pooled_b, out=np.ones(n_boot), where=pooled_b > 0)
    sizes = np.bincount(given, minlength=K)
    alpha = (1.0 - level) / 2.0
    if n_boot:
        interval = (float(np.quantile(rates_b, alpha)), float(np.quantile(rates_b, 1 - alpha)))
        per_interval = np.quantile(per_class_b * scales[:, None], [alpha, 1 - alpha], axis=0).T
    else:
        interval, per_interval = (float("nan"), float("nan")), np.full((K, 2), np.nan)
    per_class = np.clip(per_class * scale, 0.0, 1.0)
    return NoiseEstimate(rate=float(rate), interval=interval, per_class=per_class,
                         per_class_interval=np.clip(per_interval, 0.0, 1.0), expected_wrong=per_class * sizes,
                         fit_rate=fit_rate, pooled_rate=pooled, fit_weight=float(w), level=level,
                         rank_matched=match)


def assess_labels(scores, given, *, fit_mask=None, temperature_mask=None, trusted: Trusted | None = None,
                  smoothing: float = 10.0, n_boot: int = 200, level: float = 0.95, seed: int = 0) -> LabelQuality:
    """Calibrated label quality of every image and the estimated noise (module docstring).

    scores: one (N, K) array or a list of them; fit_mask: the images T is fitted on (held-out ones when
    there are any); temperature_mask, trusted: the images the temperatures are fitted on (default: see
    `fit_noise_model`); n_boot, level, seed: the bootstrap interval of the noise estimate.
    """
    _check_boot(n_boot, level)
    model = fit_noise_model(scores, given, fit_mask=fit_mask, temperature_mask=temperature_mask, trusted=trusted,
                            smoothing=smoothing)
    log_probs = calibrated_log_probs(scores, model)
    given = np.asarray(given).astype(np.int64)
    held = held_out_fit(fit_mask, len(given), log_probs.shape[1])
    posterior, log_odds, quality = _quality(log_probs, given, model.transition,
                                            match=np.asarray(fit_mask) if held else None)
    noise = estimate_noise(log_probs, given, model, fit_mask=fit_mask, smoothing=smoothing, n_boot=n_boot,
                           level=level, seed=seed)
    return LabelQuality(label_quality=quality, log_odds=log_odds, posterior=posterior, probs=np.exp(log_probs),
                        model=model, noise=noise)


def wrong_label_cap(noise: NoiseEstimate, given) -> np.ndarray:
    """(K,) most labels the noise-aware rule flags per given class: the upper end of each class's interval of
    expected wrong labels (the point estimate without a bootstrap). Measured on 20,000 MNIST images at 53 %
    wrong labels, capping at the point estimate cost 3 points of recall when 2,000 held-out images happened
    to be 1.6 points cleaner than the rest; the labels more likely wrong than right stay under the upper end
    at 0 %, 4 % and 53 % wrong labels."""
    sizes = np.bincount(np.asarray(given), minlength=len(noise.per_class))
    upper = noise.per_class_interval[:, 1]
    return np.where(np.isfinite(upper), np.maximum(upper, noise.per_class), noise.per_class) * sizes


@dataclass
class FoundIssues:
    """`find_issues` for N examples: the label quality (with the noise estimate), the normalized margin
    (N,) of the best class over the given one, and the flags."""

    quality: LabelQuality
    margin: np.ndarray
    flags: Flags


def find_issues(scores, given, *, fit_mask=None, temperature_mask=None, trusted: Trusted | None = None,
                flag: str = "noise-aware",
                max_issues=None, min_margin: float = 0.0, min_suggest: float = 0.5, smoothing: float = 10.0,
                n_boot: int = 200, seed: int = 0) -> FoundIssues:
    """Label quality, noise estimate and flags in one call (`assess_labels`, then `issues.flag_issues`).

    The margin comes from the mean of the sources' normalized scores (`issues.ensemble`), as in `relabel`;
    the flags are ranked by the log odds of label quality; "noise-aware" flags at most `wrong_label_cap`
    per given class.
    """
    check_flag_options(flag, min_margin, min_suggest)
    sources = as_sources(scores)
    resolve_max_issues(max_issues, len(sources[0]))
    quality = assess_labels(sources, given, fit_mask=fit_mask, temperature_mask=temperature_mask, trusted=trusted,
                            smoothing=smoothing, n_boot=n_boot, seed=seed)
    margin = relabel(sources[0] if len(sources) == 1 else ensemble(sources), given).score
    flags = flag_issues(quality.log_odds, given, margin=margin, posterior=quality.posterior,
                        expected_wrong=wrong_label_cap(quality.noise, given), flag=flag, max_issues=max_issues,
                        min_margin=min_margin, min_suggest=min_suggest)
    return FoundIssues(quality=quality, margin=margin, flags=flags)
