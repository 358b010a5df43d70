"""Check: MASC's refined cross-fitting folds against exact fold fits, on a real run's activations.

A cross-fitting fold's class subspaces start from the all-data fit's, which saw the fold's own images, and
are refined on the fold's matrix (`eigensolvers.warm_subspace(fold=True)`). If the refinement stops early,
the fold keeps directions of its own images, and its out-of-fold scores lean towards the given labels: a
leak that hides wrong labels (found on 2026-12-07: 1-4 % of out-of-fold predictions, docs/benchmarks.md
§1b). This script keeps it from coming back unnoticed.

For each layer of the run's checkpoint it extracts the training images that are not held out (the rows
`noisefix probe` fits on, with its folds), then cross-fits MASC twice in the same process:

* refined: `scoring.cross_fit` as the probe stage runs it;
* exact: the same with every warm start declined, so each class subspace is the exact eigendecomposition.

It reports per layer the route (Gram or second moments), both wall times, the largest out-of-fold score
difference, the share of out-of-fold predictions that differ and the agreement of each with the given labels.
A leak shows as a higher agreement for the refined folds; numerical noise at the 99 % cut does not.
Run `python bench/bench_fold_exactness.py RUN [RUN ...] [--layers relu3,relu2] [--out docs/benchmarks.md]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_masc import machine, publish, table_head  # noqa: E402

from noisefix.config import ProbeConfig  # noqa: E402
from noisefix.data.images import ImageSource
from noisefix.data.splits import make_folds
from noisefix.nn.extract import ActivationExtractor, resolve_layers
from noisefix.probes import eigensolvers
from noisefix.scoring.cross_fitting import cross_fit, refits_on_activations
from noisefix.stages.runs import load_run_model, open_run


def fit_activations(run: Path, checkpoint: str, layers: str) -> tuple[dict[str, torch.Tensor], np.ndarray, int]:
    """Activations (N, d) per layer of the training images the probe fits on (not held out), their labels, K."""
    loaded = open_run(run)
    model, _ = load_run_model(loaded, checkpoint)
    names = resolve_layers(model, layers)
    extractor = ActivationExtractor(model, names)
    train = loaded.splits.train
    rows = np.flatnonzero(~loaded.holdout)
    blocks = {name: [] for name in names}
    source = ImageSource(train, loaded.spec)
    for x, _ in source.batches(256):                                 # the extractor runs under no_grad itself
        for name, a in extractor(source.to_input(x)).items():
            blocks[name].append(a.float())
    X = {name: torch.cat(b)[torch.from_numpy(rows)] for name, b in blocks.items()}
    return X, train.targets[rows], len(train.classes)


def compare(X: torch.Tensor, labels: np.ndarray, folds: np.ndarray, K: int, layer: str) -> dict:
    """Refined against exact folds on one layer: times, score difference, prediction and label agreement."""
    def fit() -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        s = cross_fit("masc", stats=None, X=X, labels=labels, folds=folds, layer=layer, num_classes=K)
        return s.oof_scores, time.perf_counter() - t0

    refined, t_refined = fit()
    with mock.patch.object(eigensolvers, "warm_subspace", return_value=None):
        exact, t_exact = fit()
    p_r, p_e = refined.argmax(1), exact.argmax(1)
    gram = refits_on_activations("masc", np.bincount(labels, minlength=K), X.shape[1])
    return {"layer": layer, "dim": int(X.shape[1]), "route": "gram" if gram else "moments",
            "refined_s": t_refined, "exact_s": t_exact, "max_diff": float(np.abs(refined - exact).max()),
            "differ": float(np.mean(p_r != p_e)), "agree_refined": float(np.mean(p_r == labels)),
            "agree_exact": float(np.mean(p_e == labels))}


def table(rows: list[dict]) -> str:
    head = ("| run | layer | d | route | refined s | exact s | max score diff | predictions differing | "
            "agreement with given labels, refined / exact |")
    lines = table_head(head)
    for r in rows:
        lines.append(f"| {r['run']} | {r['layer']} | {r['dim']:,} | {r['route']} | {r['refined_s']:.1f} | "
                     f"{r['exact_s']:.1f} | {r['max_diff']:.1e} | {100 * r['differ']:.2f} % | "
                     f"{100 * r['agree_refined']:.2f} / {100 * r['agree_exact']:.2f} % |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories (noisefix train output)")
    p.add_argument("--layers", default="default", help="layers to check (default: the probe's default layers)")
    p.add_argument("--checkpoint", default="final")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", help="markdown file to append the table to (default: print only)")
    a = p.parse_args(argv)
    started = datetime.now(timezone.utc)
    rows = []
    for run in a.runs:
        X, labels, K = fit_activations(run, a.checkpoint, a.layers)
        folds = make_folds(labels, a.folds, seed=ProbeConfig().seed)
        for layer, A in X.items():
            rows.append({"run": run.name, **compare(A, labels, folds, K, layer)})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    md = (f"\n### bench_fold_exactness ({started:%Y-%m-%d %H:%M} UTC, checkpoint {a.checkpoint}, {a.folds} folds)"
          f"\n\nMachine: {machine()}, torch threads {torch.get_num_threads()}\n\n{table(rows)}\n")
    publish(md, a.out)
    return rows


if __name__ == "__main__":
    main()
