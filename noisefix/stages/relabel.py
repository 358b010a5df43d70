"""`noisefix relabel`: cross-fitted probe scores -> label quality, flags, suggested labels, a cleaned labels file.

Uses only the out-of-fold scores written by `probe` (a training image is never judged by subspaces it helped
build). The scores become a calibrated label quality for every image and an estimated noise rate: the calibration
fitted on the clean test split when the run has one (scored by the same probes), the noise on the held-out images
when the run has them (`scoring.calibration`, `scoring.quality`); the flagging rule (`--flag`) picks
the likely wrong labels (`scoring.issues.flag_issues`). Writes RUN/relabel/labels.csv (lowest label quality
first), the cleaned labels file in the input's format (strong suggestions applied; labels left for review
keep their given value; `--mode prune` drops every flagged image) and summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from noisefix.config import RelabelConfig
from noisefix.data.folders import LabeledImages
from noisefix.data.labels_file import write_labels_file
from noisefix.errors import RunError
from noisefix.io.atomic import (
    check_writable,
    load_tensors,
    staged_dir,
    write_csv,
    write_json,
)
from noisefix.io.run_dir import ProbeDir, RelabelDir, read_scores, score_key, score_matrix
from noisefix.scoring.issues import Flags, confusion_table, issue_metrics, label_accuracy, ranking_metrics
from noisefix.scoring.calibration import Trusted, held_out_fit
from noisefix.scoring.quality import FoundIssues, LabelQuality, find_issues
from noisefix.stages.runs import LoadedRun
from noisefix.ui.reporter import Reporter
from noisefix.ui.review import ReviewRows, agreeing_sources, write_review


@dataclass
class RelabelOutcome:
    out: Path
    cleaned: Path
    summary: dict[str, Any]
    top_issues: list[dict[str, str]] = field(default_factory=list)  # the first flagged rows of labels.csv
    review: Path | None = None  # review.html, when written


TOP_ISSUES = 10  # flagged rows the console shows
#: Images the probes' temperatures are fitted on: a seeded sample of this many (all of them when fewer). The fit
#: runs EM with a Newton step per iteration on every row it gets: on 60,000 images it took 33 of relabel's 45 s
#: (docs/cleaning.md, "clean's cost").
TEMPERATURE_SAMPLE = 5000
NOISE_BOOTSTRAP = 50  # bootstrap draws of the noise-rate interval (each refits on the fit images)


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
    scores = read_scores(probe.scores_json)
    tensors = load_tensors(probe.oof, required=("labels",))
    if not np.array_equal(tensors["labels"].numpy(), labels):
        raise RunError(f"probe results in {probe.path} were computed on other labels; re-run probe with --force")
    return scores, tensors


@dataclass
class Evidence:
    """What relabel judges the run's N training images from."""

    sources: list[dict[str, Any]]  # the probe rows used (checkpoint, layer, probe, agreements)
    mats: list[np.ndarray]  # their (N, K) out-of-fold scores (held-out images: probes fitted on the others)
    given: np.ndarray  # (N,) given labels
    clean: np.ndarray | None  # (N,) clean labels when the labels file has them (evaluation only)
    known_clean: np.ndarray | None  # (N,) clean labels of some images, -1 elsewhere (Clothing1M; evaluation only)
    fit_mask: np.ndarray | None  # (N,) held-out images, never trained on: the noise is fitted on them
    criterion: str  # how the sources were ranked (holdout_agreement or agreement)
    trusted: Trusted | None = None  # the clean test split's scores by the same sources: the temperatures' fit


def relabel_evidence(loaded: LoadedRun, cfg: RelabelConfig) -> Evidence:
    """The probe sources `cfg` selects and their out-of-fold scores, from the run's probe outputs."""
    run = loaded.run
    if not ProbeDir(run.probe).scores_json.exists():
        raise RunError(f"no probe results in {run.path}; run `noisefix probe --run {run.path}` first")
    train = loaded.splits.train
    scores, tensors = _load_scores(ProbeDir(run.probe), train.targets)
    sources = select_sources(scores, cfg)
    shape = (len(train), len(train.classes))
    mats = [score_matrix(tensors, score_key(r["checkpoint"], r["layer"], r["probe"], "oof"), shape,
                         ProbeDir(run.probe).oof) for r in sources]
    held = loaded.holdout
    return Evidence(sources=sources, mats=mats, given=train.targets, clean=train.clean_targets,
                    known_clean=train.known_clean,
                    fit_mask=held if held.any() else None, criterion=scores.get("criterion", "agreement"),
                    trusted=(_trusted(loaded, tensors, sources, ProbeDir(run.probe).oof)
                             if cfg.calibrate == "test" else None))


