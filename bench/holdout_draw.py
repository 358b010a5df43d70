"""Is the hold-out draw coupled to the label corruption? Both are seeded from the same integer in the
benchmarks (`export_dataset(seed=S)` corrupts, `clean --seed S` holds out), so this repeats both draws on a
built-in dataset's own labels, without images, and compares the hold-out's excess wrong fraction (held-out
minus all) with the same seed and with an unrelated one.

Usage (from the repository root; prints one line per setting, in percentage points):
    python bench/holdout_draw.py --dataset mnist --subset 5000 --rates 0.05,0.6 --seeds 30
"""

from __future__ import annotations

import argparse

import numpy as np


def excess(clean: np.ndarray, noisy: np.ndarray, paths: list[str], holdout: float, seed: int) -> float:
    """Held-out minus overall wrong fraction for the hold-out `clean` draws on the run's (path-sorted) labels."""
    from noisefix.data.splits import stratified_holdout

    order = np.asarray(sorted(range(len(paths)), key=paths.__getitem__))
    wrong = (noisy != clean)[order]
    mask = stratified_holdout(noisy[order], holdout, seed=seed)
    return float(wrong[mask].mean() - wrong.mean())


def main() -> None:
    from noisefix.data.builtin import load_builtin
    from noisefix.data.noise import corrupt_labels
    from noisefix.data.splits import stratified_indices

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--rates", default="0.05,0.6")
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=30)
    args = ap.parse_args()
    ds = load_builtin(args.dataset)
    for rate in map(float, args.rates.split(",")):
        same, other = [], []
        for s in range(args.seeds):
            train = stratified_indices(ds.y_train, args.subset, np.random.default_rng([s, 1]))  # as export_dataset
            clean = ds.y_train[train]
            noisy, _ = corrupt_labels(clean, num_classes=len(ds.classes), rate=rate, noise=args.noise, seed=s)
            width = max(5, len(str(len(ds.y_train) - 1)))
            paths = [f"train/{ds.classes[c]}/{i:0{width}d}.png" for c, i in zip(clean, train)]  # as exported
            same.append(excess(clean, noisy, paths, args.holdout, s))
            other.append(excess(clean, noisy, paths, args.holdout, s + 1000))
        se = np.sqrt(args.seeds)
        print(f"{args.dataset} {args.subset} {args.noise} p={rate}: hold-out excess, same seed "
              f"{100 * np.mean(same):+.2f} (se {100 * np.std(same) / se:.2f}), unrelated seed "
              f"{100 * np.mean(other):+.2f} (se {100 * np.std(other) / se:.2f}) points over {args.seeds} seeds")


if __name__ == "__main__":
    main()
