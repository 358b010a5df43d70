"""Benchmark: noisefix's image loader on a folder of JPEGs decoded on the fly, against the model's bare forward.

The folder: `--real` JPEGs (default 300) of mixed sizes (`--min-side`..`--max-side` px, random aspect ratio)
generated as natural-ish pictures (a random 6x6 colour field upscaled bicubically, plus a gradient and fine
noise, saved at JPEG quality 90), spread over 10 class folders and repeated by hard links (symlinks where
links fail) up to each size in `--sizes`. Nothing is cached: every read decodes the file.

For each model in `--models`, at its input size (resnet18, resnet50: torchvision's ImageNet stem at 224x224x3
with the ImageNet mean/std; cnn: the paper's CNN at 32x32x3 with the folder's mean/std), images per second of:

* forward: `model(x)` alone on random inputs, eval mode, no grad, batch `--batch`;
* loader W: `ImageSource.batches` (data/images.py; decode + EXIF + convert + resize/centre-crop, the
  transforms of data/transforms.py, DataLoader with W worker processes) plus `to_input`, for W in `--workers`,
  streaming (the in-RAM cache off);
* loader W + forward: both, as `noisefix probe` consumes batches (workers decode while the model runs).

Each rate is measured for at most `--seconds` after one untimed batch, on the smallest folder.
Memory: for each folder size, the peak RSS of this process plus its DataLoader workers (psutil, sampled every
50 ms; for the workers their USS, the memory only they hold, as a forked worker's RSS counts this process's
pages again) over
`load_data` + `ImageSource` + a read of at most `--mem-batches` batches or `--seconds` seconds with the last of
`--workers`: flat memory means the folder's size does not matter. Run `python bench/bench_loader.py --help`;
see bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_masc import machine, publish  # noqa: E402

from noisefix.data.folders import load_data  # noqa: E402
from noisefix.data.images import ImageSource, ImageSpec, infer_spec  # noqa: E402
from noisefix.nn.models import build_model  # noqa: E402

CLASSES = 10
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODELS = {"resnet18": ((224, 224), "torchvision"), "resnet50": ((224, 224), "torchvision"),
          "cnn": ((32, 32), "paper")}


# ----------------------------------------------------------------------------------------------- folder

def write_jpegs(dest: Path, n: int, *, min_side: int, max_side: int, seed: int = 0) -> list[Path]:
    """`n` natural-ish RGB JPEGs of random sizes in [min_side, max_side] under `dest`."""
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
        field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        px = np.asarray(field, dtype=np.float32)
        px += np.linspace(-40, 40, w, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
        px += rng.normal(0, 8, px.shape).astype(np.float32)
        path = dest / f"real_{i:04d}.jpg"
        Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        files.append(path)
    return files


def grow_folder(root: Path, real: list[Path], n: int) -> Path:
    """root/<class>/<i>.jpg for i < n, each a hard link (else a symlink) to real[i % len(real)]."""
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        dst = root / f"class{i % CLASSES}" / f"{i:07d}.jpg"
        if dst.exists():
            continue
        try:
            os.link(real[i % len(real)], dst)
        except OSError:
            os.symlink(real[i % len(real)], dst)
    return root


# ------------------------------------------------------------------------------------------- measuring

def _rate(batches, seconds: float, step=None) -> float:
    """Images per second over `batches` (an iterator of (x, idx)) after one untimed batch, for <= `seconds`."""
    it = iter(batches)
    x, _ = next(it)
    if step is not None:
        step(x)
    n, t0 = 0, time.perf_counter()
    for x, _ in it:
        if step is not None:
            step(x)
        n += len(x)
        if time.perf_counter() - t0 >= seconds:
            break
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


class TreeMemory:
    """Peak memory of this process (RSS) plus its children (the DataLoader workers; their USS, the pages only
    they hold: a forked worker's RSS would count this process's pages again), sampled every `interval` s."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.proc, self.peak = interval, psutil.Process(), 0

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_full_info().uss
            except psutil.Error:
                pass
        return total

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def spec_for(name: str, split) -> ImageSpec:
    size, variant = MODELS[name]
    if variant == "torchvision":
        return ImageSpec(size=size, channels=3, mean=IMAGENET[0], std=IMAGENET[1], normalization="weights")
    return infer_spec(split, size=size, channels=3)


def bench_rates(name: str, root: Path, *, batch: int, workers: list[int], seconds: float) -> dict:
    split = load_data(root).train
    spec = spec_for(name, split)
    size, variant = MODELS[name]
    model = build_model(name, in_shape=spec.shape, num_classes=CLASSES, variant=variant).eval()
    row = {"model": name, "shape": "x".join(map(str, spec.shape)), "batch": batch}
    rand = torch.rand((batch, *spec.shape))

    def forward(x):
        with torch.no_grad():
            model(x)

    with torch.no_grad():
        row["forward"] = _rate(((rand, None) for _ in range(10**9)), seconds, forward)
    for w in workers:
        src = ImageSource(split, spec, max_memory_bytes=0, workers=w, pin_memory=False)
        row[f"load{w}"] = _rate(src.batches(batch, shuffle=True, seed=0), seconds, src.to_input)
        row[f"both{w}"] = _rate(src.batches(batch, shuffle=True, seed=1), seconds,
                                lambda x, src=src: forward(src.to_input(x)))
    return row


