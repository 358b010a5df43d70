"""Every plot noisefix draws (probe/layers.png, probe/dynamics.png), written atomically through `savefig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def savefig(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    from noisefix.io.atomic import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def plot_dynamics(path: Path, rows: list[dict[str, Any]], *, epochs: dict[str, int], criterion: str,
                  model_acc: dict[str, dict[str, float | None]], probe: str = "masc") -> None:
    """probe/dynamics.png: per layer, the label-only criterion (solid) and, when known, test accuracy (dashed)
    of `probe` over training epochs; the model's own test accuracy in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["probe"] == probe and r["checkpoint"] in epochs]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, layer in enumerate(layers):
        pts = sorted((epochs[r["checkpoint"]], r) for r in rows if r["layer"] == layer)
        xs = [e for e, _ in pts]
        ax.plot(xs, [100 * r[criterion] for _, r in pts], marker="o", color=f"C{i % 10}", label=layer)
        if all(r["test_acc"] is not None for _, r in pts):
            ax.plot(xs, [100 * r["test_acc"] for _, r in pts], linestyle="--", color=f"C{i % 10}", alpha=0.6)
    model = sorted((epochs[c], a["test_acc"]) for c, a in model_acc.items() if c in epochs and a["test_acc"] is not None)
    if model:
        ax.plot([e for e, _ in model], [100 * a for _, a in model], color="black", marker="s", label="model (test)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{probe}: {criterion.replace('_', ' ')} with the given labels (solid), test accuracy (dashed)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    savefig(fig, path)


def plot_layers(path: Path, rows: list[dict[str, Any]], *, model_acc: dict[str, float | None],
                title: str) -> None:
    """probe/layers.png: accuracy per layer, one line per probe, the model's accuracy as reference lines.

    Uses test accuracy when the rows have it, else accuracy against clean labels, else label agreement.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = next((m for m in ("test_acc", "clean_acc", "agreement") if all(r.get(m) is not None for r in rows)),
                  "agreement")
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(layers) + 2), 4.2))
    for probe in dict.fromkeys(r["probe"] for r in rows):
        ys = {r["layer"]: r[metric] for r in rows if r["probe"] == probe}
        ax.plot(range(len(layers)), [100 * ys.get(layer, float("nan")) for layer in layers], marker="o",
                label=probe)
        if metric != "agreement":
            agree = {r["layer"]: r["agreement"] for r in rows if r["probe"] == probe}
            ax.plot(range(len(layers)), [100 * agree.get(layer, float("nan")) for layer in layers],
                    linestyle=":", alpha=0.5, color=ax.lines[-1].get_color())
    styles = {"test_acc": "--", "clean_acc": "-.", "agreement": ":"}
    for name, acc in model_acc.items():
        if acc is not None:
            ax.axhline(100 * acc, color="black", linestyle=styles.get(name, "--"), linewidth=1,
                       label=f"model {name.replace('_', ' ')} ({100 * acc:.1f}%)")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel({"test_acc": "test accuracy (%)", "clean_acc": "out-of-fold accuracy vs clean labels (%)",
                   "agreement": "out-of-fold agreement with given labels (%)"}[metric])
    ax.set_title(title + ("" if metric == "agreement" else "\n(dotted: agreement with the given labels)"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    savefig(fig, path)