def _trusted(loaded: LoadedRun, tensors: dict[str, Any], sources: list[dict[str, Any]], where: Path) -> Trusted | None:
    """The clean test split (DESIGN: treated as clean) as scored by every source, None without one or when
    a source has no test scores."""
    test = loaded.splits.test
    keys = [score_key(r["checkpoint"], r["layer"], r["probe"], "test") for r in sources]
    if test is None or not len(test) or any(k not in tensors for k in keys):
        return None
    shape = (len(test), len(test.classes))
    return Trusted(scores=[score_matrix(tensors, k, shape, where) for k in keys], labels=test.targets)


def _noise_summary(quality: LabelQuality, classes: list[str], held_out: bool) -> dict[str, Any]:
    """summary.json "noise": the estimated wrong fraction overall and per given class, with intervals."""
    noise, K = quality.noise, len(classes)
    return {
        "what": "wrong fraction: the share of labels that differ from the true class (the paper's symmetric "
                "rate p redraws labels uniformly, the true class included: p = wrong_fraction * K / (K - 1))",
        "wrong_fraction": noise.rate, "interval": list(noise.interval), "level": noise.level,
        "symmetric_p": min(1.0, noise.rate * K / (K - 1)),
        "fitted_on": f"{quality.model.n_fit} held-out images" if held_out else "all images (no held-out images)",
        "held_out_rate": noise.fit_rate, "all_images_rate": noise.pooled_rate, "held_out_weight": noise.fit_weight,
        "per_class": {classes[k]: {"wrong_fraction": float(noise.per_class[k]),
                                   "interval": noise.per_class_interval[k].tolist(),
                                   "expected_wrong": float(noise.expected_wrong[k])} for k in range(K)},
        "calibration": {"temperatures": quality.model.temperatures.tolist(),
                        "fitted_on": (f"{quality.model.scaling.n_fit} clean test images (temperature and "
                                      "matrix scaling)" if quality.model.scaling else "the given labels, by EM"),
                        "ensemble_temperature": quality.model.ensemble_temperature,
                        "matrix_scaling_penalty": quality.model.scaling.lam if quality.model.scaling else None,
                        "clean_test_images": quality.model.scaling.n_fit if quality.model.scaling else 0,
                        "trained_on_rank_matched_to_held_out": noise.rank_matched},
    }


def _confusion(given: np.ndarray, flags: Flags, classes: list[str]) -> dict[str, dict[str, int]]:
    """Flagged images per given class -> suggested class ("review": no suggestion); non-zero cells only."""
    K = len(classes)
    table = confusion_table(given, flags.suggested, flags.is_issue, num_classes=K)
    names = list(classes) + ["review"]
    return {classes[g]: {names[c]: int(table[g, c]) for c in np.flatnonzero(table[g])}
            for g in range(K) if table[g].any()}


def _summary(ev: Evidence, found: FoundIssues, classes: list[str], cfg: RelabelConfig, keep: np.ndarray,
             cleaned_labels: np.ndarray) -> dict[str, Any]:
    """summary.json: the sources, the flags, the noise estimate and, with clean labels, detection quality."""
    given, clean, flags = ev.given, ev.clean, found.flags
    K = len(classes)
    summary: dict[str, Any] = {
        "criterion": ev.criterion,
        "sources": [{k: r.get(k) for k in ("checkpoint", "layer", "probe", "agreement", "holdout_agreement",
                                           "clean_acc", "test_acc")} for r in ev.sources],
        "mode": cfg.mode, "flag": cfg.flag, "calibrate": cfg.calibrate, "min_margin": cfg.min_margin,
        "max_issues": cfg.max_issues, "min_suggest": cfg.min_suggest,
        "n_images": int(len(given)), "n_issues": int(flags.is_issue.sum()),
        "n_relabeled": int((flags.is_issue & ~flags.needs_review).sum()), "n_review": int(flags.needs_review.sum()),
        "issue_rate": float(flags.is_issue.mean()),
        "noise": _noise_summary(found.quality, classes, ev.fit_mask is not None),
        "confusion": _confusion(given, flags, classes),
        "changed_per_class": {classes[k]: int((flags.is_issue & (given == k)).sum()) for k in range(K)},
    }
    if clean is not None:
        summary.update(_detection(np.ones(len(given), dtype=bool), clean, ev, found, cfg, keep, cleaned_labels))
    if ev.known_clean is not None and (ev.known_clean >= 0).any():
        known = ev.known_clean >= 0
        summary["real_noise_evaluation"] = {
            "what": "the images whose clean label is known (Clothing1M's doubly-labelled ones): the flags and "
                    "the noise estimate against their human-verified labels",
            "n_images": int(known.sum()),
            "estimated_wrong_fraction": float(np.mean(1 - found.quality.label_quality[known])),
            **_detection(known, ev.known_clean, ev, found, cfg, keep, cleaned_labels)}
    return summary


