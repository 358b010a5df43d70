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
from noisefix.data.folders import LabeledImages, write_labels_file
from noisefix.errors import RunError
from noisefix.io.atomic import (
    check_writable,
    load_tensors,
    read_json,
    staged_dir,
    write_csv,
    write_json,
)
from noisefix.io.run_dir import ProbeDir, RelabelDir, score_key
from noisefix.scoring.issues import Relabeling, ensemble, issue_metrics, label_accuracy, relabel
from noisefix.scoring.selection import estimate_noise_rate
from noisefix.stages.runs import LoadedRun
from noisefix.ui.reporter import Reporter


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


def _load_scores(probe: ProbeDir, labels: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """The probe summary and per-image scores, checked to be computed on `labels`."""
    scores = read_json(probe.scores_json)
    tensors = load_tensors(probe.oof)
    if not np.array_equal(tensors["labels"].numpy(), labels):
        raise RunError(f"probe results in {probe.path} were computed on other labels; re-run probe with --force")
    return scores, tensors


def _summary(scores: dict[str, Any], sources: list[dict[str, Any]], result: Relabeling, combined: np.ndarray,
             loaded: LoadedRun, cfg: RelabelConfig, keep: np.ndarray, cleaned_labels: np.ndarray) -> dict[str, Any]:
    """summary.json: the sources, issue counts, estimated noise rate and, with clean labels, detection quality."""
    train, held = loaded.splits.train, loaded.holdout
    given, clean, classes = train.targets, train.clean_targets, train.classes
    K = len(classes)
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
    if clean is not None:
        summary["issue_detection"] = issue_metrics(result.is_issue, given, clean)
        summary["label_accuracy_before"] = label_accuracy(given, clean)
        summary["label_accuracy_after"] = (label_accuracy(cleaned_labels, clean) if cfg.mode == "relabel"
                                           else label_accuracy(given[keep], clean[keep]))
    return summary


def _write_issues(path: Path, train: LabeledImages, result: Relabeling) -> None:
    """RUN/relabel/labels.csv: every training image, most suspicious first."""
    classes, given, clean = train.classes, train.targets, train.clean_targets
    header = ["path", "given_label", "suggested_label", "score", "is_issue"]
    header += ["clean_label"] if clean is not None else []
    rows = []
    for i in result.order:
        row = [train.paths[i], classes[given[i]], classes[result.suggested[i]], f"{result.score[i]:.6f}",
               int(result.is_issue[i])]
        if clean is not None:
            row.append(classes[clean[i]])
        rows.append(row)
    write_csv(path, header, rows)


def run_relabel(loaded: LoadedRun, cfg: RelabelConfig, *, force: bool = False,
                reporter: Reporter | None = None) -> RelabelOutcome:
    """Relabel (or prune) the run's training labels from its probe scores; write RUN/relabel/. (Nothing to
    report along the way: `reporter` is taken for the stages' common signature.)"""
    run = loaded.run
    if not ProbeDir(run.probe).scores_json.exists():
        raise RunError(f"no probe results in {run.path}; run `noisefix probe --run {run.path}` first")
    check_writable(run.relabel, force=force, what="relabel results")
    train = loaded.splits.train
    scores, tensors = _load_scores(ProbeDir(run.probe), train.targets)
    given, clean = train.targets, train.clean_targets
    sources = select_sources(scores, cfg)
    mats = [tensors[score_key(r["checkpoint"], r["layer"], r["probe"], "oof")].numpy() for r in sources]
    combined = mats[0] if len(mats) == 1 else ensemble(mats)
    result = relabel(combined, given, min_margin=cfg.min_margin)
    cleaned_labels = np.where(result.is_issue, result.suggested, given)
    keep = ~result.is_issue if cfg.mode == "prune" else np.ones(len(given), dtype=bool)
    summary = _summary(scores, sources, result, combined, loaded, cfg, keep, cleaned_labels)
    fmt = loaded.splits.labels_format
    final = RelabelDir(run.relabel)
    with staged_dir(run.relabel, force=force, what="relabel results") as tmp:
        files = RelabelDir(tmp)
        _write_issues(files.issues, train, result)
        write_labels_file(files.cleaned(fmt), paths=[p for p, k in zip(train.paths, keep) if k],
                          labels=cleaned_labels[keep], classes=train.classes, fmt=fmt or "csv",
                          clean=clean[keep] if clean is not None else None)
        summary["cleaned_labels_file"] = str(final.cleaned(fmt))
        write_json(files.summary, summary)
    return RelabelOutcome(out=run.relabel, cleaned=final.cleaned(fmt), summary=summary)
