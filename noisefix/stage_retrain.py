"""`noisefix retrain`: refit the run's architecture on the cleaned labels and measure the gain.

No clean labels are needed to stop: a stratified held-out part of the (cleaned) training labels is scored
each epoch and training stops after `patience` epochs without improvement, keeping the best weights. The
clean test split, when there is one, only measures the result.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisefix import artifacts
from noisefix.config import RetrainConfig, TrainConfig, from_dict, load_yaml
from noisefix.data import load_data
from noisefix.images import ImageSource
from noisefix.errors import RunError
from noisefix.models import build_model, load_weights
from noisefix.report import NullReporter
from noisefix.scoring import stratified_holdout
from noisefix.stages import LoadedRun
from noisefix.train import EpochResult, EvalSet, evaluate, resolve_device, seed_everything, train_model


@dataclass
class RetrainOutcome:
    out: Path
    metrics: dict[str, Any]


def fit_with_holdout(model: torch.nn.Module, source: ImageSource, labels: np.ndarray, cfg: TrainConfig, *,
                     holdout: float, patience: int, seed: int, eval_sets: dict[str, EvalSet],
                     clean_labels: np.ndarray | None = None, on_epoch=None) -> tuple[list[EpochResult], int]:
    """Train on a stratified part of `labels`, stop on held-out agreement, restore the best epoch's weights.

    Returns the history and the best epoch. Used by retrain (and by benchmarks for a fair noisy baseline).
    """
    mask = stratified_holdout(labels, holdout, seed=seed)
    fit, held = np.flatnonzero(~mask), np.flatnonzero(mask)
    sets = {"holdout": EvalSet(source, labels, indices=held), **eval_sets}
    best = {"acc": -1.0, "epoch": 0, "state": copy.deepcopy(model.state_dict())}

    def stop(history: list[EpochResult]) -> bool:
        last = history[-1]
        if last.eval_acc["holdout"] > best["acc"]:
            best.update(acc=last.eval_acc["holdout"], epoch=last.epoch, state=copy.deepcopy(model.state_dict()))
        return last.epoch - best["epoch"] >= patience

    history = train_model(model, source, labels, cfg, indices=fit, clean_labels=clean_labels, eval_sets=sets,
                          stop=stop, on_epoch=on_epoch)
    model.load_state_dict(best["state"])
    return history, best["epoch"]


def run_retrain(loaded: LoadedRun, cfg: RetrainConfig, *, force: bool = False, reporter=None) -> RetrainOutcome:
    reporter = reporter or NullReporter()
    run = loaded.run
    summary_path = run.relabel / "summary.json"
    if not summary_path.exists():
        raise RunError(f"no relabel results in {run.path}; run `noisefix relabel --run {run.path}` first")
    artifacts.check_writable(run.retrain, force=force, what="retrain results")
    relabel_summary = artifacts.read_json(summary_path)
    train_cfg = from_dict(TrainConfig, load_yaml(run.config)["train"], where=str(run.config))
    overrides = {"seed": cfg.seed, "device": cfg.device, "save_every": 0, "save_epochs": ()}
    if cfg.epochs is not None:
        overrides["epochs"] = cfg.epochs
    train_cfg = dataclasses.replace(train_cfg, **overrides, target_acc=1.0)
    manifest = loaded.manifest
    cleaned = load_data(Path(manifest["data_root"]), Path(relabel_summary["cleaned_labels_file"]))
    split = cleaned.train
    info = loaded.model_info
    test = loaded.splits.test
    eval_sets = {"test": EvalSet(ImageSource(test), test.targets)} if test is not None else {}
    device = resolve_device(train_cfg.device)

    def fit(name: str, labels_split, log: Path):
        """Train a fresh (or the memorized) model on `labels_split` with held-out early stopping."""
        seed_everything(cfg.seed)
        model = build_model(info["arch"], in_shape=tuple(info["in_shape"]), num_classes=info["num_classes"])
        if cfg.start == "memorized":
            load_weights(model, run.weights)
        with reporter.progress(name, train_cfg.epochs) as advance:
            def on_epoch(r: EpochResult) -> None:
                artifacts.append_jsonl(log, r.as_dict())
                advance(1, loss=r.loss, **r.eval_acc)

            history, best_epoch = fit_with_holdout(
                model, ImageSource(labels_split), labels_split.targets, train_cfg, holdout=cfg.holdout,
                patience=cfg.patience, seed=cfg.seed, eval_sets=eval_sets, clean_labels=labels_split.clean_targets,
                on_epoch=on_epoch)
        acc = evaluate(model, eval_sets["test"], device=device) if test is not None else None
        return model, history, best_epoch, acc

    reporter.info(f"retraining {info['arch']} ({cfg.start}) on {len(split)} cleaned labels; early stopping on "
                  f"{cfg.holdout:.0%} held-out cleaned labels, patience {cfg.patience}"
                  + ("; then the same on the given labels, the baseline the gain is measured against"
                     if cfg.baseline else ""))
    with artifacts.staged_dir(run.retrain, force=force, what="retrain results") as tmp:
        model, history, best_epoch, after = fit("retrain (cleaned)", split, tmp / "metrics.jsonl")
        baseline = None
        if cfg.baseline:
            _, _, _, baseline = fit("retrain (given labels)", loaded.splits.train, tmp / "baseline_metrics.jsonl")
        before = info.get("final_test_acc")
        metrics = {
            "test_acc_memorized": before,
            "test_acc_best_epoch": info.get("best_test_acc"),
            "best_epoch": info.get("best_epoch"),
            "best_by": info.get("best_by"),
            "test_acc_oracle_epoch": info.get("oracle_test_acc"),
            "test_acc_retrained": after,
            "gain_vs_memorized": (after - before) if after is not None and before is not None else None,
            # the same early-stopped training on the given (noisy) labels: the gain due to cleaning alone
            "test_acc_baseline_given_labels": baseline,
            "gain_vs_baseline": (after - baseline) if after is not None and baseline is not None else None,
            "retrain_best_epoch": best_epoch,
            "retrain_epochs_run": history[-1].epoch,
            "label_accuracy_before": relabel_summary.get("label_accuracy_before"),
            "label_accuracy_after": relabel_summary.get("label_accuracy_after"),
            "n_train_images": len(split),
            "memorized_epochs": info["final_epoch"],
            "start": cfg.start,
        }
        artifacts.save_tensors(tmp / "model.safetensors", model.state_dict())
        artifacts.write_json(tmp / "metrics.json", metrics)
    return RetrainOutcome(out=run.retrain, metrics=metrics)

