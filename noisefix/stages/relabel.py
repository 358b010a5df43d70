"""`noisefix relabel`: cross-fitted probe scores -> suggested labels, a ranked issue list, a cleaned labels file.

Uses only the out-of-fold scores written by `probe` (a training image is never judged by subspaces it helped
build). Writes RUN/relabel/labels.csv (most suspicious first), the cleaned labels file in the input's format,
and summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noisefix.config import RelabelConfig
from noisefix.data.folders import write_labels_file
from noisefix.errors import RunError
from noisefix.io.atomic import (
    check_writable,
    load_tensors,
    read_json,
    staged_dir,
    write_csv,
    write_json,
)
from noisefix.scoring.issues import ensemble, issue_metrics, label_accuracy, relabel
from noisefix.scoring.selection import estimate_noise_rate
from noisefix.stages.runs import LoadedRun
from noisefix.ui.reporter import NullReporter

CLEANED_NAMES = {"csv": "cleaned_labels.csv", "lines": "cleaned_labels.txt", None: "cleaned_labels.csv"}


@dataclass
class RelabelOutcome:
    out: Path
    cleaned: Path
    summary: dict[str, Any]


def select_sources(scores: dict[str, Any], cfg: RelabelConfig) -> list[dict[str, Any]]:
    """The probe rows whose out-of-fold scores relabel uses: the label-only best (or the named layer/probe),
    or the `cfg.ensemble` best rows by agreement with the given labels."""
    rows = scores["rows"]
    if cfg.checkpoint is not None:
        rows = [r for r in rows if r["checkpoint"] == cfg.checkpoint]
        if not rows:
            have = sorted({r["checkpoint"] for r in scores["rows"]})
            raise RunError(f"checkpoint {cfg.checkpoint!r} was not probed; probed: {', '.join(have)}")
    if cfg.probe is not None:
        rows = [r for r in rows if r["probe"] == cfg.probe]
        if not rows:
            have = sorted({r["probe"] for r in scores["rows"]})
            raise RunError(f"probe {cfg.probe!r} was not run; probed with: {', '.join(have)} (re-run probe --probes)")
    if cfg.layer != "best":
        named = [r for r in rows if r["layer"] == cfg.layer]
        if not named:
            have = list(dict.fromkeys(r["layer"] for r in rows))
            raise RunError(f"layer {cfg.layer!r} was not probed; probed layers: {', '.join(have)}")
        rows = named
    criterion = scores.get("criterion", "agreement")
    ranked = sorted(rows, key=lambda r: -r[criterion])  # stable: ties keep checkpoint, layer, probe order
    return ranked[: cfg.ensemble]


def run_relabel(loaded: LoadedRun, cfg: RelabelConfig, *, force: bool = False, reporter=None) -> RelabelOutcome:
    reporter = reporter or NullReporter()
    run = loaded.run
    if not (run.probe / "scores.json").exists():
        raise RunError(f"no probe results in {run.path}; run `noisefix probe --run {run.path}` first")
    check_writable(run.relabel, force=force, what="relabel results")
    scores = read_json(run.probe / "scores.json")
    tensors = load_tensors(run.probe / "oof.safetensors")
    train = loaded.splits.train
    given = train.targets
    if not np.array_equal(tensors["labels"].numpy(), given):
        raise RunError(f"probe results in {run.probe} were computed on other labels; re-run probe with --force")
    sources = select_sources(scores, cfg)
    mats = [tensors[f"{r['checkpoint']}|{r['layer']}|{r['probe']}|oof"].numpy() for r in sources]
    combined = mats[0] if len(mats) == 1 else ensemble(mats)
    result = relabel(combined, given, min_margin=cfg.min_margin)
    classes = train.classes
    K = len(classes)
    clean = train.clean_targets
    held = loaded.holdout
    # noise-rate estimate from images the network never saw when there are any (memorization inflates the rest)
    agreement = float((combined.argmax(1) == given)[held if held.any() else slice(None)].mean())
    summary: dict[str, Any] = {
        "criterion": scores.get("criterion", "agreement"),
        "sources": [{k: r.get(k) for k in ("checkpoint", "layer", "probe", "agreement", "holdout_agreement",
                                           "clean_acc", "test_acc")} for r in sources],
        "mode": cfg.mode, "min_margin": cfg.min_margin,
        "n_images": int(len(given)), "n_issues": int(result.is_issue.sum()),
        "issue_rate": float(result.is_issue.mean()),
        # chance-corrected disagreement rate; equals the noise rate if the probe were exact, else an upper bound
        "estimated_noise_rate": estimate_noise_rate(agreement, 1.0, K),
        "changed_per_class": {classes[k]: int((result.is_issue & (given == k)).sum()) for k in range(K)},
    }
    cleaned_labels = np.where(result.is_issue, result.suggested, given)
    keep = ~result.is_issue if cfg.mode == "prune" else np.ones(len(given), dtype=bool)
    if clean is not None:
        summary["issue_detection"] = issue_metrics(result.is_issue, given, clean)
        summary["label_accuracy_before"] = label_accuracy(given, clean)
        summary["label_accuracy_after"] = (label_accuracy(cleaned_labels, clean) if cfg.mode == "relabel"
                                           else label_accuracy(given[keep], clean[keep]))
    fmt = loaded.splits.labels_format
    with staged_dir(run.relabel, force=force, what="relabel results") as tmp:
        header = ["path", "given_label", "suggested_label", "score", "is_issue"] + (["clean_label"] if clean is not None else [])
        rows = []
        for i in result.order:
            row = [train.paths[i], classes[given[i]], classes[result.suggested[i]], f"{result.score[i]:.6f}",
                   int(result.is_issue[i])]
            if clean is not None:
                row.append(classes[clean[i]])
            rows.append(row)
        write_csv(tmp / "labels.csv", header, rows)
        cleaned_name = CLEANED_NAMES[fmt]
        write_labels_file(tmp / cleaned_name, paths=[p for p, k in zip(train.paths, keep) if k],
                          labels=cleaned_labels[keep], classes=classes, fmt=fmt or "csv",
                          clean=clean[keep] if clean is not None else None)
        summary["cleaned_labels_file"] = str(run.relabel / cleaned_name)
        write_json(tmp / "summary.json", summary)
    return RelabelOutcome(out=run.relabel, cleaned=run.relabel / cleaned_name, summary=summary)
