"""`noisefix probe`: stream a run's activations once per layer group, cross-fit every probe, score layers.

For each checkpoint: the training images go through the model in eval mode; each requested layer's
activations feed per-class, per-fold statistics (probes/stats.py) and a float32 copy used for out-of-fold
predictions and refits, held in RAM or, when it does not fit the memory budget, written to an on-disk cache
of safetensors shards (probes/rows.py, ActivationCache). `scoring.plan.plan_layer` decides per layer, from the class
counts known before extraction: d x d second moments only when a probe is fitted from them (the one rule lives in
scoring/cross_fitting.py), activations in RAM or on disk, and the bytes each costs (docs/benchmarks.md, "Memory
model"); layers that do not fit together are processed in groups, one data pass per group. Every training
image is scored by probes fitted without its fold, the test split (clean) by probes fitted on all training
images. Outputs under RUN/probe/; the cache is deleted afterwards unless kept.

Under torchrun (nn/distributed.py) each rank extracts its shard of the train and test images, the statistics
are all-reduced, every rank fits the same probes from them and scores its own shard; the scores and model logits
are gathered to rank 0 in global order, and rank 0 alone writes. Probes that refit on the activations (logreg,
the MASC / VeLPIC Gram route) get that layer's activations gathered to rank 0 instead (stages/probe_shards.py).
One process: one shard, same code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from noisefix.config import ProbeConfig, dump_yaml
from noisefix.data.folders import LabeledImages
from noisefix.data.images import ImageSource
from noisefix.data.splits import make_folds
from noisefix.errors import ProbeError
from noisefix.io.atomic import check_outside, check_writable, staged_dir
from noisefix.io.run_dir import ProbeDir, RunDir
from noisefix.nn import distributed
from noisefix.nn.device import resolve_device, seed_everything
from noisefix.nn.extract import (
    INPUT,
    ActivationExtractor,
    LayerInfo,
    apply_pooling,
    forward_values,
    list_layers,
    resolve_layers,
)
from noisefix.probes import probe_class, screen_probes
from noisefix.probes.rows import ActivationCache, RowSource, TensorRows
from noisefix.probes.stats import ClassStats
from noisefix.scoring import screening
from noisefix.scoring.cross_fitting import ProbeScores
from noisefix.scoring.plan import LayerPlan, extraction_batch, group_layers, plan_layer
from noisefix.stages.probe_outputs import collect, pick, write_outputs
from noisefix.stages.probe_shards import Shards, cross_fit_shards, shard_split
from noisefix.stages.runs import (
    LoadedRun,
    expand_checkpoints,
    load_run_model,
    parse_checkpoint,
)
from noisefix.ui.reporter import Reporter, escape, or_null


@dataclass
class ProbeOutcome:
    out: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any]
    oracle: dict[str, Any] | None
    model: dict[str, dict[str, float | None]]
    criterion: str
    seconds: float


def _extract(model, extractor: ActivationExtractor, source: ImageSource | None, infos: list[LayerInfo], *,
             device: torch.device, batch_size: int, labels: np.ndarray | None = None,
             folds: np.ndarray | None = None, stats: dict[str, ClassStats] | None = None,
             logits_out: np.ndarray | None = None, caches: dict[str, Path] | None = None) -> dict[str, RowSource]:
    """One pass over `source` (None: no images): store activations per layer, update statistics, optionally keep
    model logits. `labels`, `folds` and `logits_out` are indexed like the source's images. Layers named in
    `caches` are written to an ActivationCache in that directory, the others kept in RAM."""
    n = len(source) if source is not None else 0
    caches = caches or {}
    store: dict[str, Any] = {i.name: ActivationCache(caches[i.name], i.dim, n) if i.name in caches
                             else torch.empty((n, i.dim), dtype=torch.float32) for i in infos}
    for x, idx in (source.batches(batch_size) if source is not None else ()):
        xb = source.to_input(x.to(device))
        acts, logits = extractor.with_logits(xb)
        fit = None if folds is None else torch.from_numpy(folds[idx.numpy()] >= 0)  # held-out images: fold -1
        for info in infos:
            a = acts[info.name]
            if stats is not None and bool(fit.any()):
                sel = idx[fit].numpy()
                stats[info.name].update(a[fit.to(a.device)], torch.as_tensor(labels[sel]).to(a.device),
                                        torch.as_tensor(folds[sel]).to(a.device))
            if info.name in caches:
                store[info.name].append(a, idx.numpy(), None if labels is None else labels[idx.numpy()])
            else:
                store[info.name][idx] = a.float().cpu()
        if logits_out is not None:
            if logits is None:  # the graph's last node is not the model's (B, K) output
                with torch.no_grad():
                    logits = model(xb).float()
            logits_out[idx.numpy()] = logits.cpu().numpy()
    return {name: X.close() if isinstance(X, ActivationCache) else TensorRows(X, what=f"layer {name!r} activations")
            for name, X in store.items()}


def _score_group(group: list[LayerInfo], cfg: ProbeConfig, *, stats: dict[str, ClassStats],
                 X: dict[str, RowSource], Xt: dict[str, RowSource], train: LabeledImages, folds: np.ndarray,
                 shards: Shards, label: str, reporter: Reporter, t0: float) -> list[ProbeScores]:
    """All-reduce the statistics of one layer group, then cross-fit every probe on each of its layers."""
    results: list[ProbeScores] = []
    for s in stats.values():
        s.all_reduce()  # sum over ranks: every rank now holds the statistics of all images
    reporter.detail(f"{label}: extracted {', '.join(i.name for i in group)} in {time.perf_counter() - t0:.1f}s")
    for info in group:
        zeros = int(stats[info.name].zero_counts.sum())
        if zeros:
            reporter.warn(f"{info.name}: {zeros} all-zero activation vectors (dead units); "
                          "MASC and NCM score them 0 for every class")
    cheap, costly = screen_probes(cfg.probes) if cfg.screen else ([], list(cfg.probes))
    todo = [(info, p) for info in group for p in cheap]
    with reporter.progress(f"{label}: probes", len(group) * len(cfg.probes)) as advance:
        def fit(pairs):
            for info, probe in pairs:
                scores = cross_fit_shards(probe, stats=stats[info.name], X=X[info.name],
                                           X_test=Xt.get(info.name), labels=train.targets, folds=folds,
                                           shards=shards, cfg=cfg, layer=info.name)
                if scores is not None:
                    results.append(scores)
                advance(1, layer=info.name, probe=probe)
        fit(todo)
        K = len(train.classes)
        if cheap:  # screening: the costly probes only on the best layers where they are informative
            useful = [i for i in group if any(probe_class(p).informative(i.dim, K) for p in costly)]
            if (folds < 0).any() and len(shards.train) == 1:  # rank by the costly probe's own quick fit
                keep = screening.by_quick_fit(useful, costly, cfg.screen, X=X, labels=train.targets, folds=folds,
                                              num_classes=K, variance=cfg.variance, seed=cfg.seed)
            else:
                keep = screening.by_cheap_scores(results, useful, cfg.screen, labels=train.targets, folds=folds)
            pairs = [(i, p) for i in keep for p in costly if probe_class(p).informative(i.dim, K)]
        else:
            pairs = [(i, p) for i in group for p in costly]
        fit(pairs)
        advance(len(group) * len(cfg.probes) - len(todo) - len(pairs))
    return results


def _plan_layers(model: torch.nn.Module, loaded: LoadedRun, cfg: ProbeConfig, *, train: LabeledImages,
                 folds: np.ndarray, shards: Shards, reporter: Reporter,
                 skip_input: bool = False) -> tuple[list[LayerInfo], dict[str, int | None], list[LayerPlan]]:
    """The requested layers (pooled as `cfg.pool` says), the pool size of each, and each one's memory plan."""
    names = resolve_layers(model, cfg.layers)
    if skip_input and len(names) > 1:
        names = [n for n in names if n != INPUT]  # the raw input is the same at every checkpoint: scored once
    infos, pools = apply_pooling(list_layers(model, tuple(loaded.model_info["in_shape"]), names), cfg.pool)
    pooled = [name for name, s in pools.items() if s]
    if pooled:
        reporter.info(f"pooling {', '.join(f'{n} to {pools[n]}x{pools[n]}' for n in pooled)} (--pool)")
    counts = np.bincount(train.targets[folds >= 0], minlength=len(train.classes))  # what the probes are fitted on
    plans = [plan_layer(i, probes=cfg.probes, class_counts=counts, folds=cfg.folds, n_train=max(map(len, shards.train)),
                        n_test=max(map(len, shards.test)), cache=cfg.cache) for i in infos]
    on_disk = [p.info.name for p in plans if p.on_disk]
    if on_disk and distributed.world_size() > 1:
        raise ProbeError(f"layers {', '.join(on_disk)} need the on-disk activation cache, which runs in one process "
                         "only; probe without torchrun, or pool them (--pool avg:S)")
    return infos, pools, plans


