"""What users see: progress, tables, summaries and plots. With cli.py the only module that prints.

Stages talk to a `Reporter` (the protocol below): `RichReporter` draws on the terminal, `NullReporter` (the
default in library calls and tests) stays silent; a stage turns its optional `reporter` argument into one
with `or_null`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence, runtime_checkable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from noisefix.errors import one_line
from noisefix.io.run_dir import RelabelDir
from noisefix.ui.review import quality_text


@runtime_checkable
class Reporter(Protocol):
    """What a stage may tell the user: lines, warnings, a progress bar and a table."""

    def info(self, message: str) -> None:
        """One line of rich markup: quote user strings in it (paths, names) with `escape`."""

    def warn(self, message: str) -> None:
        """One line of plain text (never read as markup: it may quote file names), shown as a warning."""

    def detail(self, message: str) -> None:
        """One line of rich markup shown only with --verbose (routes, plans), and each distinct text once."""

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

    def detail(self, message: str) -> None:
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

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self.console = console or Console()
        self.verbose = verbose
        self._details: set[str] = set()

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def detail(self, message: str) -> None:
        if self.verbose and message not in self._details:
            self._details.add(message)
            self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(one_line(message))}", highlight=False)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=12), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[status]}", table_column=Column(overflow="fold"))]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(description, total=total, status="")

            def update(advance: int = 1, **fields: Any) -> None:
                status = " ".join(f"{k} {_fmt_field(k, v)}" for k, v in fields.items())
                bar.update(task, advance=advance, status=status)

            yield update

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              highlight: Sequence[int] = ()) -> None:
        table = _compact_table(Text(title))  # titles and cells are plain text, not markup
        table.min_width = min(len(title), self.console.width)   # a narrow table does not break its title
        for j, col in enumerate(columns):
            if col in ("layer", "probe", "checkpoint", "pick"):                           # names stay whole
                table.add_column(col, justify="left", min_width=max((len(_fmt(row[j])) for row in rows), default=0))
            else:
                table.add_column(col, justify="right")
        for i, row in enumerate(rows):
            table.add_row(*(Text(_fmt(v)) for v in row), style="bold green" if i in highlight else None)
        self.console.print(table)

    def show_scores(self, result, top: int | None = None) -> None:
        """The probe table (`probe.ProbeOutcome`), fitting 80 columns: short headers, no all-empty column, no
        checkpoint column for one checkpoint; with `top`, only the `top` best rows by the label-only criterion
        (and the model's own row at the pick's checkpoint), saying how many of how many and where all are."""
        rows = list(result.rows) if top is None else sorted(result.rows, key=lambda r: -r[result.criterion])
        shown = rows if top is None else rows[:top]
        ckpts = [result.best["checkpoint"]] if top is not None else list(result.model)  # the model's own rows
        model = [{"checkpoint": c, "layer": "(output)", "probe": "model", **acc}
                 for c, acc in result.model.items() if c in ckpts]
        lines = model + shown
        several = len({r["checkpoint"] for r in result.rows}) > 1
        cols = [c for c in SCORE_COLUMNS if (c[0] != "checkpoint" or several)
                and any(r.get(c[0]) not in (None, "") for r in lines)]
        table = _compact_table(Text("probe scores (% of images)"))
        for key, header, left in cols:
            table.add_column(header, justify="left" if left else "right", no_wrap=True)
        for r in lines:
            table.add_row(*(Text(_score_cell(key, r.get(key))) for key, _, _ in cols),
                          style="bold green" if "best" in (r.get("pick") or "") else None)
        self.console.print(table)
        keys = {c[0] for c in cols}
        notes = [text for key, text in SCORE_NOTES if key in keys]
        self.console.print(Text("; ".join(notes) + ".", style="dim"))
        if len(shown) < len(result.rows):
            where = getattr(result, "out", None)
            self.console.print(f"{len(shown)} of {len(result.rows)} rows (best first); all in "
                               f"{escape(str(where / 'scores.csv')) if where else 'probe/scores.csv'}",
                               highlight=False)
        b, o = result.best, result.oracle
        text = (f"label-only pick: [bold]{escape(b['layer'])} / {b['probe']}[/]"
                + (f" @ {escape(str(b['checkpoint']))}" if several else ""))
        if o is not None:
            metric = "test_acc" if o["test_acc"] is not None else "clean_acc"
            text += (f" ({metric.replace('_', ' ')} {pct(b[metric])}); oracle pick: {escape(o['layer'])} / "
                     f"{o['probe']} ({pct(o[metric])}), {100 * (o[metric] - b[metric]):.1f} points apart")
        self.console.print(text, highlight=False)

    def show_issues(self, issues: Sequence[dict], *, n_issues: int, where: str) -> None:
        """The most suspicious labels as a table (rows: path, given, suggested, label_quality; "" suggested =
        left for review), saying how many of the flagged ones are shown and where all of them are."""
        if not issues:
            return
        self.console.print(f"top {len(issues)} of {n_issues} flagged labels (least likely right first):",
                           highlight=False)
        table = _compact_table(None)
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("image", overflow="fold", ratio=1)
        table.add_column("given", overflow="fold")
        table.add_column("suggested", overflow="fold")
        table.add_column("quality", justify="right", no_wrap=True)
        for i, r in enumerate(issues, 1):
            quality = r.get("label_quality")
            table.add_row(str(i), Text(r["path"]), Text(r["given_label"]), Text(r["suggested_label"] or "(review)"),
                          "-" if quality in (None, "") else quality_text(float(quality)))
        self.console.print(table)
        self.console.print(Text(f"quality: probability the given label is right. All {n_issues} in {where}",
                                style="dim"))

    def show_times(self, seconds: dict[str, float]) -> None:
        """One line: wall time per phase and in total."""
        if not seconds:
            return
        phases = ", ".join(f"{k} {seconds_text(v)}" for k, v in seconds.items() if k != "total")
        total = seconds.get("total", sum(seconds.values()))
        self.console.print(f"time: {phases}; total {seconds_text(total)}", highlight=False)

    def show_pipeline(self, outcome, top: int | None = None) -> None:
        """A chained run's (`pipeline.PipelineOutcome`) probe table, relabel summary and top issues, the retrain
        gain (if run) and the time per phase."""
        self.show_scores(outcome.probe, top=top)
        relabeled = outcome.relabel
        self.show_relabel(relabeled.summary)
        self.show_issues(relabeled.top_issues, n_issues=relabeled.summary["n_issues"],
                         where=str(RelabelDir(relabeled.out).issues))
        if outcome.retrain is not None:
            self.show_retrain(outcome.retrain.metrics)
        self.show_times(outcome.seconds)

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
                               f"{100 * n['level']:.0f} % interval; fitted on {n['fitted_on']}"
                               f"{_calibrated_on(n)})", highlight=False)
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
        """Test accuracy of the run's final model, its best checkpoint, the retrained one and the baseline."""
        if m["test_acc_retrained"] is None:
            held = m.get("holdout_agreement_retrained")
            self.console.print("retrained (no test split, so no gain measured)" + (
                f": agreement with its held-out cleaned labels {pct(held)} at epoch {m['retrain_best_epoch']}"
                if held is not None else ""), highlight=False)
            return
        epoch = f" (epoch {m['memorized_epochs']})" if m.get("memorized_epochs") is not None else ""
        text = (f"test accuracy: the run's final model{epoch} {pct(m['test_acc_memorized'])}, its best checkpoint "
                f"{pct(m['test_acc_best_epoch'])} -> retrained on cleaned labels {pct(m['test_acc_retrained'])}")
        if m.get("test_acc_baseline_given_labels") is not None:
            text += (f"; the same early-stopped training on the given labels: "
                     f"{pct(m['test_acc_baseline_given_labels'])} "
                     f"(gain from cleaning {100 * m['gain_vs_baseline']:+.1f} points)")
        self.console.print(text, highlight=False)


