"""noisefix `clean` vs confident learning (cleanlab) on the same noisy data, measured in one run.

Data: an image folder exported by `noisefix data export NAME DEST --corrupt P` (its noisy_labels.csv holds the
noisy and the clean label). For each method: issue-detection precision / recall / F1 against the true wrong
labels, accuracy of the cleaned labels (flagged labels replaced by the method's suggestion), the test accuracy
of the same architecture retrained on the cleaned labels (early stopping on held-out cleaned labels), and
wall time. Methods:
- noisefix clean with its defaults (or `--model` / `--epochs` / `--optimizer` / `--lr`): a short training run
  with checkpoints 1, 2, 4, ...; every checkpoint x layer screened, relabel from the best held-out agreement.
- cleanlab in its cheap, strong configuration: K folds of `--cl-model` (default mlp_small: C*H*W-256-256-K)
  trained `--cl-epochs` epochs each (default 5) with Adam lr 1e-3, batch 128, on per-dataset normalized
  pixels; out-of-fold softmax probabilities, `cleanlab.filter.find_label_issues` (default
  prune_by_noise_rate); suggestion = argmax of the out-of-fold probabilities. `--cl-same-arch` adds a second
  cleanlab row with the architecture noisefix trained.
- memorize-then-probe (with --memorize E): the paper's path, train E epochs (to memorization), probe the final
  model, relabel.

Timing (issue 15): the data is read and decoded once, before either method, into the process's in-RAM cache of
decoded images (`load_seconds`), so both methods train from the same uint8 array with the same per-dataset
normalization. A method's `seconds` is what the issue compares: for noisefix the sum of its train, probe and
relabel phases (its own reading of the labels files, the image check and opening the run are `phases.load`,
reported beside it; `wall_seconds` is everything), for cleanlab the fold trainings, the out-of-fold predictions
and find_label_issues. `time_ratio_noisefix_over_this` = noisefix's seconds / the row's. The load average
(`os.getloadavg`) before and after the run goes to the output.

Usage: python bench/cleaning_vs_cleanlab.py DATA [--model auto] [--epochs 4] [--cl-epochs 5] [--memorize 0]
       [--repeat 3] [--no-retrain] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from noisefix.config import ProbeConfig, RelabelConfig, TrainConfig
from noisefix.data.folders import load_data
from noisefix.data.images import ImageSource, infer_spec
from noisefix.data.splits import make_folds
from noisefix.nn.device import seed_everything
from noisefix.nn.models import build_model
from noisefix.nn.training import EvalSet, evaluate, fit_with_holdout, train_model
from noisefix.scoring.issues import issue_metrics, label_accuracy
from noisefix.stages.pipeline import run_clean, run_pipeline


def cleanlab_oof_probs(source: ImageSource, labels: np.ndarray, cfg: TrainConfig, *, folds: int,
                       num_classes: int) -> np.ndarray:
    """Out-of-fold softmax probabilities (N, K) from `folds` models of cfg.model trained cfg.epochs each."""
    fold_ids = make_folds(labels, folds, seed=cfg.seed)
    probs = np.zeros((len(labels), num_classes), dtype=np.float64)
    for f in range(folds):
        seed_everything(cfg.seed + f)
        model = build_model(cfg.model, in_shape=source.shape, num_classes=num_classes)
        train_model(model, source, labels, cfg, indices=np.flatnonzero(fold_ids != f))
        model.eval()
        rows = np.flatnonzero(fold_ids == f)
        with torch.no_grad():
            for x, idx in source.batches(512, indices=rows):
                probs[idx.numpy()] = torch.softmax(model(source.to_input(x)), 1).double().numpy()
    return probs


def retrain_test_acc(data: Path, labels: np.ndarray, cfg: TrainConfig) -> float:
    """Test accuracy of cfg.model retrained on `labels` with early stopping on 10 % held-out labels."""
    splits = load_data(data)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, in_shape=ImageSource(splits.test).shape, num_classes=len(splits.train.classes))
    test = EvalSet(ImageSource(splits.test), splits.test.targets)
    source = ImageSource(noisy_splits(data).train)
    fit_with_holdout(model, source, labels, cfg, holdout=0.1, patience=10, seed=cfg.seed, eval_sets={"test": test})
    return evaluate(model, test, device=torch.device("cpu"))


def noisy_splits(data: Path):
    return load_data(data, data / "noisy_labels.csv")


def flagged_mask(issues_csv: Path, paths: list[str]) -> np.ndarray:
    """bool (N,) over `paths`: relabel's is_issue column (flagged, with or without a suggestion)."""
    import csv

    with open(issues_csv, newline="", encoding="utf-8") as fh:
        flagged = {row["path"] for row in csv.DictReader(fh) if row["is_issue"] in ("1", "True", "true")}
    return np.array([p in flagged for p in paths])


