"""Benchmark: channels-last against the usual contiguous layout on CPU, for extraction and for training steps.

For each model and input shape, on random images, in one process, the two layouts alternating (`--repeat`
rounds, the median kept):

* extract: `ActivationExtractor` on every default layer (auto-pooled as `probe --pool auto`) at `--batch`
  (at most the images), with ``layout="channels_last"`` and ``layout="contiguous"``; seconds per `--n` images.
* train: forward, cross-entropy, backward and an Adam step at batch `--train-batch` on a fresh copy of the
  model in each layout; seconds per `--n` images.

`nn.device.channels_last` (the "auto" layout of extraction and training) picks channels-last for every model
with 2-D convolutions on CPU; the ratios say what that costs or saves per model. The activations of both
layouts are compared (largest absolute difference). Run `python bench/bench_layout.py --help`; results in
docs/benchmarks.md ("Channels-last on CPU").
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from datetime import datetime, timezone

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_masc import machine, publish, table_head  # noqa: E402

from noisefix.nn.extract import ActivationExtractor, apply_pooling, list_layers
from noisefix.nn.models import build_model, default_layers

#: model name, input shape (C, H, W) and optionally the images per measurement (default --n) of each default case
CASES = ("cnn:1x28x28", "cnn:3x32x32", "alexnet:3x32x32", "resnet18:3x32x32", "resnet18:3x64x64:512",
         "resnet18:3x224x224:64", "mobilenet_v3_small:3x224x224:128")
LAYOUTS = ("channels_last", "contiguous")


def _seconds(step, batches) -> float:
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    return time.perf_counter() - t0


def bench_case(case: str, *, n: int, batch: int, train_batch: int, repeat: int) -> dict:
    name, shape_text, *count = case.split(":")
    shape = tuple(int(v) for v in shape_text.split("x"))
    n = int(count[0]) if count else n
    batch, train_batch = min(batch, n), min(train_batch, n)
    torch.manual_seed(0)
    model = build_model(name, in_shape=shape, num_classes=10, download=False).eval()
    layers = default_layers(model)
    _, pools = apply_pooling(list_layers(model, shape, layers), "auto")
    images = torch.rand((n, *shape))
    labels = torch.randint(0, 10, (n,))
    batches = [images[i:i + batch] for i in range(0, n, batch)]
    train_batches = [(images[i:i + train_batch], labels[i:i + train_batch]) for i in range(0, n, train_batch)]
    nets = {}
    for layout in LAYOUTS:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        nets[layout] = net = copy.deepcopy(model).train().to(memory_format=fmt)
        net.opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = {layout: ActivationExtractor(copy.deepcopy(model), layers, pools=pools, layout=layout)(batches[0])
             for layout in LAYOUTS}
    diff = max(float((first[LAYOUTS[0]][k] - first[LAYOUTS[1]][k]).abs().max()) for k in first[LAYOUTS[0]])
    times: dict[str, dict[str, list[float]]] = {"extract": {k: [] for k in LAYOUTS}, "train": {k: [] for k in LAYOUTS}}
    for _ in range(repeat):
        for layout in LAYOUTS:
            extractor = ActivationExtractor(copy.deepcopy(model), layers, pools=pools, layout=layout)
            extractor(batches[0])                                                   # warm-up
            with torch.no_grad():
                times["extract"][layout].append(_seconds(extractor, batches))
            net, fmt = nets[layout], torch.channels_last if layout == "channels_last" else torch.contiguous_format

            def step(b, net=net, fmt=fmt):
                x, y = b
                net.opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(net(x.contiguous(memory_format=fmt)), y).backward()
                net.opt.step()

            step(train_batches[0])                                                  # warm-up
            times["train"][layout].append(_seconds(step, train_batches))
    med = {what: {k: statistics.median(v) for k, v in per.items()} for what, per in times.items()}
    seconds = {f"{what}_{k}": med[what][k] for what in med for k in LAYOUTS}
    return {"model": name, "shape": shape_text, "n": n, "diff": diff, **seconds}


def table(rows: list[dict], a) -> str:
    head = (f"| model : input : images | extract s, channels-last / contiguous (batch {a.batch}) | ratio | train s, "
            f"channels-last / contiguous (batch {a.train_batch}) | ratio | largest activation difference |")
    lines = table_head(head)
    for r in rows:
        cells = [f"{r['model']} : {r['shape']} : {r['n']}"]
        for what in ("extract", "train"):
            last, plain = r[f"{what}_channels_last"], r[f"{what}_contiguous"]
            cells += [f"{last:.2f} / {plain:.2f}", f"{last / plain:.2f}"]
        lines.append("| " + " | ".join([*cells, f"{r['diff']:.1e}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated model:CxHxW[:images]")
    p.add_argument("--n", type=int, default=1024, help="random images per measurement")
    p.add_argument("--batch", type=int, default=256, help="extraction batch")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3, help="alternating rounds; the median is reported")
    p.add_argument("--out", help="markdown file to append the table to (default: print only)")
    a = p.parse_args(argv)
    started = datetime.now(timezone.utc)
    rows = []
    for case in a.cases.split(","):
        rows.append(bench_case(case, n=a.n, batch=a.batch, train_batch=a.train_batch, repeat=a.repeat))
        print(f"{case}: done", flush=True)
    md = (f"\n### bench_layout: N={a.n} random images per measurement, median of {a.repeat} alternating rounds "
          f"({started:%Y-%m-%d %H:%M} UTC)\n\nMachine: {machine()}\n\n{table(rows, a)}\n")
    publish(md, a.out)
    return rows


if __name__ == "__main__":
    main()
