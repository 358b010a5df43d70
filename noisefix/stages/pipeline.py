"""Stages chained end to end: `noisefix demo` on digits and `noisefix clean`, the one-shot cleaning command."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from noisefix.config import ImageConfig, ProbeConfig, RelabelConfig, RetrainConfig, TrainConfig
from noisefix.data.folders import DataSplits
from noisefix.data.images import files_unchanged
from noisefix.io.atomic import check_writable
from noisefix.io.run_dir import RunDir
from noisefix.probes import screen_probes
from noisefix.stages.probe import ProbeOutcome, run_probe
from noisefix.stages.relabel import RelabelOutcome, run_relabel
from noisefix.stages.retrain import RetrainOutcome, run_retrain
from noisefix.stages.runs import open_run
from noisefix.stages.train import TrainOutcome, run_train
from noisefix.ui.reporter import Reporter, escape, or_null

DEMO_NOISE = 0.4


@dataclass
class PipelineOutcome:
    train: TrainOutcome
    probe: ProbeOutcome
    relabel: RelabelOutcome
    retrain: RetrainOutcome | None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase, and the total
    num_classes: int = 0                                      # K, for the health check


def run_pipeline(data: Path, run: Path, *, labels_file: Path | None, train_cfg: TrainConfig,
                 probe_cfg: ProbeConfig, relabel_cfg: RelabelConfig, retrain_cfg: RetrainConfig | None,
                 force: bool = False, reporter: Reporter | None = None, weights=None,
                 image: ImageConfig | None = None, classes_file: Path | None = None,
                 splits: DataSplits | None = None) -> PipelineOutcome:
    """train -> probe -> relabel -> (retrain) on one image folder, writing one run directory. `weights`,
    `image` and `classes_file` go to `run_train` (a pretrained start is checkpoint 0); `splits`, the folder as
    `load_data` already read it, too. The folder is read once: the later stages open the run with the data
    training read."""
    reporter = or_null(reporter)
    clock = _Clock()
    trained = clock("train", run_train, data, train_cfg, labels_file=labels_file, out=run, force=force,
                    reporter=reporter, weights=weights, image=image, classes_file=classes_file, data=splits)
    clock.move("train", "load", trained.load_seconds)  # reading and decoding the data is not training
    loaded = clock("load", open_run, run, reporter=reporter, data=trained.data)
    probed = clock("probe", run_probe, loaded, probe_cfg, force=True, reporter=reporter)
    relabeled = clock("relabel", run_relabel, loaded, relabel_cfg, force=True, reporter=reporter)
    retrained = (clock("retrain", run_retrain, loaded, retrain_cfg, force=True, reporter=reporter)
                 if retrain_cfg else None)
    clock.seconds["total"] = sum(clock.seconds.values())
    return PipelineOutcome(trained, probed, relabeled, retrained, seconds=clock.seconds,
                           num_classes=len(loaded.splits.train.classes))


class _Clock:
    """Calls a stage and adds its wall time to a phase name's."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, phase: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def move(self, source: str, phase: str, seconds: float) -> None:
        """Count `seconds` of `source`'s time under `phase` instead."""
        self.seconds[source] -= seconds
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


def run_demo(out: Path, *, force: bool = False, seed: int = 0, reporter: Reporter | None = None) -> PipelineOutcome:
    """Digits with 40 % symmetric noise: export, then `clean` with its defaults and `retrain` (the gain)."""
    from noisefix.data.builtin import export_dataset, load_builtin

    reporter = or_null(reporter)
    out = Path(out)
    check_writable(out, force=force, what="demo output", elsewhere="--out")
    data = out / "digits"
    export_dataset(load_builtin("digits"), data, corrupt=DEMO_NOISE, seed=seed, force=True)
    reporter.info(f"exported scikit-learn digits to {escape(str(data))} with {DEMO_NOISE:.0%} symmetric label noise "
                  f"(seed {seed})")
    return run_clean(data, out / "run", labels_file=data / "noisy_labels.csv", retrain=True, seed=seed, force=True,
                     reporter=reporter)


