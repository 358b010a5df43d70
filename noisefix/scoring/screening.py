"""Which layers get the costly probes under `probe --screen N` (numpy / torch only, no stage code).

Every layer is scored with the sums-only probe (NCM); the costly ones (MASC, VeLPIC, logreg) are cross-fitted
only on the N layers per checkpoint where they are likely to win. The ranking is the costly probe's own: fitted
once on a per-class sample of the fit images and scored on held-out images (`screening_agreement`). NCM's
ranking misleads on conv layers (measured on the paper's CNN, 20,000 Fashion-MNIST images at 60 % noise: it
put block1.pool last, where MASC is best, 82.0 % test accuracy against 74.9 % for the screened pick;
docs/benchmarks.md section 1b), so it is used only where the quick fit cannot be (`by_cheap_scores`: no
held-out images, or a shard of the images per process under torchrun).
"""

from __future__ import annotations

import warnings

import numpy as np

from noisefix.nn.extract import LayerInfo
from noisefix.probes import probe_class
from noisefix.probes.rows import as_rows
from noisefix.probes.stats import as_labels
from noisefix.scoring.cross_fitting import ProbeScores, probe_maker

#: `screening_agreement`: training images per class the costly probe is fitted on to rank layers, and the most
#: held-out images it is scored on
SCREEN_PER_CLASS = 256
SCREEN_HELD = 2000


def screening_agreement(probe_name: str, X, labels, folds, *, variance: float = 0.99, seed: int = 0,
                        per_class: int = SCREEN_PER_CLASS, held: int = SCREEN_HELD) -> float:
    """How well `probe_name` on one layer's activations X (N, d) agrees with the given labels of held-out images
    (folds < 0) when fitted once on a seeded sample of at most `per_class` fit images per class: a cheap ranking
    of layers for the costly probes, from the costly probe itself. Scored on at most `held` held-out images (a
    seeded sample). NaN when there are no held-out images."""
    X = as_rows(X, what="screened activations")
    folds = np.asarray(folds)
    labels, K = as_labels(labels, len(X), None)
    rng = np.random.default_rng(seed)
    out = np.flatnonzero(folds < 0)
    if not len(out):
        return float("nan")
    out = np.sort(rng.choice(out, held, replace=False)) if len(out) > held else out
    fit = np.concatenate([rng.permutation(np.flatnonzero((folds >= 0) & (labels == c)))[:per_class]
                          for c in range(K)])
    probe = probe_maker(probe_name, variance=variance, seed=seed)()
    with warnings.catch_warnings():  # a sample's empty or degenerate classes: the cross-fit itself reports them
        warnings.simplefilter("ignore", RuntimeWarning)
        probe.fit(X.take(fit), labels[fit], num_classes=K)
    return float(np.mean(probe.predict(X.take(out)) == labels[out]))


def top_layers(group: list[LayerInfo], score: dict[str, float], n: int) -> list[LayerInfo]:
    """The `n` layers of `group` with the highest `score` (by layer name), in `group`'s order; ties go to the
    earlier layer."""
    ranked = sorted(range(len(group)), key=lambda j: (-score[group[j].name], j))[:n]
    return [group[j] for j in sorted(ranked)]


def by_quick_fit(group: list[LayerInfo], costly: list[str], n: int, *, X: dict, labels: np.ndarray,
                 folds: np.ndarray, num_classes: int, variance: float = 0.99, seed: int = 0) -> list[LayerInfo]:
    """The `n` layers of `group` where the first costly probe informative there agrees best with held-out labels
    in `screening_agreement` (X: each layer's activations, by name). No fits when every layer is kept."""
    if len(group) <= n:
        return group

    def agreement(info: LayerInfo) -> float:
        probe = next(p for p in costly if probe_class(p).informative(info.dim, num_classes))
        return screening_agreement(probe, X[info.name], labels, folds, variance=variance, seed=seed)

    return top_layers(group, {i.name: agreement(i) for i in group}, n)


def by_cheap_scores(results: list[ProbeScores], group: list[LayerInfo], n: int, *, labels: np.ndarray,
                    folds: np.ndarray) -> list[LayerInfo]:
    """The `n` layers of `group` whose best screening-probe score (`results`) agrees most with the given labels
    on held-out images (out-of-fold images when there are none)."""
    held = folds < 0

    def agreement(r: ProbeScores) -> float:
        if r.holdout_scores is not None and held.any():
            return float(np.mean(r.holdout_scores.argmax(1) == labels[held]))
        return float(np.mean(r.oof_scores.argmax(1) == labels[folds >= 0]))

    best = {i.name: max((agreement(r) for r in results if r.layer == i.name), default=-1.0) for i in group}
    return top_layers(group, best, n)
