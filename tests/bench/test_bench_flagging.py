"""Smoke test: the flagging benchmark runs end to end on a tiny MNIST subset (so it cannot rot)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("cleanlab")


def test_flagging_benchmark_runs_on_a_tiny_mnist_subset(tmp_path, noisefix_data):
    spec = importlib.util.spec_from_file_location(
        "bench_flagging", Path(__file__).resolve().parents[2] / "bench" / "bench_flagging.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    doc = tmp_path / "cleaning.md"
    doc.write_text("# cleaning\n\nearlier results\n")
    argv = ["--settings", "mnist-s60", "--train-subset", "300", "--test-subset", "100", "--epochs", "2",
            "--memorize", "3", "--memorize-scan", "--probes", "ncm", "--cl-epochs", "1", "--folds", "2",
            "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"), "--doc", str(doc)]
    (result,) = bench.main(argv)
    methods = [r["method"] for r in result["rows"]]
    assert len(methods) == 10 and methods[0] == "noisefix clean, --flag noise-aware" and methods[-1].startswith("cleanlab")
    paper, scanned = result["rows"][3], result["rows"][6]           # the memorizing run, final only / every checkpoint
    assert paper["method"] == "noisefix memorize-then-probe, --flag noise-aware"
    assert {s["checkpoint"] for s in paper["sources"]} == {"final"}
    assert scanned["method"] == "noisefix memorize, every checkpoint probed, --flag noise-aware"
    assert {s["checkpoint"] for s in scanned["sources"]} <= {"init", "2", "final"}
    assert 0.4 < result["true_wrong"] < 0.7 and result["n_train"] == 300
    for r in result["rows"]:
        assert 0 <= r["f1"] <= 1 and 0 <= r["flagged"] <= 1 and r["seconds"] > 0
        assert r["auroc"] is None or 0 <= r["auroc"] <= 1
        assert 0 <= r["estimated_wrong"] <= 1
    saved = json.loads((tmp_path / "results" / "flagging-mnist-s60.json").read_text())
    assert saved["setting"] == "mnist-s60"
    text = doc.read_text()
    assert text.startswith("# cleaning\n\nearlier results") and text.count(bench.MARK_START) == 1
    assert "### mnist-s60" in text and "cleanlab on noisefix clean probabilities" in text
    bench.write_doc(doc, tmp_path / "results", "again")                                 # replaces, not appends
    assert doc.read_text().count(bench.MARK_START) == 1 and "`again`" in doc.read_text()
