"""What the console shows fits 80 columns: the probe table, the top issues, the times, --verbose details."""

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from noisefix.ui.reporter import RichReporter, seconds_text

LAYERS = ["x", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=80, force_terminal=False, color_system=None), buf


def _result(checkpoints=("init", "1", "2", "final"), test=False):
    rows = []
    for c in checkpoints:
        for p in ("ncm", "masc"):
            for i, layer in enumerate(LAYERS):
                held = 0.3 + 0.05 * i + (0.01 if p == "masc" else 0)
                rows.append(dict(checkpoint=c, layer=layer, probe=p, dim=4096 * (i + 1), pick="",
                                 mean_k=8.7 if p == "masc" else None, agreement=held + 0.1,
                                 holdout_agreement=held, clean_acc=None, test_acc=held + 0.05 if test else None))
    best = max(rows, key=lambda r: r["holdout_agreement"])
    best["pick"] = "best"
    model = {c: dict(agreement=0.9, holdout_agreement=0.5, clean_acc=None, test_acc=0.7 if test else None)
             for c in checkpoints}
    return SimpleNamespace(rows=rows, model=model, criterion="holdout_agreement", best=best, oracle=None,
                           out=Path("runs/r/probe"))


def test_probe_table_fits_80_columns_without_truncating_names():
    console, buf = _console()
    RichReporter(console).show_scores(_result(), top=12)
    text = buf.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("──"))
    body = lines[rule + 1: next(i for i, line in enumerate(lines) if line.startswith("mean k:"))]
    assert len(body) == 13 and all(line.split()[1] in LAYERS + ["(output)"] for line in body)  # names whole
    assert "clean" not in text.split("mean k:")[0] and "test" not in text.split("mean k:")[0]  # all-empty: dropped
    assert "12 of 64 rows (best first); all in runs/r/probe/scores.csv" in text
    assert " 8.7 " in text and "8.7000" not in text  # one number format for mean k
    assert text.count("(output)") == 1  # the model's own row at the pick's checkpoint only


def test_probe_table_keeps_the_columns_that_have_values():
    console, buf = _console()
    RichReporter(console).show_scores(_result(checkpoints=("final",), test=True))
    text = buf.getvalue()
    assert "ckpt" not in text and "test" in text and "rows (best first)" not in text
    assert "…" not in text and max(map(len, text.splitlines())) <= 80


def test_top_issues_table_and_times():
    console, buf = _console()
    reporter = RichReporter(console)
    issues = [dict(path="cats/a <b> [1].png", given_label="cat", suggested_label="dog", label_quality="0.0001"),
              dict(path="x/" + "long_folder_name/" * 6 + "img.png", given_label="Ankle boot",
                   suggested_label="", label_quality="0.3")]
    reporter.show_issues(issues, n_issues=96, where="runs/r/relabel/labels.csv")
    reporter.show_times({"train": 12.3, "probe": 95.2, "relabel": 0.8, "total": 108.3})
    text = buf.getvalue()
    assert "top 2 of 96 flagged labels" in text and "cats/a <b> [1].png" in text
    assert "<0.001" in text and "0.300" in text and "(review)" in text
    assert "time: train 12s, probe 1m35s, relabel 0.8s; total 1m48s" in text
    assert max(map(len, text.splitlines())) <= 80


def test_details_only_with_verbose_and_once():
    console, buf = _console()
    RichReporter(console).detail("routes: x: gram")
    assert buf.getvalue() == ""
    console, buf = _console()
    verbose = RichReporter(console, verbose=True)
    for _ in range(3):
        verbose.detail("routes: x: gram")
    assert buf.getvalue().count("routes:") == 1


def test_seconds_text():
    assert [seconds_text(s) for s in (4.24, 37.2, 125, 3725)] == ["4.2s", "37s", "2m05s", "1h02m"]
