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

from noisefix import artifacts, distributed
from noisefix.artifacts import RunDir
from noisefix.config import TrainConfig, dump_yaml
from noisefix.data import DataSplits, drop_paths, fingerprint, load_data
from noisefix.images import ImageSource, scan_images
from noisefix.errors import ConfigError, DataError, RunError
from noisefix.models import build_model, load_weights
from noisefix.report import NullReporter
from noisefix.scoring import stratified_holdout
from noisefix.train import EpochResult, EvalSet, seed_everything, train_model


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
    return artifacts.RUNS_DIR / f"{Path(data_root).resolve().name}-{model}-{stamp}"


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
    artifacts.write_csv(path, header, rows)


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
    artifacts.check_writable(out, force=force, what="run directory")
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
    with artifacts.staged_dir(out, force=force, what="run directory") as tmp:
        run = RunDir(tmp)
        artifacts.write_json(run.manifest, artifacts.make_manifest(
            argv=sys.argv, seed=cfg.seed, data_root=data_root, labels_file=labels_file,
            fingerprint=data_fingerprint, extra={"model": cfg.model, "stage": "train"}))
        if skipped:
            artifacts.write_csv(tmp / SKIPPED, ["path", "reason"], skipped)
        artifacts.write_text(run.config, dump_yaml({"train": cfg}))
        write_run_labels(run.labels, splits, holdout)
        saved: list[int] = []
        best = {"epoch": None, "acc": -1.0, "by": "holdout" if holdout.any() else "test", "test_acc": None}
        oracle = {"epoch": None, "acc": -1.0}

        def save(epoch: int, m: torch.nn.Module) -> None:
            artifacts.save_tensors(run.checkpoint(epoch), m.state_dict(), {"epoch": str(epoch)})
            saved.append(epoch)

        with reporter.progress("train", cfg.epochs) as advance:
            def on_epoch(r: EpochResult) -> None:
                artifacts.append_jsonl(run.metrics, r.as_dict())
                test = r.eval_acc.get("test")
                if test is not None and test > oracle["acc"]:
                    oracle.update(epoch=r.epoch, acc=test)
                score = r.eval_acc.get(best["by"])
                if score is not None and score > best["acc"]:
                    best.update(epoch=r.epoch, acc=score, test_acc=test)
                    artifacts.save_tensors(run.checkpoints / "best.safetensors", model.state_dict(),
                                           {"epoch": str(r.epoch)})
                fields = {"loss": r.loss, "train": r.train_acc}
                if r.train_clean_acc is not None:
                    fields["train(clean)"] = r.train_clean_acc
                fields.update(r.eval_acc)
                advance(1, **fields)

            history = fit(on_epoch=on_epoch, save=save)
        last = history[-1]
        artifacts.save_tensors(run.weights, model.state_dict(), {"epoch": str(last.epoch)})
        artifacts.write_json(run.model_json, {
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


@dataclass
class LoadedRun:
    run: RunDir
    manifest: dict
    model_info: dict
    splits: DataSplits
    holdout: np.ndarray  # bool (N,) over splits.train: images the network was not trained on


def open_run(run_path: Path | None, *, data_root: Path | None = None, model: str | None = None,
             stage: str | None = None, reporter=None) -> LoadedRun:
    """Resolve a run (the newest matching one under ./runs/ when not given), reload and verify its data."""
    reporter = reporter or NullReporter()
    if run_path is None:
        run_path = artifacts.find_latest_run(data_root=data_root, model=model, stage=stage)
        reporter.info(f"using run [bold]{run_path}[/] (newest under {artifacts.RUNS_DIR}/; pass --run to choose)")
    run = RunDir(Path(run_path)).require()
    manifest = artifacts.read_json(run.manifest)
    info = artifacts.read_json(run.model_json)
    root = Path(data_root) if data_root is not None else Path(manifest["data_root"])
    labels_file = manifest.get("labels_file")
    splits = load_data(root, Path(labels_file) if labels_file else None)
    if splits.train.classes != info["classes"]:
        raise RunError(f"the data at {root} has classes {splits.train.classes[:6]}... but run {run.path} was "
                       f"trained on {info['classes'][:6]}...; pass the data the run was trained on")
    if fingerprint(splits) != manifest["data_fingerprint"]:
        raise RunError(f"the data at {root} differs from the data run {run.path} was trained on (fingerprint "
                       "mismatch: images or labels changed); retrain, or pass the original data")
    if (run.path / SKIPPED).exists():
        splits = apply_skips(splits, {r["path"] for r in artifacts.read_csv(run.path / SKIPPED)})
    held = {r["path"] for r in artifacts.read_csv(run.labels) if r.get("split") == "holdout"}
    holdout = np.array([p in held for p in splits.train.paths], dtype=bool)
    return LoadedRun(run=run, manifest=manifest, model_info=info, splits=splits, holdout=holdout)


def load_run_model(loaded: LoadedRun, checkpoint: str = "final") -> tuple[torch.nn.Module, str]:
    """Rebuild the run's model with the weights of `checkpoint` (final | best | init | EPOCH)."""
    info = loaded.model_info
    model = build_model(info["arch"], in_shape=tuple(info["in_shape"]), num_classes=info["num_classes"])
    run = loaded.run
    if checkpoint == "final":
        path, label = run.weights, f"final (epoch {info['final_epoch']})"
    elif checkpoint == "best":
        path, label = run.checkpoints / "best.safetensors", f"best (epoch {info.get('best_epoch')})"
    else:
        epoch = 0 if checkpoint == "init" else _parse_epoch(checkpoint)
        path, label = run.checkpoint(epoch), f"epoch {epoch}"
    if not path.exists():
        have = ", ".join(["final", "best"] + [str(e) for e in info.get("checkpoints", [])])
        raise RunError(f"checkpoint {checkpoint!r} not saved in {run.path}; available: {have} "
                       "(train with --save-every to keep more)")
    load_weights(model, path)
    model.eval()
    return model, label


def _parse_epoch(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RunError(f"checkpoint must be final, best, init or an epoch number, got {text!r}") from None
