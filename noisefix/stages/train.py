"""Stage functions behind the CLI: run_train, run_probe, run_relabel, run_retrain.

Each takes dataclass configs and paths, writes its outputs atomically into the run directory, reports
through a `Reporter`, and returns a small result the CLI summarizes. No typer here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from noisefix.config import TrainConfig, dump_yaml
from noisefix.data.folders import DataSplits, drop_paths, fingerprint, load_data
from noisefix.data.images import ImageSource, scan_images
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
from noisefix.io.run_dir import RUNS_DIR, RunDir, make_manifest
from noisefix.nn import distributed
from noisefix.nn.device import seed_everything
from noisefix.nn.models import build_model
from noisefix.nn.training import EpochResult, EvalSet, train_model
from noisefix.ui.reporter import NullReporter

SKIPPED = "skipped_images.csv"


@dataclass
class TrainOutcome:
    run: RunDir
    epochs: int
    train_acc: float
    test_acc: float | None
    best_epoch: int | None
    best_test_acc: float | None
    seconds: float


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


def check_images(splits: DataSplits, on_bad_image: str, reporter) -> tuple[DataSplits, list[tuple[str, str]]]:
    """Decode every image once. `fail`: a DataError naming the bad files; `skip`: drop them (and say so)."""
    if on_bad_image not in ("fail", "skip"):
        raise ConfigError(f"--on-bad-image must be fail or skip, got {on_bad_image!r}")
    bad = scan_images(splits.train) + (scan_images(splits.test) if splits.test is not None else [])
    if not bad:
        return splits, []
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    if on_bad_image == "fail":
        raise DataError(f"{len(bad)} bad image(s): {shown}; fix or remove them, or pass --on-bad-image skip")
    reporter.warn(f"skipping {len(bad)} bad image(s): {shown} (listed in the run's skipped_images.csv)")
    return apply_skips(splits, {p for p, _ in bad}), bad


def apply_skips(splits: DataSplits, paths: set[str]) -> DataSplits:
    test = drop_paths(splits.test, paths) if splits.test is not None else None
    return DataSplits(train=drop_paths(splits.train, paths), test=test, labels_format=splits.labels_format)


def run_train(data_root: Path, cfg: TrainConfig, *, labels_file: Path | None = None, out: Path | None = None,
              weights: Path | None = None, force: bool = False, on_bad_image: str = "fail",
              reporter=None) -> TrainOutcome:
    """Train `cfg.model` on the image folder until it memorizes the given labels; write a run directory.

    Under torchrun every rank trains (data-parallel, noisefix/train.py); rank 0 alone writes the run directory
    and every rank returns its outcome.
    """
    reporter = reporter if reporter is not None and distributed.is_main() else NullReporter()
    out = Path(out) if out else default_run_path(data_root, cfg.model)
    root, target = Path(data_root).resolve(), out.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise ConfigError(f"the run directory {out} would be inside (or contain) the data folder {data_root}; "
                          "noisefix never writes into your data: pass --out elsewhere or run from another folder")
    check_writable(out, force=force, what="run directory")
    splits = load_data(Path(data_root), labels_file)
    data_fingerprint = fingerprint(splits)
    splits, skipped = check_images(splits, on_bad_image, reporter)
    train = splits.train
    source = ImageSource(train)
    in_shape = source.shape
    seed_everything(cfg.seed)
    model = build_model(cfg.model, in_shape=in_shape, num_classes=len(train.classes), weights=weights)
    holdout = stratified_holdout(train.targets, cfg.holdout, seed=cfg.seed)
    eval_sets = {}
    if holdout.any():
        eval_sets["holdout"] = EvalSet(source, train.targets, indices=np.flatnonzero(holdout))
    if splits.test is not None:
        eval_sets["test"] = EvalSet(ImageSource(splits.test), splits.test.targets)
    n_params = sum(p.numel() for p in model.parameters())
    reporter.info(f"training [bold]{cfg.model}[/] ({n_params:,} parameters) on {int((~holdout).sum())} images "
                  f"({int(holdout.sum())} held out for label-only model selection), "
                  f"{len(train.classes)} classes, input {in_shape}; {cfg.optimizer} lr {cfg.lr:g}, "
                  f"batch {cfg.batch_size}, until train acc >= {cfg.target_acc:g} or {cfg.epochs} epochs")
    t0 = time.perf_counter()
    fit = partial(train_model, model, source, train.targets, cfg, indices=np.flatnonzero(~holdout),
                  clean_labels=train.clean_targets, eval_sets=eval_sets)
    if not distributed.is_main():
        fit()
        return distributed.broadcast_object(None)  # rank 0's outcome, once the run directory is in place
    with staged_dir(out, force=force, what="run directory") as tmp:
        run = RunDir(tmp)
        write_json(run.manifest, make_manifest(
            argv=sys.argv, seed=cfg.seed, data_root=data_root, labels_file=labels_file,
            fingerprint=data_fingerprint, extra={"model": cfg.model, "stage": "train"}))
        if skipped:
            write_csv(tmp / SKIPPED, ["path", "reason"], skipped)
        write_text(run.config, dump_yaml({"train": cfg}))
        write_run_labels(run.labels, splits, holdout)
        saved: list[int] = []
        best = {"epoch": None, "acc": -1.0, "by": "holdout" if holdout.any() else "test", "test_acc": None}
        oracle = {"epoch": None, "acc": -1.0}

        def save(epoch: int, m: torch.nn.Module) -> None:
            save_tensors(run.checkpoint(epoch), m.state_dict(), {"epoch": str(epoch)})
            saved.append(epoch)

        with reporter.progress("train", cfg.epochs) as advance:
            def on_epoch(r: EpochResult) -> None:
                append_jsonl(run.metrics, r.as_dict())
                test = r.eval_acc.get("test")
                if test is not None and test > oracle["acc"]:
                    oracle.update(epoch=r.epoch, acc=test)
                score = r.eval_acc.get(best["by"])
                if score is not None and score > best["acc"]:
                    best.update(epoch=r.epoch, acc=score, test_acc=test)
                    save_tensors(run.checkpoints / "best.safetensors", model.state_dict(),
                                           {"epoch": str(r.epoch)})
                fields = {"loss": r.loss, "train": r.train_acc}
                if r.train_clean_acc is not None:
                    fields["train(clean)"] = r.train_clean_acc
                fields.update(r.eval_acc)
                advance(1, **fields)

            history = fit(on_epoch=on_epoch, save=save)
        last = history[-1]
        save_tensors(run.weights, model.state_dict(), {"epoch": str(last.epoch)})
        write_json(run.model_json, {
            "arch": cfg.model, "in_shape": list(in_shape), "num_classes": len(train.classes),
            "classes": train.classes, "checkpoints": sorted(set(saved)), "final_epoch": last.epoch,
            "holdout": int(holdout.sum()),
            # "best" checkpoint: label-only early stopping on held-out agreement (else on the test set, an oracle)
            "best_by": best["by"], "best_epoch": best["epoch"], "best_test_acc": best["test_acc"] if
            best["by"] == "holdout" else (oracle["acc"] if oracle["epoch"] is not None else None),
            # the oracle early stop (epoch of the highest test accuracy), reported only as a reference
            "oracle_epoch": oracle["epoch"], "oracle_test_acc": oracle["acc"] if oracle["epoch"] is not None else None,
            "final_train_acc": last.train_acc, "final_test_acc": last.eval_acc.get("test"),
        })
    return distributed.broadcast_object(TrainOutcome(
        run=RunDir(out), epochs=last.epoch, train_acc=last.train_acc, test_acc=last.eval_acc.get("test"),
        best_epoch=best["epoch"], best_test_acc=best["test_acc"] if best["by"] == "holdout" else oracle["acc"],
        seconds=time.perf_counter() - t0))