#: Checkpoints `clean` saves (those below --epochs); the untrained network (init) and the last epoch always.
#: Not epoch 1: on full MNIST at 60 % noise it was below epoch 2 for every layer and probe, and each probed
#: checkpoint costs a pass over the data and its probe fits (docs/cleaning.md, "clean's cost").
CLEAN_SCHEDULE = (2, 4, 8, 16, 32, 64)
#: `clean`'s training recipe for every model, chosen by measurement (docs/cleaning.md, "clean's defaults"):
#: the paper's SGD lr 1e-3 batch 32 learns far too slowly for a few epochs (MNIST, 60 % noise: 10.8 % test
#: accuracy after one epoch, 86.7 % with this recipe).
CLEAN_TRAINING = {"optimizer": "adam", "lr": 1e-3, "batch_size": 128}
CLEAN_EPOCHS = 2            # at least; small sets get more epochs, up to CLEAN_MAX_EPOCHS, for CLEAN_STEPS steps
CLEAN_MAX_EPOCHS = 32
#: optimizer steps `clean` aims for (60,000 images, batch 128: 2 epochs). Was 1,500 (4 epochs there). On the
#: full sets 2 epochs instead of 4 cut train + probe + relabel by a third for F1 -0.2 (MNIST 60 %), -0.4
#: (Fashion-MNIST 40 %), +0.1 (40 % pair-flip), -1.3 (MNIST 5 %), -0.6 (Fashion-MNIST pair-flip 10 %), still
#: above confident learning's on each; on 5,000-image sets 19 epochs instead of 32 gave the same or better F1
#: (docs/cleaning.md, "clean's cost").
CLEAN_STEPS = 750
CLEAN_PROBES = ("ncm", "masc")
CLEAN_SCREEN = 2            # MASC cross-fitted only on the 2 layers per checkpoint its quick fit ranks best
#: relabel from the mean of the 3 best probe rows. With the calibration on the clean test split, on the full
#: 60,000-image sets (same probe outputs; bench/bench_flagging.py, docs/cleaning.md), 3 rows against 1: F1 94.6
#: vs 92.8 (MNIST 5 %), 98.4 vs 97.1 (MNIST 60 %), 95.0 vs 94.9 (Fashion-MNIST 40 %), 97.2 vs 97.7
#: (Fashion-MNIST pair-flip 10 %); the noise estimate within 0.6 points of the truth at every setting (1 row:
#: within 1.6). (Under the EM-only calibration before it, 1 row was better at MNIST 60 %.)
CLEAN_ENSEMBLE = 3
SMALL_INPUT = 3 * 32 * 32   # `--model auto`: images of at most this many values get the small MLP, others resnet18
#: `--model auto` on Clothing1M as it ships (without --weights): torchvision's ImageNet ResNet-50 from the torch hub
#: cache, the backbone of every published Clothing1M result (docs/clothing1m.md)
CLOTHING1M_MODEL = ("resnet50", "DEFAULT")


def early_checkpoints(epochs: int) -> tuple[int, ...]:
    """The epochs of CLEAN_SCHEDULE below `epochs`: the early checkpoints `clean` probes, and those `train` keeps
    by default so that a memorizing run can be probed before it memorized (docs/cleaning.md, "every checkpoint
    probed": full MNIST at 5 % noise, F1 80.9 from the final model, 95.1 from the best early ones)."""
    return tuple(e for e in CLEAN_SCHEDULE if e < epochs)


