"""Every plot noisefix draws (probe/layers.png, probe/dynamics.png), written atomically through `savefig`.

Both show the number the label-only pick is made by (`criterion`: agreement with the given labels on held-out
images, or out-of-fold agreement when nothing was held out) and mark the pick; accuracies that need clean
labels (test, clean) are drawn only when known, as thinner dashed references. Legends list only drawn lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CRITERION_LABELS = {
    "holdout_agreement": "held-out agreement with the given labels (%)",
    "agreement": "out-of-fold agreement with the given labels (%)",
}
REFERENCE_LABELS = {"test_acc": "test accuracy", "clean_acc": "accuracy vs clean labels"}


def savefig(fig, path: Path) -> None:
    import io

    from noisefix.io.atomic import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes(path, buf.getvalue())


def subplots(*args, figsize: tuple[float, float], **kwargs):
    """A new figure and its axes, as `pyplot.subplots` makes them, without pyplot: files only, no display, no
    global figure registry to close, and the first plot of a process about 0.3 s sooner (pyplot's import and
    backend set-up are most of a `clean` run's plotting time)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def reference_metric(rows: list[dict[str, Any]]) -> str | None:
    """test_acc when every row has it, else clean_acc when every row has it, else None."""
    return next((m for m in ("test_acc", "clean_acc") if rows and all(r.get(m) is not None for r in rows)), None)


def y_label(criterion: str, ref: str | None) -> str:
    """What the y axis shows: the criterion (solid) and, when drawn, the reference accuracy (dashed)."""
    text = CRITERION_LABELS.get(criterion, criterion)
    return text if ref is None else f"solid: {text}\ndashed: {REFERENCE_LABELS[ref]} (%)"


def _pct(value) -> float:
    return float("nan") if value is None else 100 * value


def _mark_pick(ax, x: float, y: float, text: str) -> None:
    ax.plot([x], [y], marker="*", markersize=16, color="gold", markeredgecolor="black", zorder=5,
            linestyle="none", label="label-only pick")
    ax.annotate(text, (x, y), xytext=(6, 8), textcoords="offset points", fontsize=8, zorder=6)


def plot_dynamics(path: Path, rows: list[dict[str, Any]], *, epochs: dict[str, int], criterion: str,
                  model_acc: dict[str, dict[str, float | None]]) -> None:
    """probe/dynamics.png: one panel per probe, the criterion per layer over the checkpoints (solid), the
    reference accuracy when known (dashed), the model's own criterion (black); the pick starred.

    Checkpoints are evenly spaced on x and labelled by epoch (0 = the untrained network), not drawn to scale.
    """
    rows = [r for r in rows if r["checkpoint"] in epochs]
    ckpts = sorted({r["checkpoint"] for r in rows}, key=lambda c: epochs[c])
    pos = {c: i for i, c in enumerate(ckpts)}
    probes = list(dict.fromkeys(r["probe"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    ref = reference_metric(rows)
    fig, axes = subplots(1, len(probes), figsize=(3.6 * len(probes) + 1.6, 3.8), sharey=True, squeeze=False)
    for ax, probe in zip(axes[0], probes):
        for i, layer in enumerate(layers):
            pts = sorted((pos[r["checkpoint"]], r) for r in rows if r["probe"] == probe and r["layer"] == layer)
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ax.plot(xs, [_pct(r[criterion]) for _, r in pts], marker="o", markersize=3.5, color=f"C{i % 10}",
                    label=layer)
            if ref is not None:
                ax.plot(xs, [_pct(r[ref]) for _, r in pts], linestyle="--", linewidth=0.9, color=f"C{i % 10}",
                        alpha=0.6)
        model = [(pos[c], model_acc[c][criterion]) for c in ckpts if model_acc.get(c, {}).get(criterion) is not None]
        if model:
            ax.plot([x for x, _ in model], [_pct(v) for _, v in model], color="black", marker="s", markersize=3.5,
                    label="model output")
        for r in rows:
            if r["probe"] == probe and "best" in (r.get("pick") or ""):
                _mark_pick(ax, pos[r["checkpoint"]], _pct(r[criterion]),
                           f"{r['layer']} @ epoch {epochs[r['checkpoint']]}")
        ax.set_title(probe, fontsize=10)
        ax.margins(y=0.1)
        ax.set_xticks(range(len(ckpts)), [str(epochs[c]) for c in ckpts])
        ax.set_xlabel("checkpoint epoch (evenly spaced)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(y_label(criterion, ref), fontsize=8)
    _figure_legend(fig, axes[0], ref)
    fig.suptitle("label-only criterion over training, per probe" + (
        f" (dashed: {REFERENCE_LABELS[ref]}, needs clean labels)" if ref else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    savefig(fig, path)


def _figure_legend(fig, axes, ref: str | None) -> None:
    """One legend for all panels, right of them: every drawn line once, plus what dashes mean if drawn."""
    from matplotlib.lines import Line2D

    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if ref is not None:
        handles[f"dashed: {REFERENCE_LABELS[ref]}"] = Line2D([], [], color="grey", linestyle="--")
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8, frameon=False)


def plot_layers(path: Path, rows: list[dict[str, Any]], *, criterion: str, model_acc: dict[str, float | None],
                title: str) -> None:
    """probe/layers.png: the criterion per layer (one line per probe) at one checkpoint, the model's own as a
    black line, the reference accuracy dashed when known; the pick starred when it is at this checkpoint."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    ref = reference_metric(rows)
    fig, ax = subplots(figsize=(max(6.0, 0.9 * len(layers) + 2.5) + 2.2, 4.4))
    x = range(len(layers))
    for i, probe in enumerate(dict.fromkeys(r["probe"] for r in rows)):
        by_layer = {r["layer"]: r for r in rows if r["probe"] == probe}
        ax.plot(x, [_pct(by_layer[ly][criterion]) if ly in by_layer else float("nan") for ly in layers],
                marker="o", color=f"C{i % 10}", label=probe)
        if ref is not None:
            ax.plot(x, [_pct(by_layer[ly][ref]) if ly in by_layer else float("nan") for ly in layers],
                    linestyle="--", linewidth=0.9, alpha=0.6, color=f"C{i % 10}",
                    marker="_", markersize=10)  # a screened probe's lone layers show without a line
    if model_acc.get(criterion) is not None:
        ax.axhline(_pct(model_acc[criterion]), color="black", linewidth=1,
                   label=f"model output ({_pct(model_acc[criterion]):.1f}%)")
    for r in rows:
        if "best" in (r.get("pick") or ""):
            _mark_pick(ax, layers.index(r["layer"]), _pct(r[criterion]), f"{r['layer']} / {r['probe']}")
    if ref is not None:
        ax.plot([], [], color="grey", linestyle="--", label=f"dashed: {REFERENCE_LABELS[ref]}")
    ax.set_xticks(list(x), layers, rotation=30, ha="right")
    ax.set_ylabel(y_label(criterion, ref), fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.12)  # room for the pick's label
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside, not over, the data
    fig.tight_layout()
    savefig(fig, path)
