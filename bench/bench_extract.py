"""Benchmark: activation extraction throughput against the model's bare forward pass, and the paper's way.

For one model on random images of its input shape, images per second of:

* forward: `model(x)` alone, eval mode, no grad, at the same batch size (the ceiling extraction can reach);
* extract: noisefix's probe pass, `ActivationExtractor` on every default layer (auto-pooled as `probe
  --pool auto`, flattened, float32) plus `ClassStats.update` with F folds for each layer, as `noisefix
  probe` does per batch;
* paper-style: batch size 1, every layer's activations copied to host memory and kept (no statistics).

`--dtypes fp32,bf16` repeats the forward and extract rows with the forward under bf16 autocast (CUDA only;
the statistics still accumulate in float32 GEMMs into float64). Run `python bench/bench_extract.py --help`;
see bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_masc import machine, publish, table_head  # noqa: E402

from noisefix.nn.extract import ActivationExtractor, apply_pooling, list_layers
from noisefix.nn.models import build_model, default_layers
from noisefix.probes.stats import ClassStats  # noqa: E402

SHAPES = {"mlp": (1, 28, 28), "cnn": (1, 28, 28), "alexnet": (3, 32, 32), "resnet18": (3, 32, 32)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(step, batches: list[tuple[torch.Tensor, ...]], device: torch.device, *, warmup: int = 2, start=None,
          finish=None) -> float:
    """Images per second of step(b) over `batches` (tuples, images first) after `warmup` untimed batches
    (fewer if there are few).

    `start()` runs untimed after the warm-up (e.g. fresh accumulators), `finish()` timed after the last batch
    (e.g. flushing buffered statistics).
    """
    warmup = min(warmup, len(batches) - 1)
    for b in batches[:warmup]:
        step(b)
    if start is not None:
        start()
    _sync(device)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    if finish is not None:
        finish()
    _sync(device)
    return sum(len(b[0]) for b in batches[warmup:]) / (time.perf_counter() - t0)


def bench_model(name: str, *, n: int, batch: int, device: torch.device, dtypes: list[str], paper_n: int,
                classes: int = 10, folds: int = 5, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    shape = SHAPES.get(name, (3, 32, 32))
    model = build_model(name, in_shape=shape, num_classes=classes).to(device).eval()
    layers = default_layers(model)
    infos, pools = apply_pooling(list_layers(model, shape, layers), "auto")   # as `noisefix probe` (--pool auto)
    images = torch.rand((n, *shape), generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    fold_ids = torch.randint(0, folds, (n,), generator=gen)
    batches = [(images[i:i + batch].to(device), labels[i:i + batch].to(device), fold_ids[i:i + batch].to(device))
               for i in range(0, n, batch)]
    rows = []
    for dtype in dtypes:
        autocast = torch.bfloat16 if dtype == "bf16" else None
        if autocast is not None and device.type != "cuda":
            continue
        extractor = ActivationExtractor(model, layers, pools=pools, device=device, autocast_dtype=autocast)
        stats: dict[str, ClassStats] = {}

        def fresh_stats():
            stats.clear()
            stats.update({i.name: ClassStats(i.dim, classes, folds, device=device, name=i.name) for i in infos})

        def flush():
            for st in stats.values():
                st.total()

        @torch.no_grad()
        def forward(b):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast is not None):
                model(b[0])

        fresh_stats()

        def extract(b):
            x, y, f = b
            for layer, act in extractor(x).items():
                stats[layer].update(act, y, f)

        rows.append({"model": name, "dtype": dtype, "batch": batch, "forward": _rate(forward, batches, device),
                     "extract": _rate(extract, batches, device, start=fresh_stats, finish=flush)})
    singles = [(images[i:i + 1].to(device),) for i in range(min(paper_n, n))]
    extractor = ActivationExtractor(model, layers, pools=pools, device=device)
    kept: list[dict] = []
    rows.append({"model": name, "dtype": "fp32", "batch": 1, "forward": None,
                 "paper": _rate(lambda b: kept.append({k: v.cpu() for k, v in extractor(b[0]).items()}),
                                singles, device)})
    return rows


def table(rows: list[dict]) -> str:
    head = ("| model | forward dtype | batch | bare forward img/s | noisefix extract + stats img/s | "
            "extract / forward | paper-style (batch 1, keep all) img/s |")
    lines = table_head(head)
    for r in rows:
        if "paper" in r:
            lines.append(f"| {r['model']} | {r['dtype']} | 1 | - | - | - | {r['paper']:,.0f} |")
        else:
            lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['forward']:,.0f} | {r['extract']:,.0f} "
                         f"| {r['extract'] / r['forward']:.2f} | - |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,cnn", help="comma-separated noisefix model names")
    p.add_argument("--n", type=int, default=4096, help="random images per measurement")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--paper-n", type=int, default=256, help="images for the batch-size-1 paper-style row")
    p.add_argument("--folds", type=int, default=5, help="statistics folds (K*F*d^2*8 bytes per layer)")
    p.add_argument("--dtypes", default="fp32", help="fp32 and/or bf16 (bf16 needs CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="markdown file to append the table to (default: print only)")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    a = parse_args(argv)
    device = torch.device(a.device)
    started = datetime.now(timezone.utc)
    rows = []
    for name in a.models.split(","):
        rows += bench_model(name, n=a.n, batch=a.batch, device=device, dtypes=a.dtypes.split(","),
                            paper_n=a.paper_n, folds=a.folds)
        print(f"{name}: done", flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    md = (f"\n### bench_extract on {where}: N={a.n} random images, {a.folds} folds ({started:%Y-%m-%d %H:%M} UTC)\n\n"
          f"Machine: {machine()}\n\n{table(rows)}\n")
    publish(md, a.out)
    return rows


if __name__ == "__main__":
    main()
