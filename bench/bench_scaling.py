"""Benchmark: how noisefix's MASC probe scales with the number of vectors N (time linear, memory flat).

For each N the synthetic activations of bench_masc.Synthetic are generated block by block and never held
all at once: pass 1 feeds each block to `ClassStats.update`, then `MASC.fit_moments(total())`, pass 2
regenerates the blocks and `predict`s them. Generation is excluded from the times (timed around the
library calls only). Memory is the peak resident-set size (psutil RSS, sampled every 2 ms) over the whole
run, generation included, minus the RSS before it: it should not grow with N.

Run `python bench/bench_scaling.py --help`; see bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_masc import TAU, PeakRSS, Synthetic, machine, publish  # noqa: E402

from noisefix.probes.masc import MASC  # noqa: E402
from noisefix.probes.stats import ClassStats  # noqa: E402


def run_one(data: Synthetic, n: int, block: int) -> dict:
    """Stream n vectors through ClassStats, fit MASC, stream them again through predict."""
    t_acc = t_pred = 0.0
    agree = 0
    with PeakRSS() as mem:
        stats = ClassStats(data.dim, data.num_classes, 1)
        for i in range(0, n, block):
            x, y = data.batch(i, min(block, n - i))
            t0 = time.perf_counter()
            stats.update(x, y)
            t_acc += time.perf_counter() - t0
        t0 = time.perf_counter()
        stats.total()                                   # final flush counts as accumulation
        t1 = time.perf_counter()
        masc = MASC(TAU).fit_moments(stats.total())
        t_fit = time.perf_counter() - t1
        t_acc += t1 - t0
        for i in range(0, n, block):
            x, y = data.batch(i, min(block, n - i))
            t0 = time.perf_counter()
            p = masc.predict(x)
            t_pred += time.perf_counter() - t0
            agree += int(np.sum(p == y))
    total = t_acc + t_fit + t_pred
    return {"n": n, "acc": t_acc, "fit": t_fit, "pred": t_pred, "total": total, "mem": mem.peak,
            "us_per_vec": 1e6 * (t_acc + t_pred) / n, "label_acc": agree / n,
            "mean_k": float(np.mean(masc.n_components_))}


def table(rows: list[dict]) -> str:
    lines = ["| N | accumulate s | fit s | predict s | total s | (accumulate + predict) us per vector | "
             "peak MB (RSS delta) | mean k_c | predictions = labels |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['acc']:.2f} | {r['fit']:.2f} | {r['pred']:.2f} | {r['total']:.2f} | "
                     f"{r['us_per_vec']:.1f} | {r['mem'] / 2**20:,.0f} | {r['mean_k']:.1f} | "
                     f"{100 * r['label_acc']:.2f} % |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ns", default="10000,30000,60000,1000000", help="comma-separated numbers of vectors")
    p.add_argument("--dim", type=int, default=256, help="feature dimension d")
    p.add_argument("--classes", type=int, default=10, help="K")
    p.add_argument("--block", type=int, default=4096, help="vectors generated and fed per update call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="markdown file to append the table to (default: print only)")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    a = parse_args(argv)
    started = datetime.now(timezone.utc)
    data = Synthetic(a.dim, a.classes, seed=a.seed)
    rows = []
    for n in (int(s) for s in a.ns.split(",") if s):
        rows.append(run_one(data, n, a.block))
        r = rows[-1]
        print(f"N={n}: {r['total']:.2f} s, {r['us_per_vec']:.1f} us/vector, peak {r['mem'] / 2**20:.0f} MB",
              flush=True)
    md = (f"\n### bench_scaling: d={a.dim}, K={a.classes}, tau={TAU}, block={a.block}, seed={a.seed} "
          f"({started:%Y-%m-%d %H:%M} UTC)\n\nMachine: {machine()}\n\n{table(rows)}\n")
    publish(md, a.out)
    return rows


if __name__ == "__main__":
    main()