def _detection(mask: np.ndarray, clean: np.ndarray, ev: Evidence, found: FoundIssues, cfg: RelabelConfig,
               keep: np.ndarray, cleaned_labels: np.ndarray) -> dict[str, Any]:
    """The true wrong fraction, ranking and flag quality, label accuracy before and after, on the `mask`ed images
    (`clean`: their clean labels)."""
    given, clean, is_issue = ev.given[mask], clean[mask], found.flags.is_issue[mask]
    kept = keep[mask]
    return {"true_wrong_fraction": float(np.mean(given != clean)),
            "label_quality_ranking": ranking_metrics(found.quality.log_odds[mask], given, clean),
            "issue_detection": issue_metrics(is_issue, given, clean),
            "label_accuracy_before": label_accuracy(given, clean),
            "label_accuracy_after": (label_accuracy(cleaned_labels[mask], clean) if cfg.mode == "relabel"
                                     else label_accuracy(given[kept], clean[kept]))}


def _actions(flags: Flags, mode: str) -> np.ndarray:
    """Per image: keep, relabel (a strong suggestion), review (flagged, no suggestion) or prune."""
    action = np.where(flags.needs_review, "review", "relabel")
    action = np.where(flags.is_issue, "prune" if mode == "prune" else action, "keep")
    return action


def _write_issues(path: Path, train: LabeledImages, found: FoundIssues, mode: str) -> None:
    """RUN/relabel/labels.csv: every training image, lowest label quality (most suspicious) first."""
    classes, given = train.classes, train.targets
    clean = train.clean_targets if train.clean_targets is not None else train.known_clean  # -1: not known
    flags, quality = found.flags, found.quality.label_quality
    header = ["path", "given_label", "suggested_label", "label_quality", "score", "is_issue", "action"]
    header += ["clean_label"] if clean is not None else []
    order = np.asarray(flags.order)
    cols = [[train.paths[i] for i in order.tolist()], [classes[c] for c in given[order].tolist()],
            ["" if review else classes[c]
             for review, c in zip(flags.needs_review[order].tolist(), flags.suggested[order].tolist())],
            [f"{q:.6g}" for q in quality[order].tolist()], [f"{m:.6f}" for m in found.margin[order].tolist()],
            flags.is_issue[order].astype(int).tolist(), _actions(flags, mode)[order].tolist()]
    if clean is not None:
        cols.append([classes[c] if c >= 0 else "" for c in np.asarray(clean)[order].tolist()])
    write_csv(path, header, zip(*cols))


