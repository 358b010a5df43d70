"""Does the clean test split measure the noise estimate's bias? On finished `clean` runs (exports with clean
labels), half of the test split calibrates (the temperatures and the matrix scaling, as relabel's `Trusted`)
and the other half, scored by the same sources with its own (right) labels, goes through the same noise
estimator: its wrong fraction eps is what the estimator calls noise on clean images. Printed per run, the
mean of 4 random halvings: the true wrong fraction (all images and the held-out ones), the estimate with the
whole test split calibrating (relabel's), the estimate with half of it, eps, and the corrected estimate
(est - eps) / (1 - eps). No bootstrap (point estimates). Used for docs/cleaning.md ("Flagging").

Usage: python bench/test_split_noise_check.py RUN [RUN ...]
"""

from __future__ import annotations

import sys

import numpy as np

from noisefix.config import RelabelConfig
from noisefix.scoring.calibration import Trusted, as_sources
from noisefix.scoring.quality import assess_labels
from noisefix.stages.relabel import relabel_evidence
from noisefix.stages.runs import open_run


def _rate(scores, given, fit_mask, trusted: Trusted) -> float:
    return assess_labels(scores, given, fit_mask=fit_mask, trusted=trusted, n_boot=0).noise.rate


def check(run: str, halvings: int = 4, seed: int = 0) -> dict:
    ev = relabel_evidence(open_run(run), RelabelConfig())
    if ev.trusted is None or ev.clean is None or ev.fit_mask is None:
        raise SystemExit(f"{run}: needs held-out images, a test split and clean labels")
    held, given = ev.fit_mask, ev.given
    test, labels = as_sources(ev.trusted.scores), np.asarray(ev.trusted.labels)
    rng = np.random.default_rng(seed)
    est, eps = [], []
    for _ in range(halvings):
        perm = rng.permutation(len(labels))
        a, b = perm[: len(labels) // 2], perm[len(labels) // 2:]
        half = Trusted(scores=[s[a] for s in test], labels=labels[a])
        est.append(_rate(ev.mats, given, held, half))
        eps.append(_rate([s[b] for s in test], labels[b], np.ones(len(b), dtype=bool), half))
    est, eps, wrong = np.array(est), np.array(eps), given != ev.clean
    return {"run": run, "true": float(np.mean(wrong)), "true_held": float(np.mean(wrong[held])),
            "estimate": _rate(ev.mats, given, held, ev.trusted), "estimate_half": float(est.mean()),
            "eps": float(eps.mean()), "corrected": float(np.mean((est - eps) / (1 - eps)))}


if __name__ == "__main__":
    for run in sys.argv[1:]:
        r = check(run)
        print(f"{r['run']}: true {100 * r['true']:.2f} (held-out {100 * r['true_held']:.2f}) | estimate "
              f"{100 * r['estimate']:.2f} | half-calibrated {100 * r['estimate_half']:.2f}, eps {100 * r['eps']:.2f}, "
              f"corrected {100 * r['corrected']:.2f}")
