"""Benchmark: noisefix's streaming MASC against a re-implementation of the paper's pipeline.

Both fit MASC (uncentered PCA per class, 99 % cumulative-variance rule, predict by the smallest angle)
on the same synthetic activations and predict the same vectors:

* noisefix: `ClassStats` accumulated batch by batch (as during extraction), `MASC.fit_moments(total())`,
  `predict`. Also timed: the cross-fitted route (`ClassStats` with F folds + `scoring.cross_fit`).
* paper: per class `np.cov(np.vstack([X_c, -X_c]).T)` in float64, `np.linalg.eigh` (all eigenpairs),
  k_c = #(cumulative ratio <= tau) + 1, predict by arccos of the projection norms, all activations in RAM.

Memory is the peak resident-set size (psutil RSS, sampled every 2 ms by a thread) minus the RSS just before
the timed call; the activation array itself is allocated before and is not counted for either side (the
paper pipeline needs it resident, N*d*4 bytes; noisefix does not, it only needs one batch at a time).

Run `python bench/bench_masc.py --help`; see bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import threading
import time
from datetime import datetime, timezone

import numpy as np
import psutil
import torch

from noisefix.data.splits import make_folds
from noisefix.probes.masc import MASC
from noisefix.probes.stats import ClassStats
from noisefix.scoring.cross_fitting import cross_fit

TAU = 0.99


# ----------------------------------------------------------------------------------------------- data

class Synthetic:
    """Seeded synthetic "activations": K classes, each a non-negative low-rank cloud, plus a shared background.

    x = mean_c + A_c^T z + B^T (s * g) + relu(eps): A_c (rank, d) non-negative sparse class directions,
    B (m, d) a shared non-negative background with geometrically decaying scales s, z and g half-normal
    (so x >= 0 like a ReLU layer; 10 % of the units are dead, i.e. always exactly 0), eps small isotropic
    noise (full rank on the live units). `batch(i, n)` returns rows [i, i + n) of an endless, reproducible stream, the same for
    any split into batches, so callers can stream millions of vectors without holding them.
    """

    def __init__(self, dim: int, num_classes: int, *, rank: int = 16, background: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        d, K = dim, num_classes
        self.dim, self.num_classes, self.seed = d, K, seed
        dead = rng.random(d) < 0.1                                 # units that never fire
        self.means = (np.abs(rng.standard_normal((K, d), dtype=np.float32)) * (rng.random((K, d)) < 0.2)) * ~dead
        self.dirs = (np.abs(rng.standard_normal((K, rank, d), dtype=np.float32))
                     * (rng.random((K, rank, d)) < 0.3) * ~dead)
        m = min(background, d)
        scales = (0.5 * 0.95 ** np.arange(m)).astype(np.float32)[:, None]
        self.background = np.abs(rng.standard_normal((m, d), dtype=np.float32)) * (rng.random((m, d)) < 0.3) * scales
        self.background *= ~dead
        self.noise = np.float32(0.05)

    def batch(self, start: int, n: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Rows [start, start + n): float32 (n, d) activations and int64 (n,) labels."""
        xs, ys = [], []
        i = start
        while i < start + n:
            b0 = (i // block) * block                              # generate whole blocks: split-independent
            rng = np.random.default_rng((self.seed, b0))
            y = rng.integers(0, self.num_classes, block)
            z = np.abs(rng.standard_normal((block, self.dirs.shape[1]), dtype=np.float32))
            g = np.abs(rng.standard_normal((block, self.background.shape[0]), dtype=np.float32))
            x = self.means[y]
            for c in range(self.num_classes):                      # class-specific low-rank part
                rows = np.flatnonzero(y == c)
                x[rows] += z[rows] @ self.dirs[c]
            x += g @ self.background
            x += np.maximum(rng.standard_normal(x.shape, dtype=np.float32) * self.noise, 0)
            lo, hi = i - b0, min(start + n - b0, block)
            xs.append(x[lo:hi])
            ys.append(y[lo:hi])
            i = b0 + hi
        return np.concatenate(xs), np.concatenate(ys)


# -------------------------------------------------------------------------------------- measurement

class PeakRSS:
    """Context manager: peak RSS (bytes) above the RSS at entry, sampled by a background thread."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.proc = interval, psutil.Process()
        self.peak = 0

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(self.interval)

    def __enter__(self):
        gc.collect()
        self.base = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
        self._stop.set()
        self._thread.join()


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
            f"threads), numpy {np.__version__}")


# ------------------------------------------------------------------------------------------ pipelines

def paper_fit(X: np.ndarray, y: np.ndarray, K: int, tau: float = TAU) -> tuple[list[np.ndarray], dict]:
    """The paper's fit: per class dense float64 covariance of [X_c; -X_c], full eigh, the tau rule."""
    bases, t_cov, t_eig = [], 0.0, 0.0
    for c in range(K):
        Xc = X[y == c]
        t0 = time.perf_counter()
        C = np.cov(np.vstack([Xc, -Xc]).T)                        # float64 (d, d), mean is exactly 0
        t1 = time.perf_counter()
        vals, vecs = np.linalg.eigh(C)
        vals, vecs = vals[::-1], vecs[:, ::-1]
        ratio = np.cumsum(vals) / np.sum(vals)
        k = int(np.sum(ratio <= tau)) + 1
        bases.append(vecs[:, :k])
        t2 = time.perf_counter()
        t_cov += t1 - t0
        t_eig += t2 - t1
        del C, Xc
    return bases, {"cov": t_cov, "eigh": t_eig}


def paper_predict(X: np.ndarray, bases: list[np.ndarray]) -> np.ndarray:
    """argmin_c arccos(||U_c^T x|| / ||x||), in float64 (X @ U_c upcasts X)."""
    norms = np.linalg.norm(X, axis=1)
    angles = np.empty((len(X), len(bases)))
    for c, U in enumerate(bases):
        cos = np.linalg.norm(X @ U, axis=1) / np.where(norms > 0, norms, 1)
        angles[:, c] = np.arccos(np.clip(cos, -1.0, 1.0))
    return np.argmin(angles, axis=1)


def noisefix_stream(X, y: np.ndarray, K: int, batch: int, folds=None, F: int = 1) -> ClassStats:
    """ClassStats fed batch by batch; X numpy (CPU) or a torch tensor on the GPU (as extraction produces it)."""
    device = X.device if isinstance(X, torch.Tensor) else "cpu"
    stats = ClassStats(X.shape[1], K, F, device=device)
    y_dev = torch.as_tensor(y, device=device)
    f_dev = None if folds is None else torch.as_tensor(folds, device=device)
    for i in range(0, len(X), batch):
        stats.update(X[i:i + batch], y_dev[i:i + batch], None if f_dev is None else f_dev[i:i + batch])
    stats.total()
    return stats


def _clock(device: str) -> float:
    """perf_counter after the device's queued work is done (CUDA runs asynchronously)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def bench_one(X: np.ndarray, y: np.ndarray, K: int, *, batch: int, folds: int, paper: bool,
              device: str = "cpu") -> dict:
    """Time and memory of noisefix (single fit, cross-fit) and, if `paper`, of the paper pipeline.

    device "cuda": noisefix's side runs on the GPU from activations already there (copied before timing, as
    extraction leaves them on the GPU); its memory column is then the GPU's peak allocation. The paper side
    always runs numpy on the CPU.
    """
    r = {"d": X.shape[1], "n": len(X)}
    Xn = X if device == "cpu" else torch.from_numpy(X).to(device)
    gpu = device != "cpu"
    if gpu:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRSS() as mem:
        t0 = _clock(device)
        stats = noisefix_stream(Xn, y, K, batch)
        t1 = _clock(device)
        masc = MASC(TAU).fit_moments(stats.total())
        t2 = _clock(device)
        pred_nf = masc.predict(Xn)
        t3 = _clock(device)
    r.update(nf_acc=t1 - t0, nf_fit=t2 - t1, nf_pred=t3 - t2, nf_total=t3 - t0,
             nf_mem=torch.cuda.max_memory_allocated() - base if gpu else mem.peak,
             nf_k=masc.n_components_.copy())
    del stats, masc
    if folds >= 2:
        fold_ids = make_folds(y, folds, seed=0)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem:
            t0 = _clock(device)
            stats = noisefix_stream(Xn, y, K, batch, fold_ids, folds)
            t1 = _clock(device)
            cross_fit("masc", stats=stats, X=Xn, labels=y, folds=fold_ids, X_test=None)
            t2 = _clock(device)
        r.update(cf_acc=t1 - t0, cf_fit=t2 - t1, cf_total=t2 - t0,
                 cf_mem=torch.cuda.max_memory_allocated() - base if gpu else mem.peak,
                 cf_route="gram refit" if int(np.bincount(y, minlength=K).max()) < X.shape[1] else "moments")
        del stats
    if paper:
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            bases, parts = paper_fit(X, y, K)
            t1 = time.perf_counter()
            pred_p = paper_predict(X, bases)
            t2 = time.perf_counter()
        k_p = np.array([U.shape[1] for U in bases])
        r.update(p_cov=parts["cov"], p_eigh=parts["eigh"], p_pred=t2 - t1, p_total=t2 - t0, p_mem=mem.peak,
                 p_k=k_p, agree=float(np.mean(pred_p == pred_nf)),
                 k_equal=int(np.sum(k_p == r["nf_k"])), k_maxdiff=int(np.max(np.abs(k_p - r["nf_k"]))))
    return r


def profile_eigh(d: int, K: int = 10, n: int = 8000, seed: int = 0) -> str:
    """Markdown table: the eigendecomposition routes for one class's S_c at dimension d, timed."""
    from scipy import linalg as sla
    from scipy.sparse.linalg import eigsh
    from threadpoolctl import threadpool_limits

    from noisefix.probes.stats import ClassMoments

    X, y = Synthetic(d, K, seed=seed).batch(0, n)
    Xc = X[y == 0].astype(np.float64)
    S = Xc.T @ Xc
    live = np.flatnonzero(np.diag(S) > 0)
    Sa = S[np.ix_(live, live)]                                    # what noisefix decomposes (dead units dropped)
    top = min(32, len(Sa) - 1)
    rows = []

    def timed(name, f):
        t0 = time.perf_counter()
        f()
        rows.append(f"| {name} | {time.perf_counter() - t0:.2f} |")

    one = ClassMoments(torch.from_numpy(S)[None], torch.from_numpy(Xc.sum(0))[None], torch.tensor([len(Xc)]))
    timed("noisefix `MASC.fit_moments` of this class, no k hint (what `fit_moments` does)",
          lambda: MASC(TAU).fit_moments(one))
    timed("noisefix `MASC.fit_moments` of this class, k hint 15 (what each cross-fit fold does)",
          lambda: MASC(TAU).fit_moments(one, k_hint=[15]))
    with threadpool_limits(1, user_api="blas"):
        timed('scipy `eigh(eigvals_only, driver="ev")`, 1 BLAS thread',
              lambda: sla.eigh(Sa, eigvals_only=True, driver="ev"))
        timed(f'scipy `eigh(subset_by_index=top {top}, driver="evr")`, 1 BLAS thread',
              lambda: sla.eigh(Sa, subset_by_index=[len(Sa) - top, len(Sa) - 1], driver="evr"))
        timed(f"scipy.sparse.linalg `eigsh(k={top})` (Lanczos), 1 BLAS thread", lambda: eigsh(Sa, k=top, which="LA"))
    timed("numpy `eigh` all eigenpairs, default threads (the paper)", lambda: np.linalg.eigh(S))
    return (f"| one class (n_c = {len(Xc)}), d = {d} | seconds |\n|---|---|\n" + "\n".join(rows))