def _model_accuracy(train_logits: np.ndarray, test_logits: np.ndarray | None, *, train: LabeledImages,
                    test: LabeledImages | None, folds: np.ndarray) -> dict[str, float | None]:
    """The model's own agreement with the given labels (trained-on and held-out images), clean and test accuracy."""
    pred, fit_mask = train_logits.argmax(1), folds >= 0
    return {
        "agreement": float((pred == train.targets)[fit_mask].mean()),
        "holdout_agreement": float((pred == train.targets)[~fit_mask].mean()) if (~fit_mask).any() else None,
        "clean_acc": (float((pred == train.clean_targets)[fit_mask].mean())
                      if train.clean_targets is not None else None),
        "test_acc": float((test_logits.argmax(1) == test.targets).mean()) if test is not None else None,
    }


def probe_checkpoint(loaded: LoadedRun, checkpoint: str, cfg: ProbeConfig, *, train: LabeledImages,
                     folds: np.ndarray, train_source: ImageSource | None, test_source: ImageSource | None,
                     reporter: Reporter, shards: Shards | None = None, cache_root: Path | None = None,
                     keep_cache: bool = False,
                     skip_input: bool = False) -> tuple[list[ProbeScores], list[LayerInfo], dict[str, Any] | None, str]:
    """Score every requested layer x probe of one checkpoint; returns the scores, layers and model accuracies.

    `train_source` / `test_source` serve this rank's shard of the images (`shards`; default: one process, all
    images). On ranks other than 0 the scores are [] and the accuracies None. Layers planned on disk
    (`cfg.cache`, see `plan_layer`) cache their activations under `cache_root` (default RUN/probe-cache/...),
    deleted after their group is scored unless `keep_cache`. `skip_input`: leave out the raw input layer
    (it is the same at every checkpoint; `run_probe` scores it at the first one only).
    """
    device = distributed.setup(resolve_device(cfg.device))
    test = loaded.splits.test
    if shards is None:
        shards = Shards.deal(folds, len(test) if test is not None else 0, 1)
    model, label = load_run_model(loaded, checkpoint)
    model.to(device)
    infos, pools, plans = _plan_layers(model, loaded, cfg, train=train, folds=folds, shards=shards, reporter=reporter,
                                       skip_input=skip_input)
    if any(p.on_disk for p in plans):
        cache_root = cache_root or loaded.run.probe_cache / f"probe-{os.getpid()}"
        reporter.info(f"caching activations of {', '.join(p.info.name for p in plans if p.on_disk)} on disk under "
                      f"{escape(str(cache_root))} ({sum(p.disk_bytes for p in plans) / 2**30:.2f} GiB)")
    reporter.detail(f"routes: {', '.join(f'{p.info.name}: {p.route}' for p in plans)}")
    K, mine = len(train.classes), shards.train[distributed.rank()]
    forward = forward_values(model, tuple(loaded.model_info["in_shape"])) if cfg.batch_size is None else 0
    train_logits = np.zeros((len(mine), K), dtype=np.float32)
    test_logits = np.zeros((len(shards.test[distributed.rank()]), K), dtype=np.float32) if test is not None else None
    results: list[ProbeScores] = []
    for g, plan_group in enumerate(group_layers(plans)):
        group = [p.info for p in plan_group]
        extractor = ActivationExtractor(model, [i.name for i in group], pools=pools, device=device, logits=g == 0)
        stats = {p.info.name: ClassStats(p.info.dim, K, cfg.folds, device=device, name=p.info.name,
                                         second_moments=p.second_moments) for p in plan_group}
        where = {p.info.name: cache_root / f"{checkpoint}-{p.info.name}" for p in plan_group if p.on_disk}
        t0, batch = time.perf_counter(), extraction_batch(group, cfg.batch_size, forward_values=forward)
        try:
            X = _extract(model, extractor, train_source, group, device=device, batch_size=batch,
                         labels=train.targets[mine], folds=folds[mine], stats=stats,
                         logits_out=train_logits if g == 0 else None, caches={n: w / "train" for n, w in where.items()})
            Xt = (_extract(model, extractor, test_source, group, device=device, batch_size=batch,
                           logits_out=test_logits if g == 0 else None, caches={n: w / "test" for n, w in where.items()})
                  if test is not None else {})
            results += _score_group(group, cfg, stats=stats, X=X, Xt=Xt, train=train, folds=folds, shards=shards,
                                    label=label, reporter=reporter, t0=t0)
        finally:
            if not keep_cache:
                for w in where.values():
                    shutil.rmtree(w, ignore_errors=True)
        del X, Xt, stats
    train_logits = distributed.gather_rows(train_logits, shards.train)
    test_logits = distributed.gather_rows(test_logits, shards.test) if test is not None else None
    if train_logits is None:  # not rank 0
        return results, infos, None, label
    return results, infos, _model_accuracy(train_logits, test_logits, train=train, test=test, folds=folds), label


