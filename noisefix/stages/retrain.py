"""`noisefix retrain`: refit the run's architecture on the cleaned labels and measure the gain.

No clean labels are needed to stop: a stratified held-out part of the (cleaned) training labels is scored
each epoch and training stops after `patience` epochs without improvement, keeping the best weights. The
clean test split, when there is one, only measures the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from noisefix.config import RetrainConfig, TrainConfig, load_section
from noisefix.data.folders import LabeledImages, load_data
from noisefix.data.images import ImageSource
from noisefix.errors import RunError
from noisefix.io.atomic import (
    append_jsonl,
    check_writable,
    read_json,
    save_tensors,
    staged_dir,
    write_json,
)
from noisefix.io.run_dir import RelabelDir, RetrainDir, RunDir
from noisefix.nn.device import resolve_device, seed_everything
from noisefix.nn.models import build_model, load_weights
from noisefix.nn.training import EpochResult, EvalSet, evaluate, fit_with_holdout
from noisefix.stages.runs import LoadedRun
from noisefix.ui.reporter import Reporter, or_null


@dataclass
class RetrainOutcome:
    out: Path
    metrics: dict[str, Any]


def _retrain_config(run: RunDir, cfg: RetrainConfig) -> TrainConfig:
    """The run's training config with the retrain seed, device and epoch cap; no checkpoints kept."""
    train_cfg = load_section(run.config, "train", TrainConfig)
    overrides = {"seed": cfg.seed, "device": cfg.device, "save_every": 0, "save_epochs": ()}
    if cfg.epochs is not None:
        overrides["epochs"] = cfg.epochs
    return dataclasses.replace(train_cfg, **overrides, target_acc=1.0)


def _fit(name: str, labels_split: LabeledImages, log: Path, *, loaded: LoadedRun, cfg: RetrainConfig,
         train_cfg: TrainConfig, eval_sets: dict[str, EvalSet],
         reporter: Reporter) -> tuple[torch.nn.Module, list[EpochResult], int, float | None]:
    """Train a fresh (or the memorized) model on `labels_split` with held-out early stopping; returns it, its
    history, best epoch and test accuracy (None without a test split)."""
    info = loaded.model_info
    seed_everything(cfg.seed)
    model = build_model(info["arch"], in_shape=tuple(info["in_shape"]), num_classes=info["num_classes"],
                        variant=info.get("variant"))
    if cfg.start == "memorized":
        load_weights(model, loaded.run.weights)
    elif info.get("weights") is not None:  # "scratch" for a pretrained run: its pretrained start (epoch 0)
        load_weights(model, loaded.run.checkpoint(0))
    with reporter.progress(name, train_cfg.epochs) as advance:
        def on_epoch(r: EpochResult) -> None:
            append_jsonl(log, r.as_dict())
            advance(1, loss=r.loss, **r.eval_acc)

        history, best_epoch = fit_with_holdout(
            model, ImageSource(labels_split, loaded.spec), labels_split.targets, train_cfg, holdout=cfg.holdout,
            patience=cfg.patience, seed=cfg.seed, eval_sets=eval_sets, clean_labels=labels_split.clean_targets,
            on_epoch=on_epoch)
    device = resolve_device(train_cfg.device)
    acc = evaluate(model, eval_sets["test"], device=device) if "test" in eval_sets else None
    return model, history, best_epoch, acc


def _metrics(info: dict, relabel_summary: dict, *, after: float | None, baseline: float | None,
             best_epoch: int, history: list[EpochResult], n_train: int, start: str) -> dict[str, Any]:
    """metrics.json: test accuracy of the memorized model, its best checkpoint, the retrained one, the baseline."""
    before = info.get("final_test_acc")
    return {
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
        # agreement with the held-out part of the cleaned labels at the best epoch (what early stopping maximizes)
        "holdout_agreement_retrained": next((r.eval_acc.get("holdout") for r in history if r.epoch == best_epoch),
                                            None),
        "retrain_epochs_run": history[-1].epoch,
        "label_accuracy_before": relabel_summary.get("label_accuracy_before"),
        "label_accuracy_after": relabel_summary.get("label_accuracy_after"),
        "n_train_images": n_train,
        "memorized_epochs": info["final_epoch"],
        "start": start,
    }


def run_retrain(loaded: LoadedRun, cfg: RetrainConfig, *, force: bool = False,
                reporter: Reporter | None = None) -> RetrainOutcome:
    """Retrain the run's architecture on relabel's cleaned labels (and, with `cfg.baseline`, on the given
    ones); write RUN/retrain/."""
    reporter = or_null(reporter)
    run = loaded.run
    summary_path = RelabelDir(run.relabel).summary
    if not summary_path.exists():
        raise RunError(f"no relabel results in {run.path}; run `noisefix relabel --run {run.path}` first")
    check_writable(run.retrain, force=force, what="retrain results")
    relabel_summary = read_json(summary_path)
    train_cfg = _retrain_config(run, cfg)
    split = load_data(Path(loaded.manifest["data_root"]), Path(relabel_summary["cleaned_labels_file"]),
                      classes_file=loaded.classes_file).train
    info = loaded.model_info
    test = loaded.splits.test
    eval_sets = {"test": EvalSet(ImageSource(test, loaded.spec), test.targets)} if test is not None else {}
    fit = partial(_fit, loaded=loaded, cfg=cfg, train_cfg=train_cfg, eval_sets=eval_sets, reporter=reporter)
    with_baseline = cfg.baseline and test is not None  # without a test split a baseline has nothing to be compared on
    if test is None:
        reporter.warn("this run has no test split, so the gain in test accuracy cannot be measured; retrain "
                      "reports the retrained model's agreement with its held-out cleaned labels instead"
                      + (" and trains no baseline" if cfg.baseline else ""))
    reporter.info(f"retraining {info['arch']} ({cfg.start}) on {len(split)} cleaned labels; early stopping on "
                  f"{cfg.holdout:.0%} held-out cleaned labels, patience {cfg.patience}"
                  + ("; then the same on the given labels, the baseline the gain is measured against"
                     if with_baseline else ""))
    with staged_dir(run.retrain, force=force, what="retrain results") as tmp:
        files = RetrainDir(tmp)
        model, history, best_epoch, after = fit("retrain (cleaned)", split, files.log)
        baseline = None
        if with_baseline:
            _, _, _, baseline = fit("retrain (given labels)", loaded.splits.train, files.baseline_log)
        metrics = _metrics(info, relabel_summary, after=after, baseline=baseline, best_epoch=best_epoch,
                           history=history, n_train=len(split), start=cfg.start)
        save_tensors(files.weights, model.state_dict())
        write_json(files.metrics, metrics)
    return RetrainOutcome(out=run.retrain, metrics=metrics)
