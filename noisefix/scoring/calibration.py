"""Calibration of cross-fitted probe scores: temperatures and a class-conditional noise matrix fitted by EM on
the given labels, and the posterior of the true class (numpy only).

N images, K classes. `scores` is one (N, K) array of out-of-fold probe scores (higher = more likely this
class; rows are normalized as in `issues.normalize_scores`) or a list of M such arrays (an ensemble); `given`
is the (N,) array of labels in [0, K) the dataset came with. `fit_mask`, bool (N,), marks the images the
noise is fitted on: held-out images the network never trained on when there are any (on trained-on images
a network's features can carry the given label itself), every image otherwise.

The model, fitted by maximum likelihood of the *given* labels (no clean labels needed):
- each source's normalized scores z become class probabilities with one temperature, softmax(z / t), read as
  P(true class | scores); an ensemble averages its sources' calibrated probabilities and sharpens or flattens
  the average with one more temperature, softmax(log mean / t_e): q;
- the given label is the true class passed through a class-conditional noise matrix T, T[i, j] = P(given j |
  true i) (rows sum to 1), independent of the scores given the true class; so P(given j | scores) = (q T)[j].
EM fits (t, T) with the true class latent. The temperature is identified by how disagreement with the given
labels grows as the probe's confidence falls; the noise by the disagreement left where the probe is sure. The
M step for T adds `smoothing` pseudo-images per class from the current symmetric fit, (1 - w) on the diagonal
and w / (K - 1) elsewhere, so a small fit set shrinks towards symmetric noise.

Which images fit what: with images whose labels are known to be right (`Trusted`: the clean test split, scored
by the same probes) the calibration is fitted on them with no noise: temperature scaling per source, then a
matrix scaling of the ensemble (`matrix_scaling`), so that the probe's own confident mistakes count as its
errors and not as wrong labels; T alone is then fitted by EM on `fit_mask`. Without them, with enough held-out
images (`MIN_HELD_PER_CLASS` per class on average, and some
trained-on ones) the temperatures and T are fitted on them alone. Below that (the digits demo holds out 120
images: too few to identify a temperature, the fit runs to t -> 0) the temperatures use every image
(`temperature_mask`, default) and only T is refitted on `fit_mask`.

label_quality = P(true = given | scores, given) = q[given] T[given, given] / (q T)[given], in [0, 1]. Its log
odds, log(q_g T_gg) - log sum_{i != g} q_i T_ig, are computed in log space and finite for every row (T is
floored at 1e-9), so even labels whose quality rounds to 0 or 1 keep a strict ranking. For fixed other scores
the log odds rise with the given class's score and fall with any other class's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from noisefix.errors import ConfigError, DataError
from noisefix.scoring.issues import normalize_scores

if TYPE_CHECKING:  # matrix_scaling uses this module's log_softmax; fit_matrix_scaling is imported where used
    from noisefix.scoring.matrix_scaling import MatrixScaling

_MIN_T, _MAX_T = 1e-4, 1e2  # bounds of a fitted temperature on logits of order 1
_T_FLOOR = 1e-9             # smallest entry of a noise matrix: keeps every log odds finite
MIN_HELD_PER_CLASS = 30     # held-out images per class (on average) from which they alone are fitted on
MIN_TRUSTED_PER_CLASS = 10  # trusted images per class (on average) from which the temperatures are fitted on them


@dataclass
class NoiseModel:
    """A fitted calibration of M score sources over K classes.

    Attributes:
        temperatures: float64 (M,), one per source: softmax(normalized scores / temperature).
        ensemble_temperature: temperature on the log of the sources' mean probability (1.0 for one source).
        transition: float64 (K, K), T[i, j] = P(given j | true i); rows sum to 1.
        log_likelihood: mean log P(given | scores) over the fit images.
        n_fit: number of images T was fitted on.
        scaling: the matrix scaling fitted on trusted images, applied after the temperatures (None: no trusted
            images; the temperatures were fitted by EM on the given labels).
    """

    temperatures: np.ndarray
    ensemble_temperature: float
    transition: np.ndarray
    log_likelihood: float
    n_fit: int
    scaling: MatrixScaling | None = None


@dataclass
class Trusted:
    """Images whose labels are known to be right (the clean test split), scored by the same M sources.

    Attributes:
        scores: one (n, K) array or a list of M, as the training images' `scores`.
        labels: (n,) their labels in [0, K).
    """

    scores: object
    labels: np.ndarray

    def checked(self, M: int, K: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The normalized sources and the labels, checked against M sources over K classes."""
        sources = as_sources(self.scores)
        if len(sources) != M or sources[0].shape[1] != K:
            raise DataError(f"trusted scores must be {M} source(s) over {K} classes, got {len(sources)} of shape "
                            f"{sources[0].shape}")
        return sources, check_given(self.labels, len(sources[0]), K)

    def enough(self, K: int) -> bool:
        """Whether there are enough of them to fit the temperatures on (`MIN_TRUSTED_PER_CLASS` per class)."""
        return len(np.asarray(self.labels)) >= MIN_TRUSTED_PER_CLASS * K


