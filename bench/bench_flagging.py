"""Issue 14 benchmark: noisefix's label_quality and noise-aware flags vs confident learning, side by side.

For each setting (a built-in dataset, a noise type and rate, a model) the data is exported with
`noisefix data export` semantics (noisy labels with the clean ones kept for evaluation only), then, in one
process and on the same noisy labels:
- noisefix `clean` (its defaults: short training with early checkpoints, every checkpoint x layer x probe
  scored, relabel from the best by held-out agreement), relabeled with `--flag noise-aware` (the default) and
  `--flag disagree` (the old rule) on the same probe outputs;
- the paper's memorize-then-probe path (train up to `--memorize` epochs towards 100 % train accuracy, probe
  the final model with MASC and NCM), relabeled with both rules; with `--memorize-scan` the same run also keeps
  clean's checkpoints (2, 4, 8, ...) and probes every one, and extra rows relabel from the best of them by
  held-out agreement (the follow-up paper's early peak; the final-checkpoint rows stay the paper's path);
- confident learning: `cleanlab.filter.find_label_issues` (default `prune_by_noise_rate`) on 5-fold
  out-of-sample probabilities of a 784-256-256-K MLP (Adam 1e-3, batch 128, `--cl-epochs` 5 per fold), and
  `cleanlab.rank.get_label_quality_scores` for the ranking;
- `find_label_issues` / `get_label_quality_scores` on noisefix's own calibrated probabilities (same
  evidence as noisefix's rows, cleanlab's threshold).
Per row: flagged fraction, precision / recall / F1 of the flags against the true wrong labels, AUROC and
average precision of the label-quality ranking, the estimated wrong fraction (noisefix: with its interval;
cleanlab: `cleanlab.count.num_label_issues` / N) next to the true one, wall time.

Noise rates are the paper's p (`--corrupt`): symmetric noise redraws a label uniformly, the true class
included, so the wrong fraction is about p (K - 1) / K; the tables give the measured wrong fraction.

Usage (from the repository root; results to docs/flagging-<setting>.json and a table in docs/cleaning.md):
    python bench/bench_flagging.py                                  # all six settings, full training sets
    python bench/bench_flagging.py --settings mnist-s5,mnist-p0 --train-subset 10000
    python bench/bench_flagging.py --work runs/flagging --reuse   # relabel the runs of an earlier --work call
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SETTINGS = {  # name: (dataset, p, noise, clean's model, the memorize path's model)
    "mnist-p0": ("mnist", 0.0, "symmetric", "auto", "mlp"),
    "fmnist-p0": ("fashion-mnist", 0.0, "symmetric", "cnn", "cnn"),
    "mnist-s5": ("mnist", 0.05, "symmetric", "auto", "mlp"),
    "fmnist-pf10": ("fashion-mnist", 0.10, "pairflip", "cnn", "cnn"),
    "mnist-s60": ("mnist", 0.60, "symmetric", "auto", "mlp"),
    "fmnist-s40": ("fashion-mnist", 0.40, "symmetric", "cnn", "cnn"),
}
#: --memorize-recipe: the paper's optimizer per model, or clean's Adam (lr 1e-3, batch 128), which reaches
#: memorization of a full 60,000-image set in a fraction of the paper's SGD epochs (lr 1e-3, batch 32)
MEMORIZE_RECIPES = {"paper": {}, "adam": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128}}
MARK_START, MARK_END = "<!-- bench_flagging:start -->", "<!-- bench_flagging:end -->"


def export(name: str, root: Path, args) -> Path:
    """The setting's noisy image folder under root (DEST/train, DEST/test, DEST/noisy_labels.csv)."""
    from noisefix.data.builtin import export_dataset, load_builtin

    dataset, p, noise = SETTINGS[name][:3]
    if args.reuse and (root / name / "noisy_labels.csv").exists():
        return root / name
    return export_dataset(load_builtin(dataset, data_root=args.data_root), root / name, corrupt=p, noise=noise,
                          seed=args.seed, train_subset=args.train_subset, test_subset=args.test_subset, force=True)


