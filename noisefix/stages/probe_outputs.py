"""The probe stage's results: the rows, score tensors and model accuracies of every probed checkpoint
(`collect`), the label-only and oracle picks (`pick`), and RUN/probe/'s files (`write_outputs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from noisefix.data.folders import LabeledImages
from noisefix.io.atomic import save_tensors, write_csv, write_json
from noisefix.io.run_dir import ProbeDir, score_key
from noisefix.scoring.selection import ScoreRow, choose, score_rows
from noisefix.stages.runs import checkpoint_epochs
from noisefix.ui.plots import plot_dynamics, plot_layers
from noisefix.ui.reporter import Reporter


ROW_FIELDS = ("layer", "probe", "dim", "mean_k", "agreement", "holdout_agreement", "clean_acc", "test_acc")


def _row_dict(row: ScoreRow, checkpoint: str) -> dict[str, Any]:
    return {"checkpoint": checkpoint, **{k: getattr(row, k) for k in ROW_FIELDS}}


@dataclass
class Collected:
    """Rank 0's results over every probed checkpoint, as they are written."""

    rows: list[dict[str, Any]] = field(default_factory=list)           # scores.csv / scores.json rows
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)     # oof.safetensors
    n_components: dict[str, list[int]] = field(default_factory=dict)   # per-class MASC k, by score_key
    model: dict[str, dict[str, float | None]] = field(default_factory=dict)  # the model's accuracies per checkpoint
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)    # shape and dim per layer


def collect(probed: list[tuple[str, tuple]], *, train: LabeledImages, test: LabeledImages | None,
             folds: np.ndarray) -> Collected:
    """Rows, per-image score tensors (keyed by `score_key`) and MASC dimensions of every checkpoint; on ranks
    other than 0 (which hold no scores) only the folds and labels."""
    fit_mask = folds >= 0
    out = Collected(tensors={"folds": torch.as_tensor(folds), "labels": torch.as_tensor(train.targets)})
    clean = train.clean_targets[fit_mask] if train.clean_targets is not None else None
    for checkpoint, (results, infos, model_acc, label) in probed:
        if model_acc is None:  # ranks other than 0 hold no scores: rank 0 summarizes and writes
            continue
        out.model[checkpoint] = model_acc
        out.layers.update({i.name: {"shape": list(i.shape), "dim": i.dim} for i in infos})
        for row in score_rows(results, labels=train.targets[fit_mask], clean_labels=clean,
                              test_labels=test.targets if test is not None else None,
                              holdout_labels=train.targets[~fit_mask] if (~fit_mask).any() else None,
                              dims={i.name: i.dim for i in infos}):
            out.rows.append(_row_dict(row, checkpoint))
        for r in results:
            scores = np.zeros((len(train), r.oof_scores.shape[1]), dtype=np.float32)
            scores[fit_mask] = r.oof_scores  # out-of-fold for trained-on images
            if r.holdout_scores is not None:
                scores[~fit_mask] = r.holdout_scores  # held-out images: never seen by network or probe
            out.tensors[score_key(checkpoint, r.layer, r.probe, "oof")] = torch.as_tensor(scores)
            if r.test_scores is not None:
                out.tensors[score_key(checkpoint, r.layer, r.probe, "test")] = torch.as_tensor(r.test_scores)
            if r.n_components is not None:
                out.n_components[score_key(checkpoint, r.layer, r.probe)] = [int(k) for k in r.n_components]
    return out


def pick(rows: list[dict[str, Any]], holdout: np.ndarray, reporter: Reporter, *,
          trained: bool = True) -> tuple[str, dict[str, Any], dict[str, Any] | None, str | None]:
    """The label-only criterion and pick, the oracle metric and pick; marks them in the rows' `pick`.
    `trained=False` (a pretrained network never fitted to these labels): out-of-fold agreement is not
    inflated by memorization, so it is the criterion without a warning."""
    criterion = "holdout_agreement" if holdout.any() else "agreement"
    if criterion == "agreement" and trained:
        reporter.warn("this run has no held-out images (train --holdout 0): the label-only pick uses out-of-fold "
                      "agreement, which memorized late layers inflate; prefer runs trained with --holdout")
    best = choose(rows, by=criterion)
    oracle_metric = "test_acc" if rows[0]["test_acc"] is not None else (
        "clean_acc" if rows[0]["clean_acc"] is not None else None)
    oracle = choose(rows, by=oracle_metric) if oracle_metric else None
    for r in rows:
        r["pick"] = ",".join(p for p, sel in (("best", best), ("oracle", oracle)) if sel is r)
    return criterion, best, oracle, oracle_metric


def write_outputs(files: ProbeDir, got: Collected, summary: dict[str, Any], *, model_info: dict,
                   run_name: str) -> None:
    """scores.csv, scores.json, oof.safetensors, layers.png (the pick's checkpoint) and, over epochs,
    dynamics.png."""
    cols = ["checkpoint", *ROW_FIELDS, "pick"]
    write_csv(files.scores_csv, cols, ([r[c] for c in cols] for r in got.rows))
    write_json(files.scores_json, summary)
    save_tensors(files.oof, got.tensors)
    criterion = summary["criterion"]
    epochs = checkpoint_epochs(list(got.model), model_info)
    if len(epochs) > 1:
        plot_dynamics(files.dynamics_png, got.rows, epochs=epochs, criterion=criterion, model_acc=got.model)
    at = summary["best"]["checkpoint"]
    plot_layers(files.layers_png, [r for r in got.rows if r["checkpoint"] == at], criterion=criterion,
                model_acc=got.model[at], title=f"{run_name}: checkpoint {at}, cross-fitted probes")