def bench_memory(root: Path, *, batch: int, workers: int, seconds: float, max_batches: int) -> dict:
    with TreeMemory() as mem:
        t0 = time.perf_counter()
        split = load_data(root).train
        listed = time.perf_counter() - t0
        spec = ImageSpec(size=(224, 224), channels=3, mean=IMAGENET[0], std=IMAGENET[1], normalization="weights")
        src = ImageSource(split, spec, max_memory_bytes=0, workers=workers, pin_memory=False)
        n, t1 = 0, time.perf_counter()
        for i, (x, _) in enumerate(src.batches(batch, shuffle=True, seed=0)):
            src.to_input(x)
            n += len(x)
            if i + 1 >= max_batches or time.perf_counter() - t1 >= seconds:
                break
        read = time.perf_counter() - t1
    return {"n": len(split), "workers": workers, "list_s": listed, "read": n, "read_s": read,
            "base": mem.base, "peak": mem.peak}


# ------------------------------------------------------------------------------------------- reporting

def table(rates: list[dict], mems: list[dict], workers: list[int], args) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = [f"\n### bench_loader.py ({when}; {machine()}; load average {load:.1f} at the end)\n\n",
           f"{args.real} generated JPEGs, {args.min_side}-{args.max_side} px, repeated by hard links; batch "
           f"{args.batch}; each rate over <= {args.seconds:g} s on the {min(args.sizes):,}-image folder, "
           "streaming (in-RAM cache off). Images/s; in brackets the ratio to the bare forward.\n\n",
           "| model | input | forward | " + " | ".join(f"loader {w}w | loader {w}w + forward" for w in workers)
           + " |\n", "|---|---|---|" + "---|---|" * len(workers) + "\n"]
    for r in rates:
        cells = []
        for w in workers:
            cells += [f"{r[f'load{w}']:,.0f} ({r[f'load{w}'] / r['forward']:.2f})",
                      f"{r[f'both{w}']:,.0f} ({r[f'both{w}'] / r['forward']:.2f})"]
        out.append(f"| {r['model']} | {r['shape']} | {r['forward']:,.0f} | " + " | ".join(cells) + " |\n")
    out += ["\nPeak memory while listing the folder and reading from it (224x224x3, "
            f"{mems[0]['workers'] if mems else '-'} workers; RSS of this process + USS of the workers, MiB):\n\n",
            "| images in folder | listing (load_data) s | images read | read s | RSS before | peak RSS | peak - before |\n",
            "|---|---|---|---|---|---|---|\n"]
    for m in mems:
        out.append(f"| {m['n']:,} | {m['list_s']:.1f} | {m['read']:,} | {m['read_s']:.1f} | {m['base'] / 2**20:,.0f} "
                   f"| {m['peak'] / 2**20:,.0f} | {(m['peak'] - m['base']) / 2**20:,.0f} |\n")
    return "".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="folder sizes (images), comma-separated")
    p.add_argument("--real", type=int, default=300, help="distinct JPEG files repeated to fill the folders")
    p.add_argument("--min-side", type=int, default=160)
    p.add_argument("--max-side", type=int, default=500)
    p.add_argument("--models", default="resnet18,cnn", help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=15.0, help="time limit of each rate and memory read")
    p.add_argument("--mem-batches", type=int, default=40, help="batches read per folder size for memory")
    p.add_argument("--work", default=None, help="folder for the images (default: a temporary one, deleted)")
    p.add_argument("--out", default=None, help="append the result section to this markdown file")
    args = p.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    args.models = [m for m in args.models.split(",") if m]
    args.workers = [int(w) for w in args.workers.split(",")]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        p.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    return args


def main(argv=None) -> tuple[list[dict], list[dict]]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        work = Path(work)
        real = write_jpegs(work / "real", args.real, min_side=args.min_side, max_side=args.max_side)
        roots = {n: grow_folder(work / f"folder{n}", real, n) for n in args.sizes}
        rates = [bench_rates(m, roots[args.sizes[0]], batch=args.batch, workers=args.workers, seconds=args.seconds)
                 for m in args.models]
        mems = [bench_memory(roots[n], batch=args.batch, workers=args.workers[-1], seconds=args.seconds,
                             max_batches=args.mem_batches) for n in args.sizes]
    publish(table(rates, mems, args.workers, args), args.out)
    return rates, mems


if __name__ == "__main__":
    main()
