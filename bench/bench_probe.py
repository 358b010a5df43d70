"""Benchmark: `noisefix probe` end to end on a real run, against the paper-style pipeline, in one process.

* decode: both splits' images decoded once into the process's cache first, timed on their own and counted in
  neither pipeline (both need the same pixels; before 2026-12-03 noisefix paid this and the paper-style
  pipeline, run second, found the images decoded).
* noisefix: `run_probe` on the run's final checkpoint, every default layer, MASC, 5-fold cross-fitting (out-
  of-fold scores for every training image, held-out and test scores), written to a scratch subfolder.
* noisefix screened: the same with `--probes masc,ncm --screen 2` (NCM on every layer, MASC cross-fitted only
  on the 2 layers where MASC's quick fit on a per-class sample agrees best with held-out labels, as `clean`
  does); its pick should be the unscreened one's.
* paper-style: batch-size-1 extraction of every default layer for the training and test images, all
  activations kept in RAM, then per layer the paper's fit (per-class `np.cov` of [X_c; -X_c] in float64, full
  `eigh`, the 99 % rule, `bench_masc.paper_fit`) on all training images (no cross-fitting) and the arccos
  prediction of the test images; its pick is the layer of best MASC test accuracy (the paper's oracle).

Each reports the wall time and the peak resident memory above the start (psutil, sampled every 2 ms); noisefix
and the paper-style pipeline report the test accuracy of MASC at each layer (the two should agree closely:
same subspaces, except that noisefix holds out the run's held-out images), and noisefix its label-only pick.
Run `python bench/bench_probe.py RUN [RUN ...] --out docs/benchmarks.md`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_masc import PeakRSS, machine, paper_fit, paper_predict, publish, table_head  # noqa: E402

from noisefix.config import ProbeConfig  # noqa: E402
from noisefix.data.images import ImageSource
from noisefix.nn.extract import ActivationExtractor, resolve_layers
from noisefix.stages.probe import run_probe
from noisefix.stages.runs import load_run_model, open_run

SCRATCH = "bench-probe"


def paper_style(loaded) -> dict[str, float]:
    """Batch-1 extraction of every default layer, all activations stored, one fit per layer; test acc per layer."""
    model, _ = load_run_model(loaded, "final")
    layers = resolve_layers(model, "default")
    extractor = ActivationExtractor(model, layers)
    train, test = loaded.splits.train, loaded.splits.test

    def keep_all(split) -> dict[str, np.ndarray]:
        rows = {name: [] for name in layers}
        source = ImageSource(split, loaded.spec)  # the run's size, channels and normalization
        for x, _ in source.batches(1):
            for name, a in extractor(source.to_input(x)).items():
                rows[name].append(a.numpy()[0])
        return {name: np.stack(r) for name, r in rows.items()}

    X, Xt = keep_all(train), keep_all(test)
    K = len(train.classes)
    out = {}
    for name in layers:
        bases, _ = paper_fit(X[name], train.targets, K)
        out[name] = float(np.mean(paper_predict(Xt[name], bases) == test.targets))
    return out


def _noisefix(loaded, run: Path, cfg: ProbeConfig) -> dict:
    """Time, peak memory, MASC test accuracy per layer and the pick of one `run_probe` (scratch output removed)."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        outcome = run_probe(loaded, cfg, force=True, subdir=SCRATCH)
        seconds = time.perf_counter() - t0
    shutil.rmtree(run / SCRATCH, ignore_errors=True)
    return {"s": seconds, "mem": mem.peak, "pick": f"{outcome.best['layer']}/{outcome.best['probe']}",
            "acc": {r["layer"]: r["test_acc"] for r in outcome.rows if r["probe"] == "masc"}}


def bench_run(run: Path, folds: int) -> dict:
    loaded = open_run(run)
    t0 = time.perf_counter()
    for split in (loaded.splits.train, loaded.splits.test):
        ImageSource(split, loaded.spec)                          # decoded into the process's cache, for both
    decode_s = time.perf_counter() - t0
    full = _noisefix(loaded, run, ProbeConfig(probes=("masc",), folds=folds, checkpoints=("final",)))
    screened = _noisefix(loaded, run, ProbeConfig(probes=("masc", "ncm"), folds=folds, checkpoints=("final",),
                                                  screen=2))
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        p_acc = paper_style(loaded)
        t_p = time.perf_counter() - t0
    return {"run": str(run), "arch": loaded.model_info["arch"], "n_train": len(loaded.splits.train),
            "n_test": len(loaded.splits.test), "decode_s": decode_s, "nf_s": full["s"], "nf_mem": full["mem"],
            "nf_pick": full["pick"], "nf_acc": full["acc"], "screened_s": screened["s"],
            "screened_mem": screened["mem"], "screened_pick": screened["pick"], "p_s": t_p, "p_mem": mem.peak,
            "p_acc": p_acc, "p_pick": max(p_acc, key=p_acc.get) + "/masc"}


def table(rows: list[dict], folds: int) -> str:
    head = (f"| run | model | train / test images | decode s (both) | noisefix probe s ({folds}-fold, held-out + "
            "test) | noisefix screened s (ncm, MASC on the best 2) | paper-style s (batch 1, one fit) | "
            "speed-up (screened) | peak MB noisefix / screened / paper-style | pick noisefix / screened / "
            "paper-style (test acc) | MASC test acc per layer, noisefix / paper-style |")
    lines = table_head(head)
    for r in rows:
        accs = ", ".join(f"{k} {100 * r['nf_acc'][k]:.1f}/{100 * r['p_acc'][k]:.1f}" for k in r["p_acc"]
                         if k in r["nf_acc"])
        lines.append(f"| {Path(r['run']).name} | {r['arch']} | {r['n_train']:,} / {r['n_test']:,} | "
                     f"{r['decode_s']:.1f} | {r['nf_s']:.1f} | {r['screened_s']:.1f} | {r['p_s']:.1f} | "
                     f"{r['p_s'] / r['nf_s']:.1f}x ({r['p_s'] / r['screened_s']:.1f}x) | {r['nf_mem'] / 2**20:,.0f} / "
                     f"{r['screened_mem'] / 2**20:,.0f} / {r['p_mem'] / 2**20:,.0f} | {r['nf_pick']} / "
                     f"{r['screened_pick']} / {r['p_pick']} | {accs} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories (noisefix train output)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", help="markdown file to append the table to (default: print only)")
    a = p.parse_args(argv)
    started = datetime.now(timezone.utc)
    rows = [bench_run(run, a.folds) for run in a.runs]
    md = (f"\n### bench_probe ({started:%Y-%m-%d %H:%M} UTC)\n\nMachine: {machine()}, torch threads "
          f"{torch.get_num_threads()}\n\n{table(rows, a.folds)}\n")
    publish(md, a.out)
    return rows


if __name__ == "__main__":
    main()