# ------------------------------------------------------------------------------------------- report

def table_head(head: str) -> list[str]:
    """A markdown table's first two lines: `head` ("| a | b |") and its separator row."""
    return [head, "|" + "---|" * (head.count("|") - 1)]


def publish(md: str, out: str | None) -> None:
    """Print a result section and append it to `out` (e.g. docs/benchmarks.md) when given."""
    print(md)
    if out:
        with open(out, "a") as fh:
            fh.write(md)


def _mb(b):
    return f"{b / 2**20:,.0f}"


def table(rows: list[dict], K: int, folds: int) -> str:
    head = ("| d | N | noisefix s (accum + fit + predict) | paper s (cov + eigh + predict) | speed-up | "
            "peak MB noisefix | peak MB paper | prediction agreement | k_c equal (max abs diff) | mean k_c | "
            f"cross-fit {folds} folds s (accum + fit) | cross-fit / single | cross-fit peak MB |")
    lines = table_head(head)
    for r in rows:
        nf = f"{r['nf_total']:.2f} ({r['nf_acc']:.2f} + {r['nf_fit']:.2f} + {r['nf_pred']:.2f})"
        if "p_total" in r:
            p = f"{r['p_total']:.1f} ({r['p_cov']:.1f} + {r['p_eigh']:.1f} + {r['p_pred']:.1f})"
            sp = f"{r['p_total'] / r['nf_total']:.1f}x"
            pm = _mb(r["p_mem"])
            ag = f"{100 * r['agree']:.3f} %"
            ke = f"{r['k_equal']}/{K} ({r['k_maxdiff']})"
        else:
            p, sp, pm, ag, ke = ("not run (see --paper-n-large)",) + ("-",) * 4
        if "cf_total" in r:
            cf = f"{r['cf_total']:.1f} ({r['cf_acc']:.1f} + {r['cf_fit']:.1f}, {r['cf_route']})"
            cr = f"{r['cf_total'] / r['nf_total']:.2f}"
            cm = _mb(r["cf_mem"])
        else:
            cf, cr, cm = "not run (see --cross-fit-max-d)", "-", "-"
        lines.append(f"| {r['d']} | {r['n']:,} | {nf} | {p} | {sp} | {_mb(r['nf_mem'])} | {pm} | {ag} | {ke} | "
                     f"{np.mean(r['nf_k']):.1f} | {cf} | {cr} | {cm} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=60_000, help="vectors (images)")
    p.add_argument("--dims", default="512,2048,4096", help="comma-separated feature dimensions d")
    p.add_argument("--classes", type=int, default=10, help="K")
    p.add_argument("--with-16384", action="store_true", help="also d=16384 (noisefix only unless --paper-n-large)")
    p.add_argument("--large-d", type=int, default=4096,
                   help="from this d on, the paper pipeline (and a noisefix run on the same rows) uses "
                        "--paper-n-large vectors: its full eigh of d x d per class dominates and does not shrink with N")
    p.add_argument("--paper-n-large", type=int, default=0,
                   help="vectors for the paper comparison at d >= --large-d (0: skip the paper there; its K full "
                        "d x d eighs alone take ~400 s at d=4096 on the 2-core benchmark box)")
    p.add_argument("--folds", type=int, default=5, help="folds of the cross-fitted route (0: skip it)")
    p.add_argument("--cross-fit-max-d", type=int, default=2048,
                   help="skip the cross-fit timing above this d (F*K*d^2 float64 accumulators)")
    p.add_argument("--batch", type=int, default=256, help="rows per ClassStats.update (an extraction batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where noisefix's side runs: cpu or cuda (the paper's is numpy)")
    p.add_argument("--out", help="markdown file to append the table to (default: print only)")
    p.add_argument("--profile-eigh", type=int, metavar="D",
                   help="instead of the benchmark, time the eigendecomposition routes for one class at d=D")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    a = parse_args(argv)
    if a.profile_eigh:
        print(profile_eigh(a.profile_eigh, a.classes, seed=a.seed))
        return []
    dims = [int(s) for s in a.dims.split(",") if s]
    if a.with_16384 and 16384 not in dims:
        dims.append(16384)
    K, rows = a.classes, []
    started = datetime.now(timezone.utc)
    for d in dims:
        data = Synthetic(d, K, seed=a.seed)
        X, y = data.batch(0, a.n)
        cf = a.folds if d <= a.cross_fit_max_d else 0
        if d < a.large_d:
            runs = [(a.n, True)]
        else:
            runs = [(a.n, False)]
            if 0 < a.paper_n_large < a.n:
                runs.append((a.paper_n_large, True))
            elif a.paper_n_large >= a.n:
                runs = [(a.n, True)]
        for n, paper in runs:
            r = bench_one(X[:n], y[:n], K, batch=a.batch, folds=cf, paper=paper, device=a.device)
            rows.append(r)
            print(f"d={d} N={n}: noisefix {r['nf_total']:.1f} s"
                  + (f", paper {r['p_total']:.1f} s, agreement {100 * r['agree']:.3f} %" if paper else ""),
                  flush=True)
        del X, y
    where = (f"noisefix on {torch.cuda.get_device_name()} (peak MB noisefix = GPU allocation)"
             if a.device != "cpu" else "noisefix on the CPU")
    md = (f"\n### bench_masc: K={K}, tau={TAU}, batch={a.batch}, seed={a.seed}, {where} "
          f"({started:%Y-%m-%d %H:%M} UTC)\n\nMachine: {machine()}\n\n{table(rows, K, a.folds)}\n")
    publish(md, a.out)
    return rows


if __name__ == "__main__":
    main()