def as_sources(scores) -> list[np.ndarray]:
    """One (N, K) array or a list of them -> list of normalized (N, K) float64 arrays of one shape."""
    mats = list(scores) if isinstance(scores, (list, tuple)) or np.ndim(scores) == 3 else [scores]
    if not mats:
        raise ConfigError("label quality needs at least one score array")
    mats = [normalize_scores(m) for m in mats]
    if mats[0].shape[1] < 2:
        raise DataError(f"label quality needs at least 2 classes, got scores of shape {mats[0].shape}")
    if any(m.shape != mats[0].shape for m in mats):
        raise DataError(f"score arrays must share one shape, got {[m.shape for m in mats]}")
    return mats


def check_given(given, n: int, K: int) -> np.ndarray:
    given = np.asarray(given)
    if given.shape != (n,) or (n and not np.issubdtype(given.dtype, np.integer)):
        raise DataError(f"given labels must be {n} integer class indices, got shape {given.shape} dtype {given.dtype}")
    if n and (given.min() < 0 or given.max() >= K):
        raise DataError(f"given labels must lie in [0, {K}), got {given.min()}..{given.max()}")
    return given.astype(np.int64)


def check_mask(mask, n: int, name: str) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != (n,) or mask.dtype != bool:
        raise DataError(f"{name} must be a bool array of {n} rows, got shape {mask.shape} dtype {mask.dtype}")
    if not mask.any():
        raise DataError(f"{name} selects no images; pass None to use every image")
    return mask


def held_out_fit(fit_mask, n: int, K: int) -> bool:
    """Whether `fit_mask` (bool (n,) or None) holds enough held-out images to fit on them alone and to
    rank-match the others: at least MIN_HELD_PER_CLASS * K of them, and not every image."""
    if fit_mask is None:
        return False
    held = int(np.count_nonzero(fit_mask))
    return MIN_HELD_PER_CLASS * K <= held < n


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of an (N, K) array, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def symmetric_transition(wrong: float, K: int) -> np.ndarray:
    """(K, K) noise matrix with wrong fraction `wrong` spread evenly over the other K - 1 classes."""
    if K == 1:
        return np.ones((1, 1))
    T = np.full((K, K), wrong / (K - 1))
    np.fill_diagonal(T, 1.0 - wrong)
    return T