@contextlib.contextmanager
def _activation_cache(run: RunDir, subdir: str, cache_dir: Path | None, *, keep: bool,
                      reporter: Reporter) -> Iterator[Path]:
    """A folder of this probe's own for on-disk activations (made only when a layer needs it), deleted when the
    block ends, failed or not, unless `keep`; its parent too when this probe made it and left it empty."""
    parent = Path(cache_dir) if cache_dir is not None else run.probe_cache
    root = parent / f"{subdir}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    made_parent = not parent.exists()
    try:
        yield root
    finally:
        if keep and root.exists():
            reporter.info(f"activation cache kept in {escape(str(root))} (delete it when done)")
        elif not keep:
            shutil.rmtree(root, ignore_errors=True)
            if made_parent and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def _fit_labels(train: LabeledImages, fit_on: str) -> LabeledImages:
    """The training split with the labels the probes are fitted on: the given ones, or (`clean`) the clean ones."""
    if fit_on != "clean":
        return train
    if train.clean_targets is None:
        raise ProbeError("probing with clean-label subspaces needs a labels file with a clean_label column")
    return dataclasses.replace(train, targets=train.clean_targets)


def _checkpoint_config(cfg: ProbeConfig, checkpoint: str, model_info: dict) -> ProbeConfig:
    """`cfg` for one checkpoint: at the untrained network (init of a run without --weights) only
    `cfg.init_probes`, when set, with no screening."""
    untrained = parse_checkpoint(checkpoint) == 0 and model_info.get("weights") is None
    if cfg.init_probes is None or not untrained:
        return cfg
    return dataclasses.replace(cfg, probes=cfg.init_probes, screen=0)


