"""Benchmark: reading a Clothing1M-shaped folder's lists (issue 18) as the folder grows.

Writes a Clothing1M tree of `--sizes` images (a few `--real` generated JPEGs repeated by hard links under
images/<a>/<bb>/<id>.jpg, as in the real lists), its noisy and clean kv files, key lists and names file, then
times `load_data` (parse the lists, check every listed file, the known clean labels) and `fingerprint` (one
stat per image) and records the peak RSS (ru_maxrss) after them. No image is decoded. Run
`python bench/bench_clothing1m_lists.py --help`; docs/clothing1m.md cites it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_loader import write_jpegs  # noqa: E402
from bench_masc import machine, publish  # noqa: E402

from noisefix.data.folders import fingerprint, load_data  # noqa: E402

NAMES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Down Coat",
         "Suit", "Shawl", "Dress", "Vest", "Underwear")


def make_tree(root: Path, n: int, real: list[Path], seed: int = 0) -> None:
    """n images; the last 1 % the clean test list; 4 % of the rest doubly labelled (Clothing1M: ~37k of 1M)."""
    rng = np.random.default_rng(seed)
    rels = [f"images/{i % 10}/{(i // 10) % 100:02d}/{i}.jpg" for i in range(n)]
    for rel, i in zip(rels, range(n)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(real[i % len(real)], root / rel)
    noisy, clean = rng.integers(0, 14, n), rng.integers(0, 14, n)
    n_test = max(1, n // 100)
    train, test = range(n - n_test), range(n - n_test, n)
    both = [i for i in train if i % 25 == 0]
    (root / "noisy_label_kv.txt").write_text("".join(f"{rels[i]} {noisy[i]}\n" for i in train))
    (root / "clean_label_kv.txt").write_text("".join(f"{rels[i]} {clean[i]}\n" for i in [*both, *test]))
    (root / "noisy_train_key_list.txt").write_text("".join(f"{rels[i]}\n" for i in train))
    (root / "clean_test_key_list.txt").write_text("".join(f"{rels[i]}\n" for i in test))
    (root / "category_names_eng.txt").write_text("\n".join(NAMES) + "\n")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="tree sizes (images), comma-separated")
    p.add_argument("--real", type=int, default=50, help="distinct JPEGs repeated by hard links")
    p.add_argument("--work", default=None, help="folder for the trees (default: a temporary one, deleted)")
    p.add_argument("--out", default=None, help="append the result section to this markdown file")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        real = write_jpegs(Path(work) / "real", args.real, min_side=160, max_side=500)
        for n in (int(s) for s in args.sizes.split(",")):
            root = Path(work) / f"c{n}"
            make_tree(root, n, real)
            t0 = time.perf_counter()
            splits = load_data(root)
            t1 = time.perf_counter()
            fingerprint(splits)
            t2 = time.perf_counter()
            rows.append({"n": n, "train": len(splits.train), "load_s": t1 - t0, "fingerprint_s": t2 - t1,
                         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    lines = [f"## Clothing1M lists ({machine()})", "", "| images | train rows | load_data s | fingerprint s | "
             "peak RSS MB |", "|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['train']:,} | {r['load_s']:.2f} | {r['fingerprint_s']:.2f} | {r['peak_rss_mb']:.0f} |"
              for r in rows]
    publish("\n".join(lines) + "\n", args.out)
    return rows


if __name__ == "__main__":
    main()