def _fit_temperature(z: np.ndarray, r: np.ndarray, temperature: float, *, steps: int = 10) -> float:
    """Damped Newton on b = 1 / t for max sum_n sum_i r_ni log softmax(b z_n)_i (concave in b)."""
    b = 1.0 / temperature
    target = float(np.sum(r * z))
    for _ in range(steps):
        q = np.exp(log_softmax(b * z))
        mean = np.sum(q * z, axis=1)                                                        # (n,)
        grad = target - float(mean.sum())
        curv = float(np.sum(q * z * z) - np.sum(mean * mean))                               # -f''(b) >= 0
        step = grad / curv if curv > 1e-12 else np.sign(grad) * b
        b = float(np.clip(b + np.clip(step, -0.5 * b, 2.0 * b), 1.0 / _MAX_T, 1.0 / _MIN_T))
        if abs(step) <= 1e-6 * b:
            break
    return 1.0 / b


def _m_step_transition(r: np.ndarray, cells: np.ndarray, smoothing: float) -> np.ndarray:
    """T from the soft counts C[i, j] = sum of r[i, n] over images n given j, smoothed towards symmetric;
    r (K, n), one image per column; `cells` (K n,) = given[n] K + i, the flat (given, true) cell of each entry
    of r in its memory order."""
    K = r.shape[0]
    counts = np.bincount(cells, weights=r.ravel(), minlength=K * K).reshape(K, K).T         # (K, K) true x given
    wrong = 1.0 - np.trace(counts) / max(counts.sum(), 1e-300)
    rows = counts + smoothing * symmetric_transition(wrong, K)
    T = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1e-300)
    T = np.maximum(T, _T_FLOOR)
    return T / T.sum(axis=1, keepdims=True)


def _row_scaled(log_q: np.ndarray) -> tuple[np.ndarray, float]:
    """(n, K) probabilities divided by each row's largest (that one is 1: no row underflows to all 0s) and the
    mean log of the divisors. EM runs on them in probability space: a product and a sum per step, no exp."""
    top = log_q.max(axis=1, keepdims=True)
    return np.exp(log_q - top), float(np.mean(top)) if len(top) else 0.0


def _em(z: np.ndarray, given: np.ndarray, *, temperature: float, transition: np.ndarray, smoothing: float,
        max_iter: int, tol: float, fit_temperature: bool = True) -> tuple[float, np.ndarray, float]:
    """EM for (t, T) on (n, K) logits z and (n,) given labels; returns (t, T, mean log-likelihood).

    The steps hold the probabilities as (K, n), one image per column: numpy's sums over the K rows of that
    layout are several times faster than over the K columns of (n, K) (the bootstrap runs 50 of these fits)."""
    t, T, last = temperature, transition, -np.inf
    K = z.shape[1]
    cells = (given * K + np.arange(K)[:, None]).ravel()                # entry (i, n) of r: cell given[n] K + i

    def scaled(t: float) -> tuple[np.ndarray, float]:
        q, shift = _row_scaled(log_softmax(z / t))
        return np.ascontiguousarray(q.T), shift

    q, shift = scaled(t)
    for _ in range(max_iter):
        joint = q * T[:, given]                                     # (K, n) q_i T_iy / max_i q_i, per image
        like = joint.sum(axis=0)                                    # >= the floor of T: no underflow to 0
        ll = float(np.mean(np.log(like))) + shift                   # mean log P(y | z)
        r = joint / like                                                                    # E step
        T = _m_step_transition(r, cells, smoothing)
        if fit_temperature:
            t = _fit_temperature(z, r.T, t)
            q, shift = scaled(t)
        if ll - last < tol:
            break
        last = ll
    return t, T, ll


def _tempered_ensemble(sources: list[np.ndarray], temperatures) -> np.ndarray:
    """(N, K) log of the mean of the sources' probabilities, each source's scores divided by its temperature."""
    return _ensemble_logits([log_softmax(z / t) for z, t in zip(sources, temperatures)])


def _ensemble_logits(logps: list[np.ndarray]) -> np.ndarray:
    """(N, K) log of the mean of the sources' probabilities, from their (N, K) log probabilities."""
    if len(logps) == 1:
        return logps[0]
    stack = np.stack(logps)                                                                 # (M, N, K)
    top = stack.max(axis=0)
    return top + np.log(np.mean(np.exp(stack - top), axis=0))