def run_relabel(loaded: LoadedRun, cfg: RelabelConfig, *, force: bool = False,
                reporter: Reporter | None = None) -> RelabelOutcome:
    """Flag likely wrong labels from the run's probe scores, relabel (or prune) them; write RUN/relabel/.
    (Nothing to report along the way: `reporter` is taken for the stages' common signature.)"""
    run = loaded.run
    evidence = relabel_evidence(loaded, cfg)
    check_writable(run.relabel, force=force, what="relabel results")
    train = loaded.splits.train
    given, clean = evidence.given, evidence.clean
    found = find_issues(evidence.mats, given, fit_mask=evidence.fit_mask,
                        temperature_mask=temperature_sample(evidence), trusted=evidence.trusted,
                        flag=cfg.flag, max_issues=cfg.max_issues, min_margin=cfg.min_margin,
                        min_suggest=cfg.min_suggest, n_boot=NOISE_BOOTSTRAP)
    cleaned_labels = found.flags.suggested  # review rows keep their given label
    keep = ~found.flags.is_issue if cfg.mode == "prune" else np.ones(len(given), dtype=bool)
    summary = _summary(evidence, found, train.classes, cfg, keep, cleaned_labels)
    fmt = loaded.splits.labels_format
    final = RelabelDir(run.relabel)
    with staged_dir(run.relabel, force=force, what="relabel results") as tmp:
        files = RelabelDir(tmp)
        _write_issues(files.issues, train, found, cfg.mode)
        write_labels_file(files.cleaned(fmt), paths=[p for p, k in zip(train.paths, keep) if k],
                          labels=cleaned_labels[keep], classes=train.classes, fmt=fmt or "csv",
                          clean=clean[keep] if clean is not None else None)
        summary["cleaned_labels_file"] = str(final.cleaned(fmt))
        write_json(files.summary, summary)
        if cfg.review and found.flags.is_issue.any():
            write_review(files.review_html, files.review_png, _review_rows(train, evidence, found, cfg.review),
                         root=train.root, top=cfg.review,
                         n_issues=int(found.flags.is_issue.sum()), n_images=len(given),
                         sources=[_source_name(r) for r in evidence.sources], title=f"noisefix review: {run.path}")
    review = final.review_html if cfg.review and found.flags.is_issue.any() else None
    return RelabelOutcome(out=run.relabel, cleaned=final.cleaned(fmt), summary=summary,
                          top_issues=_top_issues(train, found), review=review)


def temperature_sample(ev: Evidence, size: int = TEMPERATURE_SAMPLE, seed: int = 0) -> np.ndarray | None:
    """The images the temperatures are fitted on: None (the default of `quality.fit_noise_model`: the held-out
    images when there are enough of them, `quality.held_out_fit`, never a sample that mixes in trained-on images,
    whose scores lean to their given labels) or, without enough held-out images, `size` images drawn without
    replacement (seeded), None (all) when there are at most `size`."""
    n = len(ev.given)
    if n <= size or held_out_fit(ev.fit_mask, n, ev.mats[0].shape[1]):
        return None
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, size, replace=False)] = True
    return mask


def _source_name(row: dict[str, Any]) -> str:
    return f"{row['layer']}/{row['probe']}" + (f"@{row['checkpoint']}" if row["checkpoint"] != "final" else "")


def _flagged(found: FoundIssues, n: int) -> np.ndarray:
    """The first `n` flagged images, most suspicious first."""
    order = found.flags.order
    return order[found.flags.is_issue[order]][:n]


def _top_issues(train: LabeledImages, found: FoundIssues) -> list[dict[str, str]]:
    """The console's table: the most suspicious flagged images as labels.csv rows ("" = left for review)."""
    flags, classes = found.flags, train.classes
    return [{"path": train.paths[i], "given_label": classes[train.targets[i]],
             "suggested_label": "" if flags.needs_review[i] else classes[flags.suggested[i]],
             "label_quality": f"{found.quality.label_quality[i]:.6g}"} for i in _flagged(found, TOP_ISSUES)]


def _review_rows(train: LabeledImages, ev: Evidence, found: FoundIssues, n: int) -> ReviewRows:
    """review.html's rows: the `n` most suspicious flagged images; for one left for review, the likeliest other
    class as a candidate; per row, the sources whose own best class is that suggestion."""
    idx = _flagged(found, n)
    classes, given, flags = train.classes, ev.given[idx], found.flags
    other = found.quality.posterior[idx].copy()
    other[np.arange(len(idx)), given] = -1.0
    candidate = np.where(flags.needs_review[idx], other.argmax(1), flags.suggested[idx])
    names = [_source_name(r) for r in ev.sources]
    agreed = agreeing_sources(names, np.stack([m[idx].argmax(1) for m in ev.mats]), candidate)
    return ReviewRows(paths=[train.paths[i] for i in idx], given=[classes[g] for g in given],
                      suggested=[classes[c] for c in candidate], score=[float(found.margin[i]) for i in idx],
                      quality=[float(found.quality.label_quality[i]) for i in idx], agreed=agreed,
                      review=[bool(flags.needs_review[i]) for i in idx])