def pixels(split) -> torch.Tensor:
    """float32 (N, C*H*W) images of a split in [0, 1], in the split's order."""
    from noisefix.data.images import ImageSource, to_float

    source = ImageSource(split)
    out = torch.empty((len(split), int(np.prod(source.shape))))
    for x, idx in source.batches(1024):
        out[idx] = to_float(x).flatten(1)
    return out


def cleanlab_probs(X: torch.Tensor, labels: np.ndarray, num_classes: int, *, folds: int, epochs: int,
                   seed: int) -> np.ndarray:
    """(N, K) out-of-fold softmax probabilities of a 784-256-256-K MLP (Adam 1e-3, batch 128)."""
    from noisefix.data.splits import make_folds

    fold_of = make_folds(labels, folds, seed=seed)
    y = torch.as_tensor(labels)
    probs = np.zeros((len(labels), num_classes))
    for f in range(folds):
        torch.manual_seed(seed + f)
        net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, num_classes))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        train = np.flatnonzero(fold_of != f)
        rng = np.random.default_rng(seed + f)
        for _ in range(epochs):
            for batch in np.array_split(rng.permutation(train), max(1, len(train) // 128)):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(X[batch]), y[batch]).backward()
                opt.step()
        rows = np.flatnonzero(fold_of == f)
        with torch.no_grad():
            probs[rows] = torch.softmax(net(X[rows]), 1).double().numpy()
    return probs


def cleanlab_row(method: str, given, clean, probs, seconds: float) -> dict:
    """Confident learning's flags and ranking on (N, K) probabilities."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from noisefix.scoring.issues import issue_metrics, ranking_metrics

    t0 = time.perf_counter()
    flags = find_label_issues(labels=given, pred_probs=probs)
    scores = get_label_quality_scores(given, probs)
    return {"method": method, "flagged": float(flags.mean()), **issue_metrics(flags, given, clean),
            **ranking_metrics(scores, given, clean), "estimated_wrong": num_label_issues(given, probs) / len(given),
            "interval": None, "true_wrong": float(np.mean(given != clean)),
            "seconds": seconds + time.perf_counter() - t0}


def noisefix_rows(path: str, run: Path, seconds: float, ensemble: int, checkpoint: str | None = None) -> list[dict]:
    """Relabel `run` with both flag rules from its `ensemble` best rows (as the path's own relabel does; only
    `checkpoint`'s rows when given), and cleanlab on the run's calibrated probabilities."""
    from noisefix.config import RelabelConfig
    from noisefix.scoring.quality import find_issues
    from noisefix.stages.relabel import relabel_evidence, run_relabel, temperature_sample
    from noisefix.stages.runs import open_run

    loaded = open_run(run)
    rows = []
    for flag in ("noise-aware", "disagree"):
        t0 = time.perf_counter()
        s = run_relabel(loaded, RelabelConfig(flag=flag, ensemble=ensemble, checkpoint=checkpoint), force=True).summary
        noise = s["noise"]
        rows.append({"method": f"noisefix {path}, --flag {flag}", "flagged": s["issue_rate"],
                     **s["issue_detection"], **s["label_quality_ranking"],
                     "estimated_wrong": noise["wrong_fraction"], "interval": noise["interval"],
                     "true_wrong": s["true_wrong_fraction"], "n_review": s["n_review"],
                     "seconds": seconds + time.perf_counter() - t0, "sources": s["sources"]})
    evidence = relabel_evidence(loaded, RelabelConfig(ensemble=ensemble, checkpoint=checkpoint))
    t0 = time.perf_counter()
    found = find_issues(evidence.mats, evidence.given, fit_mask=evidence.fit_mask, trusted=evidence.trusted,
                        temperature_mask=temperature_sample(evidence), n_boot=0)
    rows.append(cleanlab_row(f"cleanlab on noisefix {path} probabilities", evidence.given, evidence.clean,
                             found.quality.probs, seconds + time.perf_counter() - t0))
    return rows


def trained(run: Path, reuse: bool, train) -> float:
    """Seconds `train()` took to make `run` (training and probing); with `reuse` and a finished run under the
    work folder, the seconds it took then (RUN/bench-seconds.json) without running it again."""
    record = run / "bench-seconds.json"
    if reuse and record.exists():
        return float(json.loads(record.read_text())["seconds"])
    t0 = time.perf_counter()
    train()
    seconds = time.perf_counter() - t0
    record.write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


def run_setting(name: str, root: Path, args) -> dict:
    from noisefix.config import ProbeConfig, RelabelConfig, TrainConfig
    from noisefix.data.folders import load_data
    from noisefix.stages.pipeline import CLEAN_ENSEMBLE, early_checkpoints, run_clean, run_pipeline

    dataset, p, noise, clean_model, memorize_model = SETTINGS[name]
    clean_model, memorize_model = args.model or clean_model, args.model or memorize_model
    data = export(name, root, args)
    labels = data / "noisy_labels.csv"
    noisy = load_data(data, labels).train
    given, clean, K = noisy.targets, noisy.clean_targets, len(noisy.classes)
    rows = []
    probes = {"probes": tuple(args.probes.split(","))} if args.probes else {}
    epochs = {"epochs": args.epochs} if args.epochs else {}
    seconds = trained(root / f"{name}-clean", args.reuse, lambda: run_clean(
        data, root / f"{name}-clean", model=clean_model, labels_file=labels, seed=args.seed, force=True, **probes,
        **epochs))
    rows += noisefix_rows("clean", root / f"{name}-clean", seconds, CLEAN_ENSEMBLE)
    clean_model = json.loads((root / f"{name}-clean" / "model.json").read_text())["arch"]  # "auto" resolved
    if args.memorize:
        # --memorize-scan: also keep clean's checkpoints (2, 4, 8, ...) of the memorizing run and probe them all
        scan = {"save_epochs": early_checkpoints(args.memorize)} if args.memorize_scan else {}
        seconds = trained(root / f"{name}-memorize", args.reuse, lambda: run_pipeline(
            data, root / f"{name}-memorize", labels_file=labels,
            train_cfg=TrainConfig.for_model(memorize_model, epochs=args.memorize, seed=args.seed,
                                            **MEMORIZE_RECIPES[args.memorize_recipe], **scan),
            probe_cfg=ProbeConfig(probes=probes.get("probes", ("masc", "ncm")), seed=args.seed,
                                  checkpoints=("all",) if scan else ("final",)),
            relabel_cfg=RelabelConfig(), retrain_cfg=None, force=True))
        ensemble = RelabelConfig().ensemble
        rows += noisefix_rows("memorize-then-probe", root / f"{name}-memorize", seconds, ensemble, checkpoint="final")
        if scan:
            rows += noisefix_rows("memorize, every checkpoint probed", root / f"{name}-memorize", seconds, ensemble)
    t0 = time.perf_counter()
    probs = cleanlab_probs(pixels(noisy), given, K, folds=args.folds, epochs=args.cl_epochs, seed=args.seed)
    rows.append(cleanlab_row(f"cleanlab ({args.folds}-fold MLP x {args.cl_epochs} epochs)", given, clean, probs,
                             time.perf_counter() - t0))
    return {"setting": name, "dataset": dataset, "p": p, "noise": noise, "model": clean_model,
            "memorize_model": memorize_model if args.memorize else None, "n_train": len(given),
            "true_wrong": float(np.mean(given != clean)), "rows": rows}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(result: dict) -> str:
    """One markdown section for one setting's result."""
    head = (f"### {result['setting']}: {result['dataset']}, {result['noise']} p = {result['p']:g} "
            f"({_pct(result['true_wrong'])} % of {result['n_train']:,} labels wrong), {result['model']}\n\n"
            "| method | flagged % | precision | recall | F1 | AUROC | AP | est. wrong % (95 %) | time s |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in result["rows"]:
        est = _pct(r["estimated_wrong"]) + ("" if not r.get("interval") else
                                            f" ({_pct(r['interval'][0])}-{_pct(r['interval'][1])})")
        lines.append(f"| {r['method']} | {_pct(r['flagged'])} | {_pct(r['precision'])} | {_pct(r['recall'])} | "
                     f"{_pct(r['f1'])} | {_pct(r['auroc'])} | {_pct(r['average_precision'])} | {est} | "
                     f"{r['seconds']:.0f} |")
    return head + "\n".join(lines) + "\n"


def write_doc(doc: Path, results_dir: Path, command: str) -> None:
    """Replace the benchmark's section of `doc` (between the markers) by the tables of every result file."""
    results = [json.loads(f.read_text()) for f in sorted(results_dir.glob("flagging-*.json"))]
    order = list(SETTINGS)
    results.sort(key=lambda r: order.index(r["setting"]) if r["setting"] in order else len(order))
    body = (f"{MARK_START}\n## Flagging: label_quality and the noise-aware rule vs confident learning\n\n"
            f"Measured by `{command}` (`bench/bench_flagging.py`; raw results in docs/flagging-*.json). "
            "Estimated wrong %: noisefix's estimate of the share of wrong labels with its bootstrap interval; "
            "cleanlab's `num_label_issues` / N.\n\n" + "\n".join(table(r) for r in results) + MARK_END)
    text = doc.read_text() if doc.exists() else ""
    if MARK_START in text and MARK_END in text:
        text = re.sub(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), lambda _: body, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {', '.join(SETTINGS)}")
    ap.add_argument("--train-subset", type=int, default=None, help="training images (default: all 60,000)")
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--model", default=None, help="override every setting's model (default: its own)")
    ap.add_argument("--epochs", type=int, default=None, help="noisefix clean: training epochs (default: its own)")
    ap.add_argument("--memorize", type=int, default=100, help="memorize-then-probe epoch cap (0: skip the path)")
    ap.add_argument("--memorize-recipe", choices=list(MEMORIZE_RECIPES), default="paper",
                    help="memorize-then-probe training: the paper's optimizer, or Adam lr 1e-3 batch 128")
    ap.add_argument("--memorize-scan", action="store_true",
                    help="memorize-then-probe: also keep the run's checkpoints 2, 4, 8, ... and probe every one "
                    "(extra rows relabel from the best of them; the final-checkpoint rows stay the paper's)")
    ap.add_argument("--probes", default=None, help="probes for both noisefix paths (default: clean's own; "
                    "masc,ncm for memorize-then-probe)")
    ap.add_argument("--cl-epochs", type=int, default=5, help="cleanlab: MLP epochs per fold")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="where data and runs go (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="with --work: relabel the runs a previous call left there "
                    "instead of training and probing again (their recorded times are reported)")
    ap.add_argument("--results", type=Path, default=Path("docs"), help="folder for flagging-<setting>.json")
    ap.add_argument("--doc", type=Path, default=Path("docs/cleaning.md"), help="markdown file for the tables")
    args = ap.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    unknown = [s for s in names if s not in SETTINGS]
    if args.reuse and args.work is None:
        ap.error("--reuse needs --work: the folder of the earlier call's runs")
    if unknown:
        ap.error(f"unknown settings {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    command = "python bench/bench_flagging.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    args.results.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or Path(tmp)
        for name in names:
            result = run_setting(name, root, args)
            (args.results / f"flagging-{name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
            write_doc(args.doc, args.results, command.strip())
            out.append(result)
    return out


if __name__ == "__main__":
    main()