def _check_fit_options(smoothing: float, max_iter: int) -> None:
    if not smoothing >= 0:
        raise ConfigError(f"smoothing must be >= 0, got {smoothing}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ConfigError(f"max_iter must be a positive integer, got {max_iter}")


def _scaled_temperature(z: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Temperature scaling: t maximizing sum_n log softmax(z_n / t)[labels_n] on images with right labels."""
    return _fit_temperature(z, np.eye(z.shape[1])[labels], temperature, steps=50)


def _trusted_calibration(trusted: Trusted, M: int, K: int) -> tuple[list[float], float, MatrixScaling]:
    """Each source's temperature and the ensemble's by temperature scaling on the trusted images, then the
    matrix scaling of the ensemble's log probabilities."""
    from noisefix.scoring.matrix_scaling import fit_matrix_scaling

    sources, labels = trusted.checked(M, K)
    temps = [_scaled_temperature(z, labels, 0.1) for z in sources]
    ens = _tempered_ensemble(sources, temps)
    t_e = _scaled_temperature(ens, labels, 1.0) if M > 1 else 1.0
    return temps, t_e, fit_matrix_scaling(log_softmax(ens / t_e), labels)


def fit_noise_model(scores, given, *, fit_mask=None, temperature_mask=None, trusted: Trusted | None = None,
                    smoothing: float = 10.0, max_iter: int = 300, tol: float = 1e-8) -> NoiseModel:
    """Fit the temperatures on the `trusted` images when there are enough of them, else by EM on
    `temperature_mask` (default: `fit_mask` when it holds enough held-out images, `held_out_fit`, else every
    image), then the noise matrix T on `fit_mask` (module docstring).

    smoothing: pseudo-images per class pulling T towards symmetric noise (>= 0).
    """
    _check_fit_options(smoothing, max_iter)
    sources = as_sources(scores)
    n, K = sources[0].shape
    given = check_given(given, n, K)
    noise_rows = check_mask(fit_mask, n, "fit_mask")
    start = symmetric_transition(min(0.2, 1.0 - 1.0 / K), K)
    opts = dict(smoothing=smoothing, max_iter=max_iter, tol=tol)
    scaling = None
    if trusted is not None and trusted.enough(K):
        temps, t_e, scaling = _trusted_calibration(trusted, len(sources), K)
    else:
        if temperature_mask is None and held_out_fit(fit_mask, n, K):
            temperature_mask = noise_rows
        temp_rows = check_mask(temperature_mask, n, "temperature_mask")
        temps = [_em(z[temp_rows], given[temp_rows], temperature=0.1, transition=start, **opts)[0] for z in sources]
        t_e = 1.0
        if len(sources) > 1:
            ens = _tempered_ensemble(sources, temps)
            t_e = _em(ens[temp_rows], given[temp_rows], temperature=1.0, transition=start, **opts)[0]
    logits = _calibrated(sources, temps, t_e, scaling)
    _, T, ll = _em(logits[noise_rows], given[noise_rows], temperature=1.0, transition=start, fit_temperature=False,
                   **opts)
    return NoiseModel(temperatures=np.array(temps), ensemble_temperature=float(t_e), transition=T,
                      log_likelihood=ll, n_fit=int(noise_rows.sum()), scaling=scaling)


def _calibrated(sources: list[np.ndarray], temperatures, ensemble_temperature: float,
                scaling: MatrixScaling | None) -> np.ndarray:
    """(N, K) calibrated log probabilities: tempered ensemble, ensemble temperature, then the matrix scaling."""
    log_probs = log_softmax(_tempered_ensemble(sources, temperatures) / ensemble_temperature)
    return log_probs if scaling is None else scaling.log_probs(log_probs)


def calibrated_log_probs(scores, model: NoiseModel) -> np.ndarray:
    """(N, K) calibrated log P(true class | scores) of the model's sources (module docstring)."""
    sources = as_sources(scores)
    if len(sources) != len(model.temperatures):
        raise DataError(f"the noise model was fitted on {len(model.temperatures)} score sources, got {len(sources)}")
    return _calibrated(sources, model.temperatures, model.ensemble_temperature, model.scaling)


def _joint(log_probs: np.ndarray, given: np.ndarray, transition) -> np.ndarray:
    """(N, K) log q_i T[i, given]: calibrated log probabilities plus the log noise matrix (floored)."""
    return log_probs + np.log(np.maximum(np.asarray(transition, dtype=np.float64), _T_FLOOR))[:, given].T


def _log_odds(joint: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N,) finite log(q_g T_gg) - log sum_{i != g} q_i T_ig from `_joint` (overwritten in place)."""
    rows = np.arange(len(given))
    mine = joint[rows, given].copy()
    joint[rows, given] = -np.inf
    top = joint.max(axis=1)
    return mine - (top + np.log(np.exp(joint - top[:, None]).sum(axis=1)))


def label_posterior(log_probs, given, transition) -> tuple[np.ndarray, np.ndarray]:
    """P(true class | scores, given), (N, K), and the finite (N,) log odds that the given label is right,
    from calibrated (N, K) log probabilities and a (K, K) noise matrix."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    n, K = log_probs.shape
    given = check_given(given, n, K)
    joint = _joint(log_probs, given, transition)
    top = joint.max(axis=1, keepdims=True)
    total = top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))
    posterior = np.exp(joint - total[:, None])
    return posterior, _log_odds(joint, given)


