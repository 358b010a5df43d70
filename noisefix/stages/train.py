"""`noisefix train`: fit a model on a labeled image folder until it memorizes the labels; write a run directory.

Like every stage function (run_train, run_probe, run_relabel, run_retrain) it takes dataclass configs and
paths, writes its outputs atomically into the run directory, reports through a `ui.reporter.Reporter`, and
returns a small result the CLI summarizes. No typer here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from noisefix.config import ImageConfig, TrainConfig, dump_yaml
from noisefix.data.folders import DataSplits, drop_paths, fingerprint, load_data
from noisefix.data.images import ImageSource, check_skip_fraction, scan_images
from noisefix.data.transforms import ImageSpec
from noisefix.data.splits import stratified_holdout
from noisefix.errors import ConfigError, DataError
from noisefix.io.atomic import (
    append_jsonl,
    check_writable,
    save_tensors,
    staged_dir,
    write_csv,
    write_json,
    write_text,
)
from noisefix.io.run_dir import RUNS_DIR, RunDir, file_sha256, make_manifest
from noisefix.nn import distributed
from noisefix.nn.device import seed_everything
from noisefix.nn.models import build_model
from noisefix.nn.training import EpochResult, EvalSet, train_model
from noisefix.nn.weights import spec_metadata
from noisefix.stages.inputs import image_spec_for
from noisefix.ui.reporter import Reporter, or_null


@dataclass
class TrainOutcome:
    run: RunDir
    epochs: int
    train_acc: float
    test_acc: float | None
    best_epoch: int | None
    best_test_acc: float | None
    seconds: float                       # training (the epochs, their evaluation and the saved checkpoints)
    load_seconds: float = 0.0            # reading the labels, checking and decoding the images before training
    data: DataSplits | None = None       # the data as trained on, for `open_run` in this process (one process only)


def default_run_path(data_root: Path, model: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return RUNS_DIR / f"{Path(data_root).resolve().name}-{model}-{stamp}"


def write_run_labels(path: Path, splits: DataSplits, holdout: np.ndarray) -> None:
    """labels.csv: the given labels (class names), `split` = train | holdout (never trained on), clean labels
    when known."""
    train = splits.train
    header = ["path", "label", "split"] + (["clean_label"] if train.clean_targets is not None else [])
    rows = []
    for i, p in enumerate(train.paths):
        row = [p, train.classes[train.targets[i]], "holdout" if holdout[i] else "train"]
        if train.clean_targets is not None:
            row.append(train.classes[train.clean_targets[i]])
        rows.append(row)
    write_csv(path, header, rows)


def check_images(splits: DataSplits, on_bad_image: str, reporter: Reporter) -> tuple[DataSplits, list[tuple[str, str]]]:
    """Decode every image once. `fail`: a DataError naming the bad files; `skip`: drop them (and say so).

    `on_bad_image` is validated by TrainConfig; anything but "skip" fails."""
    bad = scan_images(splits.train) + (scan_images(splits.test) if splits.test is not None else [])
    if not bad:
        return splits, []
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    if on_bad_image != "skip":
        raise DataError(f"{len(bad)} bad image(s): {shown}; fix or remove them, or pass --on-bad-image skip")
    check_skip_fraction(len(bad), len(splits.train) + (len(splits.test) if splits.test is not None else 0))
    reporter.warn(f"skipping {len(bad)} bad image(s): {shown} (listed in the run's skipped_images.csv)")
    return apply_skips(splits, {p for p, _ in bad}), bad


def apply_skips(splits: DataSplits, paths: set[str]) -> DataSplits:
    test = drop_paths(splits.test, paths) if splits.test is not None else None
    return DataSplits(train=drop_paths(splits.train, paths), test=test, labels_format=splits.labels_format)


@dataclass
class BestEpochs:
    """The best epochs seen while training: by `by` (held-out agreement, a label-only choice; "test" when
    nothing is held out, an oracle), and by test accuracy (the oracle early stop, reported as a reference)."""

    by: str                              # "holdout" or "test": the eval set that picks the best checkpoint
    epoch: int | None = None             # best epoch by `by`
    score: float = -1.0                  # its accuracy on `by`
    test_acc: float | None = None        # its test accuracy (None without a test split)
    oracle_epoch: int | None = None      # epoch of the highest test accuracy
    oracle_test_acc: float | None = None  # that accuracy

    def update(self, r: EpochResult) -> bool:
        """Take in one epoch; True when it is the new best by `by` (ties keep the earlier epoch)."""
        test = r.eval_acc.get("test")
        if test is not None and (self.oracle_test_acc is None or test > self.oracle_test_acc):
            self.oracle_epoch, self.oracle_test_acc = r.epoch, test
        score = r.eval_acc.get(self.by)
        if score is None or score <= self.score:
            return False
        self.epoch, self.score, self.test_acc = r.epoch, score, test
        return True


@dataclass
class _Recorder:
    """Writes what training produces into the staged run directory: saved epochs, the epoch log, the best
    weights; and moves the progress bar."""

    run: RunDir
    model: torch.nn.Module
    best: BestEpochs
    advance: Callable[..., None]
    saved: list[int] = field(default_factory=list)

    def save(self, epoch: int, m: torch.nn.Module) -> None:
        save_tensors(self.run.checkpoint(epoch), m.state_dict(), {"epoch": str(epoch)})
        self.saved.append(epoch)

    def on_epoch(self, r: EpochResult) -> None:
        append_jsonl(self.run.metrics, r.as_dict())
        if self.best.update(r):
            save_tensors(self.run.best_checkpoint, self.model.state_dict(), {"epoch": str(r.epoch)})
        fields = {"loss": r.loss, "train": r.train_acc}
        if r.train_clean_acc is not None:
            fields["train(clean)"] = r.train_clean_acc
        fields.update(r.eval_acc)
        self.advance(1, **fields)


def check_out(out: Path, data_root: Path, *, force: bool) -> None:
    """The run directory must be outside the data folder (never written into) and free unless `force`."""
    root, target = Path(data_root).resolve(), out.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise ConfigError(f"the run directory {out} would be inside (or contain) the data folder {data_root}; "
                          "noisefix never writes into your data: pass --out elsewhere or run from another folder")
    check_writable(out, force=force, what="run directory", elsewhere="--out")


def _eval_sets(source: ImageSource, splits: DataSplits, holdout: np.ndarray) -> dict[str, EvalSet]:
    """Scored after each epoch: the held-out training images (given labels) and the test split (read under the
    training images' spec)."""
    eval_sets = {}
    if holdout.any():
        eval_sets["holdout"] = EvalSet(source, splits.train.targets, indices=np.flatnonzero(holdout))
    if splits.test is not None:
        test = ImageSource(splits.test, source.spec, workers=source.workers)
        eval_sets["test"] = EvalSet(test, splits.test.targets)
    return eval_sets


def load_checked(data_root: Path, labels_file: Path | None, classes_file: Path | None, on_bad_image: str,
                 reporter: Reporter, *, defer_check: bool = False,
                 data: DataSplits | None = None) -> tuple[DataSplits, str, list[tuple[str, str]]]:
    """The data (with its warnings reported), its fingerprint before skips, and the skipped images.
    `defer_check` (only where bad images fail): leave the image check to `decoded_sources`. `data`: the
    folder as `load_data` already read it with these labels and classes files (not read again)."""
    splits = data if data is not None else load_data(Path(data_root), labels_file, classes_file=classes_file)
    for message in splits.warnings:
        reporter.warn(message)
    data_fingerprint = fingerprint(splits)
    if defer_check and on_bad_image != "skip":
        return splits, data_fingerprint, []
    splits, skipped = check_images(splits, on_bad_image, reporter)
    return splits, data_fingerprint, skipped


def decoded_sources(splits: DataSplits, spec: ImageSpec, holdout: np.ndarray, *, workers: int | None,
                    checked: bool, reporter: Reporter) -> tuple[ImageSource, dict[str, EvalSet]]:
    """The training source and the eval sets. Unless the images were `checked`, decoding them into RAM is
    the check (a full decode less: 19 s of 60,000 MNIST files): a bad image there, or a split too large to decode
    up front, runs `check_images`, which names every bad file."""
    try:
        source = ImageSource(splits.train, spec, workers=workers)
        eval_sets = _eval_sets(source, splits, holdout)
    except DataError:
        if not checked:
            check_images(splits, "fail", reporter)  # raises, naming every bad image
        raise
    if not checked and not all(s.in_memory for s in [source] + [ev.source for ev in eval_sets.values()]):
        check_images(splits, "fail", reporter)
    return source, eval_sets


def image_fields(spec: ImageSpec, model: torch.nn.Module, weights, classes_file) -> dict:
    """model.json entries saying how to rebuild the network and feed it: the image spec, the variant, the
    weights it started from, the classes file."""
    if weights is not None and Path(weights).exists():
        weights = Path(weights).resolve()  # a file: where it is, wherever the run is opened from
    return {"image": spec.to_dict(), "variant": getattr(model, "variant", None),
            "weights": str(weights) if weights is not None else None,
            "classes_file": str(Path(classes_file).resolve()) if classes_file else None}


def _model_info(cfg: TrainConfig, in_shape: tuple[int, ...], classes: list[str], saved: list[int],
                last: EpochResult, holdout: np.ndarray, best: BestEpochs) -> dict:
    """model.json."""
    return {
        "arch": cfg.model, "in_shape": list(in_shape), "num_classes": len(classes),
        "classes": classes, "checkpoints": sorted(set(saved)), "final_epoch": last.epoch,
        "holdout": int(holdout.sum()),
        # "best" checkpoint: label-only early stopping on held-out agreement (else on the test set, an oracle)
        "best_by": best.by, "best_epoch": best.epoch, "best_test_acc": best.test_acc,
        # the oracle early stop (epoch of the highest test accuracy), reported only as a reference
        "oracle_epoch": best.oracle_epoch, "oracle_test_acc": best.oracle_test_acc,
        "final_train_acc": last.train_acc, "final_test_acc": last.eval_acc.get("test"),
    }


def run_train(data_root: Path, cfg: TrainConfig, *, labels_file: Path | None = None, out: Path | None = None,
              weights: str | Path | None = None, force: bool = False, reporter: Reporter | None = None,
              image: ImageConfig | None = None, classes_file: Path | None = None,
              data: DataSplits | None = None) -> TrainOutcome:
    """Train `cfg.model` on the image folder until it memorizes the given labels; write a run directory.

    `weights` (a torchvision weights name or a state-dict file) initializes the network: the pretrained one
    is checkpoint 0. `image` says how images become inputs (stored in model.json for the later stages).
    `data`: the folder as `load_data` already read it with these labels and classes files (`clean` reads it
    once for all its stages); the outcome's `data` hands it on to `open_run`.
    Under torchrun every rank trains (data-parallel, nn/training.py); rank 0 alone writes the run directory
    and every rank returns its outcome.
    """
    reporter = or_null(reporter if distributed.is_main() else None)
    t_load = time.perf_counter()
    image = image or ImageConfig()
    out = Path(out) if out else default_run_path(data_root, cfg.model)
    check_out(out, data_root, force=force)
    splits, data_fingerprint, skipped = load_checked(data_root, labels_file, classes_file, cfg.on_bad_image, reporter,
                                                     defer_check=True, data=data)
    train = splits.train
    spec = image_spec_for(train, cfg.model, weights, image)
    holdout = stratified_holdout(train.targets, cfg.holdout, seed=cfg.seed)
    source, eval_sets = decoded_sources(splits, spec, holdout, workers=image.workers,
                                        checked=cfg.on_bad_image == "skip", reporter=reporter)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, in_shape=source.shape, num_classes=len(train.classes), weights=weights)
    n_params = sum(p.numel() for p in model.parameters())
    reporter.info(f"training [bold]{cfg.model}[/] ({n_params:,} parameters) on {int((~holdout).sum())} images "
                  f"({int(holdout.sum())} held out for label-only model selection), "
                  f"{len(train.classes)} classes, input {source.shape} ({spec.normalization} normalization"
                  f"{f', from {weights}' if weights is not None else ''}); {cfg.optimizer} lr {cfg.lr:g}, "
                  f"batch {cfg.batch_size}, until train acc >= {cfg.target_acc:g} or {cfg.epochs} epochs")
    fit = partial(train_model, model, source, train.targets, cfg, indices=np.flatnonzero(~holdout),
                  clean_labels=train.clean_targets, eval_sets=eval_sets)
    t0 = time.perf_counter()
    load_seconds = t0 - t_load
    if not distributed.is_main():
        fit()
        return distributed.broadcast_object(None)  # rank 0's outcome, once the run directory is in place
    with staged_dir(out, force=force, what="run directory") as tmp:
        run = RunDir(tmp)
        manifest = make_manifest(
            argv=sys.argv, seed=cfg.seed, data_root=data_root, labels_file=labels_file,
            fingerprint=data_fingerprint, extra={"model": cfg.model, "stage": "train",
                                                 "classes_file": str(Path(classes_file).resolve()) if classes_file else None})
        write_json(run.manifest, manifest)
        if skipped:
            write_csv(run.skipped, ["path", "reason"], skipped)
        write_text(run.config, dump_yaml({"train": cfg, "image": image}))
        write_run_labels(run.labels, splits, holdout)
        best = BestEpochs(by="holdout" if holdout.any() else "test")
        with reporter.progress("train", cfg.epochs) as advance:
            recorder = _Recorder(run, model, best, advance)
            last = fit(on_epoch=recorder.on_epoch, save=recorder.save)[-1]
        save_tensors(run.weights, model.state_dict(), {"epoch": str(last.epoch), **spec_metadata(spec.to_dict()),
                                                       "run_id": manifest["run_id"]})
        write_json(run.model_json, {**_model_info(cfg, source.shape, train.classes, recorder.saved, last, holdout, best),
                                    **image_fields(spec, model, weights, classes_file),
                                    "run_id": manifest["run_id"], "labels_sha256": file_sha256(run.labels)})
    return distributed.broadcast_object(TrainOutcome(
        run=RunDir(out), epochs=last.epoch, train_acc=last.train_acc, test_acc=last.eval_acc.get("test"),
        best_epoch=best.epoch, best_test_acc=best.test_acc, seconds=time.perf_counter() - t0,
        load_seconds=load_seconds, data=splits if distributed.world_size() == 1 else None))
