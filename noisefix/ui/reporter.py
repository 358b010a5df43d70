"""What users see: progress, tables, summaries and plots. With cli.py the only module that prints.

Stages talk to a `Reporter` (the protocol below): `RichReporter` draws on the terminal, `NullReporter` (the
default in library calls and tests) stays silent; a stage turns its optional `reporter` argument into one
with `or_null`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence, runtime_checkable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table


@runtime_checkable
class Reporter(Protocol):
    """What a stage may tell the user: lines, warnings, a progress bar and a table."""

    def info(self, message: str) -> None:
        """One line of rich markup."""

    def warn(self, message: str) -> None:
        """One line, shown as a warning."""

    def progress(self, description: str, total: int | None) -> ContextManager[Callable[..., None]]:
        """A context yielding `advance(n=1, **fields)`: n steps done, `fields` shown beside the bar."""

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              highlight: Sequence[int] = ()) -> None:
        """A table; rows whose index is in `highlight` stand out."""


class NullReporter:
    """Swallows every message; stages use it when no reporter is given."""

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        yield lambda advance=1, **fields: None

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              highlight: Sequence[int] = ()) -> None:
        pass


def or_null(reporter: Reporter | None) -> Reporter:
    """`reporter`, or a silent NullReporter when None (library calls, tests, ranks other than 0)."""
    return reporter if reporter is not None else NullReporter()


class RichReporter:
    """Progress bars, tables and the stages' result summaries on a rich console (stderr for progress, stdout
    for results)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(description, total=total, status="")

            def update(advance: int = 1, **fields: Any) -> None:
                status = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
                bar.update(task, advance=advance, status=status)

            yield update

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              highlight: Sequence[int] = ()) -> None:
        table = Table(title=title, title_justify="left")
        for col in columns:
            table.add_column(col, justify="left" if col in ("layer", "probe", "checkpoint", "pick") else "right")
        for i, row in enumerate(rows):
            table.add_row(*(_fmt(v) for v in row), style="bold green" if i in highlight else None)
        self.console.print(table)

    def show_scores(self, result, top: int | None = None) -> None:
        """The probe table; with `top`, only the model rows and the `top` best rows by the label-only criterion."""
        multi = len({r["checkpoint"] for r in result.rows}) > 1
        held = any(r["holdout_agreement"] is not None for r in result.rows)
        cols = (["checkpoint"] if multi else []) + ["layer", "probe", "dim", "mean k", "agree (trained-on, oof)"] + (
            ["agree (held-out)"] if held else []) + ["clean acc", "test acc", "pick"]

        def line(ckpt, layer, probe, dim, k, agree, held_agree, clean, test, pick):
            return (([ckpt] if multi else []) + [layer, probe, dim, k, pct(agree)]
                    + ([pct(held_agree)] if held else []) + [pct(clean), pct(test), pick])

        rows, marks = [], []
        for ckpt, acc in result.model.items():
            rows.append(line(ckpt, "(model output)", "model", None, None, acc["agreement"], acc.get("holdout_agreement"),
                             acc["clean_acc"], acc["test_acc"], ""))
        shown = result.rows if top is None else sorted(result.rows, key=lambda r: -r[result.criterion])[:top]
        for r in shown:
            if r["pick"]:
                marks.append(len(rows))
            rows.append(line(r["checkpoint"], r["layer"], r["probe"], r["dim"],
                             None if r["mean_k"] is None else round(r["mean_k"], 1), r["agreement"],
                             r["holdout_agreement"], r["clean_acc"], r["test_acc"], r["pick"]))
        how = ("agreement with the given labels on held-out images" if result.criterion == "holdout_agreement"
               else "out-of-fold agreement with the given labels")
        self.table(f"probe scores (best = label-only pick by {how}; oracle = pick by clean numbers)",
                       cols, rows, highlight=marks)
        b, o = result.best, result.oracle
        text = f"label-only pick: [bold]{b['layer']} / {b['probe']}[/]" + (f" @ {b['checkpoint']}" if multi else "")
        if o is not None:
            metric = "test_acc" if o["test_acc"] is not None else "clean_acc"
            text += (f" ({metric.replace('_', ' ')} {pct(b[metric])}); oracle pick: {o['layer']} / {o['probe']} "
                     f"({pct(o[metric])}), {100 * (o[metric] - b[metric]):.1f} points apart")
        self.console.print(text, highlight=False)

    def show_pipeline(self, outcome, top: int | None = None) -> None:
        """A chained run's (`pipeline.PipelineOutcome`) probe table, relabel summary and, if run, retrain gain."""
        self.show_scores(outcome.probe, top=top)
        self.show_relabel(outcome.relabel.summary)
        if outcome.retrain is not None:
            self.show_retrain(outcome.retrain.metrics)

    def show_relabel(self, s: dict) -> None:
        """The relabel summary line (and issue detection against clean labels, when known)."""
        src = ", ".join(f"{r['layer']}/{r['probe']}" + (f"@{r['checkpoint']}" if r["checkpoint"] != "final" else "")
                        for r in s["sources"])
        review = f", {s['n_review']} of them for review (no strong suggestion)" if s.get("n_review") else ""
        self.console.print(f"relabel from {src}: {s['n_issues']} of {s['n_images']} labels flagged "
                           f"({pct(s['issue_rate'])}, rule {s.get('flag', 'disagree')}){review}", highlight=False)
        if "noise" in s:
            n = s["noise"]
            low, high = n["interval"]
            self.console.print(f"estimated wrong labels: {pct(n['wrong_fraction'])} ({pct(low)}-{pct(high)}, "
                               f"{100 * n['level']:.0f} % interval; fitted on {n['fitted_on']})", highlight=False)
        if "issue_detection" in s:
            d = s["issue_detection"]
            self.console.print(f"against the clean labels: precision {pct(d['precision'])}, recall "
                               f"{pct(d['recall'])}, F1 {pct(d['f1'])}; label accuracy "
                               f"{pct(s['label_accuracy_before'])} -> {pct(s['label_accuracy_after'])}",
                               highlight=False)
        if s.get("true_wrong_fraction") is not None:
            r = s.get("label_quality_ranking") or {}
            auroc = f"; AUROC of label quality {pct(r['auroc'])}" if r.get("auroc") is not None else ""
            self.console.print(f"true wrong labels: {pct(s['true_wrong_fraction'])}{auroc}", highlight=False)

    def show_retrain(self, m: dict) -> None:
        """Test accuracy of the memorized model, its best checkpoint, the retrained one and the baseline."""
        if m["test_acc_retrained"] is None:
            self.console.print("retrained; no test split to measure the gain on")
            return
        text = (f"test accuracy: memorized model {pct(m['test_acc_memorized'])}, its best checkpoint "
                f"{pct(m['test_acc_best_epoch'])} -> retrained on cleaned labels {pct(m['test_acc_retrained'])}")
        if m.get("test_acc_baseline_given_labels") is not None:
            text += (f"; the same early-stopped training on the given labels: "
                     f"{pct(m['test_acc_baseline_given_labels'])} "
                     f"(gain from cleaning {100 * m['gain_vs_baseline']:+.1f} points)")
        self.console.print(text, highlight=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