class GivenLogOdds:
    """The (N,) log odds of label quality alone, as `label_posterior` gives them, for one set of calibrated (N, K)
    log probabilities and any noise matrix: `GivenLogOdds(log_probs, given)(T)` (the bootstrap calls it once per
    refitted T). The probabilities are scaled by each row's largest once; each T then costs one (N, K) x (K, K)
    product and two logs per row, no exp. Rows whose given-class or other-class mass is below 1e-250 of their
    largest probability (it would underflow) are computed in log space, so every result is finite."""

    def __init__(self, log_probs: np.ndarray, given: np.ndarray):
        self.log_probs = np.asarray(log_probs, dtype=np.float64)
        self.given = np.asarray(given, dtype=np.int64)
        q, _ = _row_scaled(self.log_probs)
        self._rows = np.arange(len(self.given))
        self._q_given = q[self._rows, self.given]
        q[self._rows, self.given] = 0.0
        self._q_others = q

    def __call__(self, transition: np.ndarray) -> np.ndarray:
        T = np.maximum(np.asarray(transition, dtype=np.float64), _T_FLOOR)
        mine = self._q_given * np.diagonal(T)[self.given]                   # q_g T_gg / max_i q_i
        others = (self._q_others @ T)[self._rows, self.given]               # sum_{i != g} q_i T_ig / max_i q_i
        exact = (mine > 1e-250) & (others > 1e-250)
        out = np.empty(len(mine))
        out[exact] = np.log(mine[exact]) - np.log(others[exact])
        if not exact.all():
            far = ~exact
            out[far] = _log_odds(_joint(self.log_probs[far], self.given[far], T), self.given[far])
        return out


def refit_transition(log_probs: np.ndarray, given: np.ndarray, transition: np.ndarray, *, smoothing: float,
                     max_iter: int = 100, tol: float = 1e-7) -> np.ndarray:
    """The noise matrix T refitted by EM on calibrated (n, K) log probabilities, the temperature fixed at 1,
    starting from `transition` (the bootstrap's inner fit)."""
    return _em(log_probs, given, temperature=1.0, transition=transition, smoothing=smoothing, max_iter=max_iter,
               tol=tol, fit_temperature=False)[1]