#: The probe table's columns: row key, header (at most two short lines), left-aligned.
SCORE_COLUMNS = [
    ("checkpoint", "ckpt", True), ("layer", "layer", True), ("probe", "probe", True), ("dim", "dim", False),
    ("mean_k", "mean\nk", False), ("agreement", "agree\noof", False), ("holdout_agreement", "agree\nheld", False),
    ("clean_acc", "clean\nacc", False), ("test_acc", "test\nacc", False), ("pick", "pick", True),
]
#: What each column means, printed under the table for the columns shown.
SCORE_NOTES = [
    ("mean_k", "mean k: MASC components per class"),
    ("agreement", "agree oof: agreement with the given labels, out-of-fold (trained-on images)"),
    ("holdout_agreement", "agree held: on held-out images (the pick's criterion)"),
    ("clean_acc", "clean acc: vs the clean labels"),
    ("test_acc", "test acc: on the test split"),
    ("pick", "pick: best = label-only, oracle = by clean numbers, both = the same row"),
]
_PCT_KEYS = {"agreement", "holdout_agreement", "clean_acc", "test_acc"}


def _score_cell(key: str, value: Any) -> str:
    """One probe-table cell: percentages with one decimal (no % sign), mean k with one decimal."""
    if value is None or value == "":
        return "-" if key != "pick" else ""
    if key in _PCT_KEYS:
        return f"{100 * value:.1f}"
    if key == "mean_k":
        return f"{value:.1f}"
    if key == "pick":
        return "both" if value == "best,oracle" else str(value)
    return str(value)


def _compact_table(title: Text | None) -> Table:
    """A table without outer borders or edge padding: the most columns in 80 characters."""
    from rich import box

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def seconds_text(seconds: float) -> str:
    """4.2s, 37s, 2m05s, 1h02m."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _fmt_field(key: str, value: Any) -> str:
    """A progress-bar field: accuracies (floats in [0, 1], not the loss) as percentages, the loss to 3 digits."""
    if isinstance(value, float) and key != "loss" and 0.0 <= value <= 1.0:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _calibrated_on(noise: dict) -> str:
    """", probabilities calibrated on N clean test images" when relabel's calibration used the test split."""
    n = noise.get("calibration", {}).get("clean_test_images", 0)
    return f", probabilities calibrated on {n} clean test images" if n else ""
