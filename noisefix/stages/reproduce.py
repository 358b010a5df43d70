"""`noisefix reproduce RECIPE`: a paper benchmark per corruption degree and seed, next to the paper's numbers.

The dataset is exported once as an image folder (clean labels); each degree x seed gets its own seeded noisy
labels file and run directory, and goes through train -> probe -> relabel -> retrain. A finished stage is
never redone, so an interrupted reproduction resumes where it stopped. The report compares, per degree: the
memorized model, its best epoch (an oracle: chosen on the test set), MASC per layer (the label-only pick and
the oracle pick), the baselines (raw input, untrained network, NCM, linear probe, VeLPIC), MASC with
true-label subspaces, relabel and retrain, each beside the paper's figure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisefix.config import Recipe
from noisefix.data.builtin import export_dataset, load_builtin
from noisefix.data.folders import load_data
from noisefix.data.labels_file import write_labels_file
from noisefix.data.noise import corrupt_labels
from noisefix.errors import RunError
from noisefix.io.lock import writer_lock
from noisefix.io.run_dir import ProbeDir, RelabelDir, ReproduceDir, RetrainDir, RunDir
from noisefix.stages.probe import run_probe
from noisefix.stages.relabel import run_relabel
from noisefix.stages.reproduce_report import summarize_run, write_report
from noisefix.stages.retrain import run_retrain
from noisefix.stages.runs import open_run
from noisefix.stages.train import run_train
from noisefix.ui.reporter import Reporter, escape, or_null


@dataclass
class ReproduceOutcome:
    out: Path
    results: list[dict[str, Any]]
    report: Path


def degree_name(p: float, seed: int) -> str:
    return f"p{p:.2f}-s{seed}"


def prepare_data(recipe: Recipe, out: Path, *, data_root: Path | None, reporter: Reporter) -> Path:
    """Export the recipe's dataset (clean labels, subsets applied) once under OUT/data."""
    data = ReproduceDir(out).data
    if (data / "train").is_dir():
        return data
    reporter.info(f"exporting {recipe.dataset} to {escape(str(data))}")
    export_dataset(load_builtin(recipe.dataset, data_root=data_root), data, train_subset=recipe.train_subset,
                   test_subset=recipe.test_subset, seed=0)
    return data


def noisy_labels_file(data: Path, recipe: Recipe, p: float, seed: int, out: Path) -> Path:
    """OUT/labels/<degree>.csv: the training labels corrupted with probability p (seeded), clean ones beside."""
    path = ReproduceDir(out).labels(degree_name(p, seed))
    if not path.exists():
        train = load_data(data).train
        noisy, _ = corrupt_labels(train.targets, num_classes=len(train.classes), rate=p, noise=recipe.noise,
                                  seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_labels_file(path, paths=train.paths, labels=noisy, classes=train.classes, fmt="csv",
                          clean=train.targets)
    return path


def run_one(recipe: Recipe, data: Path, labels: Path, run: Path, *, seed: int, reporter: Reporter) -> None:
    """train -> probe (+ true-label MASC) -> relabel -> retrain for one degree x seed, skipping finished stages."""
    files = RunDir(run)
    if not files.model_json.exists():
        run_train(data, dataclasses.replace(recipe.train, seed=seed), labels_file=labels, out=run, force=True,
                  reporter=reporter)
    loaded = open_run(run)
    if not ProbeDir(files.probe).scores_json.exists():
        run_probe(loaded, dataclasses.replace(recipe.probe, seed=seed), force=True, reporter=reporter)
    if not ProbeDir(files.probe_clean).scores_json.exists():
        clean_cfg = dataclasses.replace(recipe.probe, probes=("masc",), checkpoints=("final",), seed=seed)
        run_probe(loaded, clean_cfg, force=True, reporter=reporter, fit_on="clean", subdir=files.probe_clean.name)
    if not RelabelDir(files.relabel).summary.exists():
        run_relabel(loaded, recipe.relabel, force=True, reporter=reporter)
    if not RetrainDir(files.retrain).metrics.exists():
        run_retrain(loaded, dataclasses.replace(recipe.retrain, seed=seed), force=True, reporter=reporter)


def run_reproduce(recipe: Recipe, out: Path, *, corruptions: tuple[float, ...] | None = None,
                  seeds: int | None = None, data_root: Path | None = None, quick: bool = False,
                  force: bool = False, reporter: Reporter | None = None) -> ReproduceOutcome:
    """Every degree x seed of `recipe` (or of its quick variant) under `out`, then the report.

    `corruptions` and `seeds` replace the recipe's (checked like the recipe's own values). An existing report
    in `out` is refused unless `force` (finished runs are reused either way); `out` is locked against a second
    writer for the whole reproduction, and removed again when this call made it and fails leaving it empty."""
    reporter = or_null(reporter)
    if quick:
        recipe = recipe.quick_variant()
    recipe = dataclasses.replace(recipe, corruptions=tuple(corruptions) if corruptions else recipe.corruptions,
                                 seeds=seeds or recipe.seeds)
    out = Path(out)
    if ReproduceDir(out).report_md.exists() and not force:
        raise RunError(f"a reproduction report already exists at {ReproduceDir(out).report_md}; pass --force to "
                       "write it again (finished runs are reused), or choose another --out")
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with writer_lock(out):
            return _reproduce(recipe, out, data_root=data_root, quick=quick, reporter=reporter)
    except BaseException:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _reproduce(recipe: Recipe, out: Path, *, data_root: Path | None, quick: bool,
               reporter: Reporter) -> ReproduceOutcome:
    data = prepare_data(recipe, out, data_root=data_root, reporter=reporter)
    results = []
    for p in recipe.corruptions:
        for seed in range(recipe.seeds):
            name = degree_name(p, seed)
            reporter.info(f"[bold]{recipe.name}[/]: corruption {p:g}, seed {seed}")
            labels = noisy_labels_file(data, recipe, p, seed, out)
            run = ReproduceDir(out).run(name)
            run_one(recipe, data, labels, run, seed=seed, reporter=reporter)
            results.append({"degree": p, "seed": seed, "run": str(run), **summarize_run(run)})
    report = write_report(out, recipe, results, quick=quick)
    return ReproduceOutcome(out=out, results=results, report=report)