def run_probe(loaded: LoadedRun, cfg: ProbeConfig, *, force: bool = False, reporter: Reporter | None = None,
              fit_on: str = "given", subdir: str = "probe", cache: str | None = None, cache_dir: Path | None = None,
              keep_cache: bool = False) -> ProbeOutcome:
    """Probe the run's checkpoints; write RUN/<subdir>/ scores.csv, scores.json, oof.safetensors, layers.png.

    `fit_on="clean"` fits the probes on the clean labels instead of the given ones (the paper's true-label
    subspaces; research only, needs a clean_label column); agreement is then measured against those labels.
    `cfg.cache` (auto, always, never; see `plan_layer`; `cache`, when given, replaces it) puts layer
    activations that do not fit the memory budget in an on-disk cache of safetensors shards under `cache_dir`
    (default RUN/probe-cache), in a folder of its own that is deleted when the probe ends, failed or not,
    unless `keep_cache`.
    """
    cfg = cfg if cache is None else dataclasses.replace(cfg, cache=cache)
    reporter = or_null(reporter if distributed.is_main() else None)
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    distributed.setup(resolve_device(cfg.device))
    run = loaded.run
    out_dir = run.path / subdir
    check_writable(out_dir, force=force, what="probe results")
    if cache_dir is not None:
        check_outside(cache_dir, loaded.splits.train.root, what="the activation cache (--cache-dir)")
    train, test, holdout = _fit_labels(loaded.splits.train, fit_on), loaded.splits.test, loaded.holdout
    folds = np.full(len(train), -1, dtype=np.int64)
    folds[~holdout] = make_folds(train.targets[~holdout], cfg.folds, seed=cfg.seed)
    shards = Shards.deal(folds, len(test) if test is not None else 0, distributed.world_size())
    me = distributed.rank()
    spec, workers = loaded.spec, cfg.workers
    train_source = ImageSource(shard_split(train, shards.train[me]), spec, workers=workers)
    test_source = (ImageSource(shard_split(test, shards.test[me]), spec, workers=workers)
                   if test is not None and len(shards.test[me]) else None)
    checkpoints = expand_checkpoints(cfg.checkpoints, loaded.model_info)
    with _activation_cache(run, subdir, cache_dir, keep=keep_cache, reporter=reporter) as cache_root:
        probed = [(checkpoint, probe_checkpoint(
            loaded, checkpoint, _checkpoint_config(cfg, checkpoint, loaded.model_info), train=train, folds=folds,
            train_source=train_source, test_source=test_source, reporter=reporter, shards=shards,
            cache_root=cache_root, keep_cache=keep_cache, skip_input=i > 0))
            for i, checkpoint in enumerate(checkpoints)]
    got = collect(probed, train=train, test=test, folds=folds)
    if not distributed.is_main():
        return distributed.broadcast_object(None)  # rank 0's outcome, once its files are in place
    criterion, best, oracle, oracle_metric = pick(got.rows, holdout, reporter,
                                                   trained=loaded.model_info.get("trained", True))
    summary = {
        "run": str(run.path), "fit_on": fit_on, "config": dump_yaml({"probe": cfg}), "folds": cfg.folds,
        "variance": cfg.variance, "rows": got.rows, "criterion": criterion, "best": best, "oracle": oracle,
        "oracle_metric": oracle_metric, "model": got.model, "layers": got.layers, "n_components": got.n_components,
        "classes": train.classes,
    }
    with staged_dir(out_dir, force=force, what="probe results") as tmp:
        write_outputs(ProbeDir(tmp), got, summary, model_info=loaded.model_info, run_name=run.path.name)
    return distributed.broadcast_object(ProbeOutcome(
        out=out_dir, rows=got.rows, best=best, oracle=oracle, model=got.model, criterion=criterion,
        seconds=time.perf_counter() - t0))