def method_summary(name: str, seconds: float, is_issue, suggested, given, clean) -> dict:
    cleaned = np.where(is_issue, suggested, given)
    return {"method": name, "seconds": seconds, **issue_metrics(is_issue, given, clean),
            "label_acc_before": label_accuracy(given, clean), "label_acc_after": label_accuracy(cleaned, clean),
            "_cleaned": cleaned}


def with_repeats(runs: list[dict]) -> dict:
    """The first run's row (the metrics of every repeat are the same seeded run; `phases` are the first run's)
    with `seconds` the median over the repeats and each repeat's seconds, phases and F1 (to show they agree)."""
    row = dict(runs[0])
    row.pop("arch", None)
    row["seconds"] = float(np.median([r["seconds"] for r in runs]))
    if len(runs) > 1:
        row["seconds_runs"] = [r["seconds"] for r in runs]
        row["f1_runs"] = [r["f1"] for r in runs]
        if "phases" in row:
            row["phases_runs"] = [r["phases"] for r in runs]
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default="auto", help="noisefix clean's model (default: its own choice)")
    ap.add_argument("--epochs", type=int, default=None, help="noisefix clean: training epochs (default: its own)")
    ap.add_argument("--cl-model", default="mlp_small", help="cleanlab: the model trained per fold")
    ap.add_argument("--cl-epochs", type=int, default=5, help="cleanlab: epochs per fold")
    ap.add_argument("--no-cl-same-arch", dest="cl_same_arch", action="store_false",
                    help="leave out the cleanlab row with clean's architecture (by default it is run when it differs "
                         "from --cl-model, else reported as the same row)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--memorize", type=int, default=0, help="also run memorize-then-probe with this epoch cap")
    ap.add_argument("--optimizer", default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--retrain-epochs", type=int, default=60)
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time noisefix and the small-MLP cleanlab row this many times, alternated; seconds are "
                         "the median (the machines are shared: one run's time can be off by a third)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from cleanlab.filter import find_label_issues

    noisy = noisy_splits(args.data).train
    given, clean = noisy.targets, noisy.clean_targets
    K = len(noisy.classes)
    overrides = {k: v for k, v in (("optimizer", args.optimizer), ("lr", args.lr)) if v is not None}
    results = []
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    source = ImageSource(noisy, infer_spec(noisy))  # decoded once for both methods; per-dataset normalized
    splits = noisy_splits(args.data)
    if splits.test is not None:
        ImageSource(splits.test, source.spec)         # clean evaluates and probes the test split too
    load_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        epochs = {"epochs": args.epochs} if args.epochs else {}

        def noisefix_once(rep: int) -> dict:
            t0 = time.perf_counter()
            out = run_clean(args.data, Path(tmp) / f"clean-{rep}", model=args.model,
                            labels_file=args.data / "noisy_labels.csv", **epochs, **overrides)
            wall = time.perf_counter() - t0
            rel = out.relabel
            cleaned_nf = load_data(args.data, rel.cleaned).train.targets
            flagged = flagged_mask(rel.out / "labels.csv", noisy.paths)
            arch = json.loads(out.train.run.model_json.read_text())["arch"]
            seconds = sum(out.seconds[p] for p in ("train", "probe", "relabel"))
            row = method_summary(f"noisefix clean ({arch}, {out.train.epochs} epochs)", seconds, flagged, cleaned_nf,
                                 given, clean)
            row.update(arch=arch, chosen=rel.summary["sources"][0], phases=out.seconds, wall_seconds=wall,
                       estimated_wrong=rel.summary["noise"]["wrong_fraction"])
            return row

        def cleanlab_once(arch: str) -> dict:
            t0 = time.perf_counter()
            cfg = TrainConfig(**{"model": arch, "epochs": args.cl_epochs, "optimizer": "adam", "lr": 1e-3,
                                 "batch_size": 128, **overrides})
            probs = cleanlab_oof_probs(source, given, cfg, folds=args.folds, num_classes=K)
            issues = find_label_issues(labels=given, pred_probs=probs)
            return method_summary(f"cleanlab ({arch}, {args.folds}-fold x {args.cl_epochs} epochs)",
                                  time.perf_counter() - t0, issues, probs.argmax(1), given, clean)

        nf_runs, cl_runs = [], []
        for rep in range(args.repeat):  # alternated, so a slower spell of the machine hits both methods
            nf_runs.append(noisefix_once(rep))
            cl_runs.append(cleanlab_once(args.cl_model))
        nf_model = nf_runs[0]["arch"]  # with_repeats drops it from the row
        results.append(with_repeats(nf_runs))
        results.append(with_repeats(cl_runs))
        results[-1]["time_ratio_noisefix_over_this"] = results[0]["seconds"] / results[-1]["seconds"]
        results[-1]["time_ratio_runs"] = [a["seconds"] / b["seconds"] for a, b in zip(nf_runs, cl_runs)]
        if args.cl_same_arch and nf_model != args.cl_model:
            results.append(cleanlab_once(nf_model))
            results[-1]["time_ratio_noisefix_over_this"] = results[0]["seconds"] / results[-1]["seconds"]
        if args.cl_same_arch and nf_model == args.cl_model:
            results.append({"method": f"cleanlab (clean's architecture {nf_model}): the row above", "same_as": 1})

        if args.memorize:
            t0 = time.perf_counter()
            mem = run_pipeline(args.data, Path(tmp) / "memorize", labels_file=args.data / "noisy_labels.csv",
                               train_cfg=TrainConfig.for_model("mlp" if args.model == "auto" else args.model,
                                                               epochs=args.memorize, **overrides),
                               probe_cfg=ProbeConfig(probes=("masc", "ncm")), relabel_cfg=RelabelConfig(),
                               retrain_cfg=None)
            cleaned_mem = load_data(args.data, mem.relabel.cleaned).train.targets
            results.append(method_summary(f"memorize ({mem.train.epochs} epochs) then probe", time.perf_counter() - t0,
                                    cleaned_mem != given, cleaned_mem, given, clean))

    if not args.no_retrain:
        rcfg = TrainConfig(**{"model": nf_model, "epochs": args.retrain_epochs, "optimizer": "adam", "lr": 1e-3,
                              "batch_size": 128, **overrides})
        results.append({"method": "no cleaning (given labels)", "_cleaned": given,
                        "label_acc_after": label_accuracy(given, clean)})
        for r in results:
            if "_cleaned" in r:
                r["retrained_test_acc"] = retrain_test_acc(args.data, r["_cleaned"], rcfg)
    for r in results:
        r.pop("_cleaned", None)
    report = {"data": str(args.data), "load_seconds": load_seconds, "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
              "torch_threads": torch.get_num_threads(), "results": results}
    print(json.dumps(report, indent=2, default=float))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
