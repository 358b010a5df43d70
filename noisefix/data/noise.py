"""Synthetic label noise with known truth: arrays in, arrays out (numpy only, no I/O).

N is the number of samples and K the number of classes throughout. A noise model is a row-stochastic
K x K transition matrix T with ``T[i, j] = P(noisy = j | true = i)``; every corruption samples each label
independently from its row, so the returned mask says exactly which labels changed.

- symmetric (the paper's procedure): with probability p a label is replaced by a uniformly random class,
  the true one included, so the expected fraction actually changed is ``p * (K - 1) / K``.
- pair-flip: with probability p class k becomes class ``(k + 1) mod K``.
"""

from __future__ import annotations

import numpy as np

from noisefix.errors import ConfigError, DataError

NOISE_TYPES = ("symmetric", "pairflip")


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ConfigError(f"noise rate {rate} is outside [0, 1]; give a probability such as 0.4")
    return rate


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r} is invalid; label noise needs an integer >= 2")
    return int(num_classes)


def _check_labels(labels, num_classes: int) -> np.ndarray:
    """Return ``labels`` as int64 (N,), refusing non-integers and values outside [0, K)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {arr.shape}; pass one label per sample")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"labels have dtype {arr.dtype}; pass integer class indices in [0, {num_classes})")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise DataError(
            f"label {arr[bad][0]} is outside [0, {num_classes}); pass class indices below num_classes"
        )
    return arr


def _check_matrix(matrix) -> np.ndarray:
    """Return ``matrix`` as a float64 (K, K) row-stochastic matrix or raise ConfigError."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ConfigError(f"noise matrix has shape {m.shape}; it must be square K x K with K >= 2")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ConfigError("noise matrix has negative or non-finite entries; use probabilities in [0, 1]")
    sums = m.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        row = int(np.argmax(np.abs(sums - 1.0)))
        raise ConfigError(f"noise matrix row {row} sums to {sums[row]:.6g}; every row must sum to 1")
    return m


def symmetric_matrix(num_classes: int, rate: float) -> np.ndarray:
    """(K, K) matrix of the paper's noise: ``(1 - p) I + p / K``."""
    k, p = _check_num_classes(num_classes), _check_rate(rate)
    return (1.0 - p) * np.eye(k) + p / k


def pairflip_matrix(num_classes: int, rate: float) -> np.ndarray:
    """(K, K) matrix sending class k to ``(k + 1) mod K`` with probability p."""
    k, p = _check_num_classes(num_classes), _check_rate(rate)
    return (1.0 - p) * np.eye(k) + p * np.roll(np.eye(k), 1, axis=1)


_MATRICES = {"symmetric": symmetric_matrix, "pairflip": pairflip_matrix}


def corrupt_with_matrix(
    labels, matrix, *, seed: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw each noisy label from row ``labels[i]`` of a row-stochastic (K, K) matrix.

    Returns ``(noisy, changed)``: int64 (N,) noisy labels and a bool (N,) mask of ``noisy != labels``.
    The same integer seed always gives the same result.
    """
    m = _check_matrix(matrix)
    y = _check_labels(labels, m.shape[0])
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(m, axis=1)  # (K, K)
    u = rng.random(y.shape[0])  # (N,)
    noisy = np.empty_like(y)
    for k in range(m.shape[0]):  # one searchsorted per class keeps memory at O(N), not O(N K)
        rows = np.flatnonzero(y == k)
        noisy[rows] = np.searchsorted(cdf[k], u[rows] * cdf[k, -1], side="right")
    np.minimum(noisy, m.shape[0] - 1, out=noisy)  # guards u * total == total rounding
    return noisy, noisy != y


def corrupt_labels(
    labels,
    *,
    num_classes: int,
    rate: float,
    noise: str = "symmetric",
    seed: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt labels with symmetric (paper) or pair-flip noise of rate p; see the module docstring.

    Returns ``(noisy, changed)``: int64 (N,) noisy labels and the bool (N,) mask of changed labels.
    """
    if noise not in _MATRICES:
        raise ConfigError(f"unknown noise type {noise!r}; choose one of {', '.join(NOISE_TYPES)}")
    return corrupt_with_matrix(labels, _MATRICES[noise](num_classes, rate), seed=seed)
