"""Summary rows of cross-fitted scores and the choice of layer x probe without clean labels.

Choosing without clean labels: under symmetric noise of rate p a prediction that does not depend on an
image's own label agrees with it with probability (1 - p) * acc + p / K, an increasing function of the true
accuracy acc, so ranking layers by agreement with the given labels ranks them by accuracy in expectation;
`estimate_noise_rate` inverts the relation. Agreement is measured on held-out images the network never
trained on (on trained-on images a memorized network's features carry the noisy label itself). Under
class-dependent noise this is a heuristic; a clean test accuracy, when there is one, is the oracle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisefix.errors import ConfigError
from noisefix.scoring.cross_fitting import ProbeScores


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
