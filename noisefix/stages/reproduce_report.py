"""Numbers and report files of `noisefix reproduce`: per-run summaries, report.md, report.json, report.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noisefix.config import Recipe
from noisefix.io.atomic import read_json, write_json, write_text
from noisefix.io.run_dir import ProbeDir, RelabelDir, ReproduceDir, RetrainDir, RunDir
from noisefix.scoring.selection import choose


def _scores(probe: Path) -> tuple[list[dict[str, Any]], str]:
    """The rows and label-only criterion of a probe folder ([] when it was not written)."""
    path = ProbeDir(probe).scores_json
    if not path.exists():
        return [], "agreement"
    scores = read_json(path)
    return scores["rows"], scores.get("criterion", "agreement")


def _picks(rows: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    """Label-only pick (max `criterion`: agreement with the given labels) and oracle pick (max test accuracy)."""
    if not rows:
        return {"label_only": None, "label_only_layer": None, "oracle": None, "oracle_layer": None}
    lo = choose(rows, by=criterion)
    orc = choose(rows, by="test_acc") if all(r["test_acc"] is not None for r in rows) else None
    return {"label_only": lo["test_acc"], "label_only_layer": lo["layer"],
            "oracle": None if orc is None else orc["test_acc"], "oracle_layer": None if orc is None else orc["layer"]}


def summarize_run(run: Path) -> dict[str, Any]:
    """The figures the report needs from one finished run directory (accuracies as fractions)."""
    files = RunDir(run)
    info = read_json(files.model_json)
    rows, criterion = _scores(files.probe)
    final = [r for r in rows if r["checkpoint"] == "final"]
    init = [r for r in rows if r["checkpoint"] == "init" and r["layer"] != "x"]
    out: dict[str, Any] = {
        "model_test_acc": info.get("final_test_acc"), "model_train_acc": info.get("final_train_acc"),
        "epochs": info.get("final_epoch"), "best_epoch": info.get("best_epoch"), "best_by": info.get("best_by"),
        "best_epoch_test_acc": info.get("best_test_acc"), "oracle_epoch_test_acc": info.get("oracle_test_acc"),
        "masc_by_layer": {r["layer"]: r["test_acc"] for r in final if r["probe"] == "masc"},
        "mean_k_by_layer": {r["layer"]: r["mean_k"] for r in final if r["probe"] == "masc"},
        "raw_input_masc": next((r["test_acc"] for r in final if r["layer"] == "x" and r["probe"] == "masc"), None),
        "overall": _picks(final, criterion),
        "criterion": criterion,
    }
    for probe in ("masc", "ncm", "logreg", "velpic"):
        out[probe] = _picks([r for r in final if r["probe"] == probe and r["layer"] != "x"], criterion)
    out["untrained_masc"] = _picks([r for r in init if r["probe"] == "masc"], criterion)
    clean_rows, clean_criterion = _scores(files.probe_clean)
    out["true_label_masc"] = _picks([r for r in clean_rows if r["layer"] != "x"], clean_criterion)
    relabel = RelabelDir(files.relabel).summary
    if relabel.exists():
        s = read_json(relabel)
        out["relabel"] = {"label_acc_before": s.get("label_accuracy_before"),
                          "label_acc_after": s.get("label_accuracy_after"),
                          "f1": s.get("issue_detection", {}).get("f1"), "n_issues": s["n_issues"]}
    retrain = RetrainDir(files.retrain).metrics
    if retrain.exists():
        out["retrain_test_acc"] = read_json(retrain)["test_acc_retrained"]
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _vs(ours: float | None, paper: float | None) -> str:
    if ours is None:
        return "-"
    if paper is None:
        return _pct(ours)
    return f"{100 * ours:.1f} ({paper:.1f}, {100 * ours - paper:+.1f})"


def _paper(recipe: Recipe, key: str, degree: float) -> float | None:
    table = {float(k): v for k, v in recipe.expected.get(key, {}).items()}
    return table.get(float(degree))


def write_report(out: Path, recipe: Recipe, results: list[dict[str, Any]], *, quick: bool) -> Path:
    """report.md + report.json + report.png under `out`; returns the markdown path."""
    lines = [f"# noisefix reproduce: {recipe.name}{' (quick)' if quick else ''}", "",
             recipe.description, "",
             f"Paper figures: {recipe.expected.get('source', 'none given')}.", "",
             "Accuracies in % on the clean test split. `ours (paper, diff)` where the paper has a figure. "
             "*Oracle* columns choose the layer (or epoch) on the test set, as the paper did; *label-only* picks "
             "use only the given (noisy) labels: agreement on the training images held out of training "
             "(`train --holdout`), or out-of-fold agreement when a run has none. Baseline probes (NCM, linear, "
             "VeLPIC, untrained network, true-label subspaces) show their oracle layer.", ""]
    if quick:
        lines += ["**Quick variant**: a small data subset, an epoch cap and possibly a larger learning rate (the "
                  "recipe's `quick:` block); the train-acc column shows whether a degree was memorized. With "
                  "far fewer images for both the network and the class subspaces the paper's figures are not "
                  "expected to match: use it to check the pipeline and the direction of the effect.", ""]
    lines += ["| p | seed | epochs | train acc (noisy) | model (final) | best epoch (label-only) | best epoch "
              "(oracle) | MASC label-only "
              "(layer) | MASC oracle (layer) | raw-input MASC | untrained MASC (oracle) | NCM | linear | VeLPIC | "
              "true-label MASC | label acc before -> after | issue F1 | retrained |",
              "|" + "---|" * 18]
    for r in results:
        p = r["degree"]
        rel = r.get("relabel", {})
        lines.append("| " + " | ".join([
            f"{p:g}", str(r["seed"]), str(r["epochs"]), _pct(r["model_train_acc"]),
            _vs(r["model_test_acc"], _paper(recipe, "model_test_acc", p)),
            _pct(r["best_epoch_test_acc"]) if r["best_by"] == "holdout" else "-", _pct(r["oracle_epoch_test_acc"]),
            f"{_pct(r['masc']['label_only'])} ({r['masc']['label_only_layer']})",
            f"{_vs(r['masc']['oracle'], _paper(recipe, 'masc_best', p))} ({r['masc']['oracle_layer']})",
            _pct(r["raw_input_masc"]), _pct(r["untrained_masc"]["oracle"]), _pct(r["ncm"]["oracle"]),
            _pct(r["logreg"]["oracle"]), _pct(r["velpic"]["oracle"]), _pct(r["true_label_masc"]["oracle"]),
            f"{_pct(rel.get('label_acc_before'))} -> {_pct(rel.get('label_acc_after'))}", _pct(rel.get("f1")),
            _pct(r.get("retrain_test_acc"))]) + " |")
    lines += ["", "MASC test accuracy per layer (final checkpoint) and mean subspace dimension k:", "",
              "| p | seed | " + " | ".join(results[0]["masc_by_layer"]) + " |" if results else "",
              "|" + "---|" * (2 + len(results[0]["masc_by_layer"])) if results else ""]
    for r in results:
        lines.append(f"| {r['degree']:g} | {r['seed']} | " + " | ".join(
            f"{_pct(acc)} (k {r['mean_k_by_layer'][layer]:.0f})" if r["mean_k_by_layer"].get(layer) is not None
            else _pct(acc) for layer, acc in r["masc_by_layer"].items()) + " |")
    lines += ["", "![MASC vs the model per corruption degree](report.png)", ""]
    files = ReproduceDir(out)
    write_text(files.report_md, "\n".join(lines) + "\n")
    write_json(files.report_json, {"recipe": recipe.name, "quick": quick, "expected": recipe.expected,
                                   "results": results})
    _plot(files.report_png, recipe, results)
    return files.report_md


def _plot(path: Path, recipe: Recipe, results: list[dict[str, Any]]) -> None:
    from noisefix.ui.plots import savefig, subplots

    degrees = [r["degree"] for r in results]
    fig, ax = subplots(figsize=(6.5, 4.2))
    series = [("model (final)", [r["model_test_acc"] for r in results], "k"),
              ("MASC oracle layer", [r["masc"]["oracle"] for r in results], "C0"),
              ("MASC label-only layer", [r["masc"]["label_only"] for r in results], "C1"),
              ("raw-input MASC", [r["raw_input_masc"] for r in results], "C2"),
              ("retrained on cleaned labels", [r.get("retrain_test_acc") for r in results], "C3")]
    for label, ys, color in series:
        ax.plot(degrees, [100 * y if y is not None else float("nan") for y in ys], marker="o", color=color,
                label=label)
    for key, color, label in (("model_test_acc", "k", "paper: model"), ("masc_best", "C0", "paper: MASC best")):
        table = {float(k): v for k, v in recipe.expected.get(key, {}).items()}
        if table:
            xs = sorted(table)
            ax.plot(xs, [table[x] for x in xs], linestyle="--", marker="x", color=color, alpha=0.6, label=label)
    ax.set_xlabel("corruption degree p")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(recipe.name, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    savefig(fig, path)