def clean_train_config(model: str, *, epochs: int, seed: int, **overrides) -> TrainConfig:
    """`clean`'s recipe (CLEAN_TRAINING) for `model`, `epochs` epochs, checkpoints 2, 4, 8, ... below `epochs`;
    the non-None `overrides` (optimizer, lr, batch_size, device, on_bad_image, ...) replace its fields."""
    base = {**CLEAN_TRAINING, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(model=model, epochs=epochs, seed=seed, save_epochs=early_checkpoints(epochs), **base)


def clean_model(data: Path, train, model: str, weights=None) -> tuple[str, object]:
    """(model, weights): as given, or for "auto" without weights CLOTHING1M_MODEL on Clothing1M's folder, else
    the small MLP on images of at most SMALL_INPUT values and resnet18 otherwise, from scratch (`train`: the
    training split, whose headers give the image size)."""
    if model != "auto":
        return model, weights
    from noisefix.data.clothing1m import is_clothing1m
    from noisefix.data.images import infer_spec

    if weights is None and is_clothing1m(Path(data)):
        return CLOTHING1M_MODEL
    c, h, w = infer_spec(train, normalize=False).shape
    return ("mlp_small" if c * h * w <= SMALL_INPUT else "resnet18"), weights


def clean_epochs(n_images: int, batch_size: int) -> int:
    """Epochs for about CLEAN_STEPS optimizer steps on `n_images`, within [CLEAN_EPOCHS, CLEAN_MAX_EPOCHS]."""
    steps = max(1, math.ceil(n_images / batch_size))
    return int(min(CLEAN_MAX_EPOCHS, max(CLEAN_EPOCHS, math.ceil(CLEAN_STEPS / steps))))


def run_clean(data: Path, out: Path, *, model: str = "auto", labels_file: Path | None = None,
              epochs: int | None = None, probes: tuple[str, ...] = CLEAN_PROBES, screen: int = CLEAN_SCREEN,
              retrain: bool = False, seed: int = 0, force: bool = False, reporter: Reporter | None = None,
              weights=None, image: ImageConfig | None = None, classes_file: Path | None = None,
              review: int = 100, keep_checkpoints: bool = False, **train_overrides) -> PipelineOutcome:
    """The practitioner's one-shot cleaning: a short training run with early checkpoints (no memorization),
    every checkpoint x layer screened with NCM and the best layers also with MASC (the untrained network, a
    baseline for the health check, with NCM only), relabel from the rows with the best held-out agreement;
    then the health check and the time per phase in relabel/summary.json.

    `review`: images on relabel/review.html; unless `keep_checkpoints`, the checkpoints relabel did not use are
    deleted at the end (`drop_unused_checkpoints`). `train_overrides` go to the training config (e.g.
    optimizer, lr, batch_size, device, on_bad_image)."""
    reporter = or_null(reporter)
    splits, t0 = None, time.perf_counter()
    if model == "auto" or epochs is None:  # both read the training split: load it once, for every stage
        from noisefix.data.folders import load_data

        splits = load_data(data, labels_file, classes_file=classes_file)
        train = splits.train
        model, weights = clean_model(data, train, model, weights)
        if epochs is None:
            epochs = clean_epochs(len(train), train_overrides.get("batch_size") or CLEAN_TRAINING["batch_size"])
    read_seconds = time.perf_counter() - t0
    cheap = screen_probes(probes)[0] if screen else []
    screen = screen if cheap else 0  # --probes without ncm: nothing screens, every layer gets the probes
    probe_cfg = ProbeConfig(probes=probes, checkpoints=("all",), seed=seed, screen=screen,
                            init_probes=tuple(cheap) or None, device=train_overrides.get("device") or "auto")
    with files_unchanged():  # the stages decode the folder once and stat its files once
        outcome = run_pipeline(Path(data), Path(out), labels_file=labels_file,
                               train_cfg=clean_train_config(model, epochs=epochs, seed=seed, **train_overrides),
                               probe_cfg=probe_cfg, relabel_cfg=RelabelConfig(review=review, ensemble=CLEAN_ENSEMBLE),
                               retrain_cfg=RetrainConfig(seed=seed) if retrain else None, force=force,
                               reporter=reporter, weights=weights, image=image, classes_file=classes_file,
                               splits=splits)
    for phase in ("load", "total"):  # the data read above is part of the run's reading
        outcome.seconds[phase] = outcome.seconds.get(phase, 0.0) + read_seconds
    _record_health_and_times(outcome, reporter)
    if not keep_checkpoints:
        count, freed = drop_unused_checkpoints(outcome.train.run, outcome.relabel.summary["sources"])
        if count:
            reporter.info(f"deleted {count} checkpoint file(s) relabel did not use ({freed / 2**20:.0f} MiB; "
                          "--keep-checkpoints keeps them)")
    return outcome


def drop_unused_checkpoints(run: RunDir, sources: list[dict]) -> tuple[int, int]:
    """Delete the saved checkpoints none of relabel's `sources` came from, keeping the final weights and, for a
    pretrained start, epoch 0 (what `retrain` starts from); model.json then lists only the kept epochs.
    Returns the number of files deleted and the bytes freed."""
    from noisefix.io.atomic import read_json, write_json
    from noisefix.stages.runs import parse_checkpoint

    info = read_json(run.model_json)
    used = {parse_checkpoint(r["checkpoint"]) for r in sources}
    keep = {e for e in used if isinstance(e, int)} | ({0} if info.get("weights") is not None else set())
    doomed = [run.checkpoint(e) for e in info["checkpoints"] if e not in keep]
    doomed += [run.best_checkpoint] if "best" not in used else []
    doomed = [p for p in doomed if p.is_file()]
    info["checkpoints"] = [e for e in info["checkpoints"] if e in keep]
    write_json(run.model_json, info)  # first: model.json never lists a deleted file
    freed = 0
    for path in doomed:
        freed += path.stat().st_size
        path.unlink()
    return len(doomed), freed


def _record_health_and_times(outcome: PipelineOutcome, reporter: Reporter) -> None:
    """Warn about a run that did not learn (stages.health) and add `health` and `seconds` to relabel/summary.json."""
    from noisefix.io.atomic import read_json, write_json
    from noisefix.io.run_dir import RelabelDir
    from noisefix.stages.health import check_health

    run = outcome.train.run
    metrics = [json.loads(line) for line in run.metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    pretrained = read_json(run.model_json).get("weights") is not None
    warnings = check_health(metrics, outcome.probe.rows, outcome.probe.best, criterion=outcome.probe.criterion,
                            num_classes=outcome.num_classes, pretrained=pretrained)
    for w in warnings:
        reporter.warn(w)
    seconds = outcome.seconds
    files = RelabelDir(outcome.relabel.out)
    summary = read_json(files.summary)
    summary.update(health={"ok": not warnings, "warnings": warnings}, seconds=seconds)
    write_json(files.summary, summary)
    outcome.relabel.summary.update(health=summary["health"], seconds=seconds)
