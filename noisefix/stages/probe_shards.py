"""How `probe` splits its work over torchrun ranks: which images each rank extracts (`Shards`), that rank's
part of a split (`shard_split`), and the cross-fit of one layer x probe from every rank's shard
(`cross_fit_shards`). One process: one shard holding everything, same code (nn/distributed.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from noisefix.config import ProbeConfig
from noisefix.data.folders import LabeledImages
from noisefix.errors import ProbeError
from noisefix.nn import distributed
from noisefix.probes.rows import RowSource, TensorRows
from noisefix.probes.stats import ClassStats
from noisefix.scoring.cross_fitting import ProbeScores, cross_fit, refits_on_activations


@dataclass
class Shards:
    """Which images each rank extracts: global indices, ascending, partitioning the train / test split.

    `every_fold`: every rank's training shard holds images of every fold, so a moment probe (fitted from the
    all-reduced statistics) can score a shard on its own; otherwise all probes work on gathered activations.
    """

    train: list[np.ndarray]
    test: list[np.ndarray]
    every_fold: bool

    @classmethod
    def deal(cls, folds: np.ndarray, n_test: int, world: int) -> "Shards":
        """Deal the training images fold by fold (held-out ones first) over `world` ranks, the test images in
        stride; one rank gets everything in order."""
        order = np.argsort(folds, kind="stable")
        train = [np.sort(order[distributed.shard(len(order), of_rank=r, world=world)]) for r in range(world)]
        if min(len(s) for s in train) == 0:
            raise ProbeError(f"{len(folds)} training images cannot be split over {world} processes; use fewer")
        test = [distributed.shard(n_test, of_rank=r, world=world) for r in range(world)]
        num_folds = int(folds.max()) + 1
        every_fold = all(np.isin(np.arange(num_folds), folds[s]).all() for s in train)
        return cls(train=train, test=test, every_fold=every_fold)


def shard_split(split: LabeledImages, idx: np.ndarray) -> LabeledImages:
    """The images `idx` of `split` (the split itself when idx is all of it, in order)."""
    if np.array_equal(idx, np.arange(len(split))):
        return split
    return dataclasses.replace(split, paths=[split.paths[i] for i in idx], targets=split.targets[idx],
                               clean_targets=None if split.clean_targets is None else split.clean_targets[idx])


def cross_fit_shards(probe: str, *, stats: ClassStats, X: RowSource, X_test: RowSource | None,
                      labels: np.ndarray, folds: np.ndarray, shards: Shards, cfg: ProbeConfig,
                      layer: str) -> ProbeScores | None:
    """`cross_fit` for this rank's activations X (n_r, d) of images shards.train[rank] (X_test likewise); the
    scores in global order on rank 0, None on the other ranks. `labels`, `folds`: global (N,), fold -1 = held out.

    Moment probes score each shard from the all-reduced statistics; the others (`scoring.refits_on_activations`,
    and every probe when a shard lacks a fold) run on rank 0 on the layer's activations gathered there: N x d
    float32 more on rank 0 (activations in RAM only: the disk cache is single-process).
    """
    several = distributed.world_size() > 1
    refit = refits_on_activations(probe, stats.counts.sum(0).cpu().numpy(), X.dim)
    gather = several and (not shards.every_fold or refit)
    rows = shards.train[distributed.rank()]
    if gather:
        Xg = distributed.gather_rows(X.X, shards.train)
        Xt = None if X_test is None else distributed.gather_rows(X_test.X, shards.test)
        if Xg is None:
            return None
        X, X_test = TensorRows(Xg), None if Xt is None else TensorRows(Xt)
        rows = np.arange(len(labels))
    f = folds[rows]
    fit, held = np.flatnonzero(f >= 0), np.flatnonzero(f < 0)
    scores = cross_fit(probe, stats=stats, X=X.subset(fit), labels=labels[rows][fit], folds=f[fit],
                       X_test=X_test, X_holdout=X.subset(held) if (folds < 0).any() else None, variance=cfg.variance,
                       seed=cfg.seed, layer=layer)
    if not several or gather:
        return scores
    local = np.zeros((len(rows), scores.oof_scores.shape[1]), dtype=np.float32)  # (n_r, K): oof and held-out rows
    local[fit] = scores.oof_scores
    if scores.holdout_scores is not None:
        local[held] = scores.holdout_scores
    every = distributed.gather_rows(local, shards.train)
    test = None if scores.test_scores is None else distributed.gather_rows(scores.test_scores, shards.test)
    if every is None:
        return None
    return dataclasses.replace(scores, oof_scores=every[folds >= 0], test_scores=test,
                               holdout_scores=every[folds < 0] if scores.holdout_scores is not None else None)
