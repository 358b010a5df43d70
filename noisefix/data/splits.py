"""Stratified, seeded splits of N labels (one implementation each): draws of n indices, K-fold ids for
cross-fitting, and the hold-out mask of images the network is not trained on."""

from __future__ import annotations

import numpy as np

from noisefix.errors import ConfigError


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted int64 (n,) indices drawn without replacement, each class in proportion to its count."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n / len(labels))
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(take - quota, kind="stable")[: n - take.sum()]] += 1  # largest remainders first
    picks = [rng.choice(np.flatnonzero(labels == c), size=t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def make_folds(labels, num_folds: int, *, seed: int) -> np.ndarray:
    """Stratified fold ids (N,) int64 in [0, num_folds): each class is shuffled and dealt out round-robin.

    The deal continues across classes, so fold sizes differ by at most one overall and within each class.
    """
    labels = np.asarray(labels)
    if not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
        raise ConfigError(f"folds must be an integer >= 2 for cross-fitting, got {num_folds!r}")
    if num_folds > len(labels):
        raise ConfigError(f"folds ({num_folds}) cannot exceed the number of images ({len(labels)})")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (offset + np.arange(len(idx))) % num_folds
        offset += len(idx)
    return folds


def stratified_holdout(labels, fraction: float, *, seed: int) -> np.ndarray:
    """bool (N,) mask of a stratified, seeded `fraction` of the samples (at least one per class with >= 2)."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng(seed)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        take = int(round(fraction * len(idx))) if len(idx) >= 2 else 0
        mask[idx[: max(take, 1 if len(idx) >= 2 else 0)]] = True
    return mask
