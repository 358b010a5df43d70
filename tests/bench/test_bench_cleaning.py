"""Smoke test: the cleanlab comparison script runs end to end on a tiny digits export (so it cannot rot)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("cleanlab")


def test_cleaning_benchmark_runs_on_tiny_digits(tmp_path):
    from noisefix.data.builtin import export_dataset, load_builtin

    spec = importlib.util.spec_from_file_location(
        "bench_cleaning", Path(__file__).resolve().parents[2] / "bench" / "cleaning_vs_cleanlab.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = export_dataset(load_builtin("digits"), tmp_path / "d", corrupt=0.4, seed=0, train_subset=300,
                          test_subset=100)
    results = bench.main([str(data), "--epochs", "2", "--cl-epochs", "1", "--folds", "2", "--model", "cnn",
                          "--optimizer", "adam", "--lr", "0.002", "--retrain-epochs", "2", "--repeat", "2"])
    methods = [r["method"] for r in results]
    assert methods[0].startswith("noisefix") and len(methods) == 4
    assert methods[1].startswith("cleanlab (mlp_small") and methods[2].startswith("cleanlab (cnn")  # same-arch row
    for r in results[:3]:
        assert 0 <= r["f1"] <= 1 and r["label_acc_before"] < 0.75 and r["seconds"] > 0
    assert all(0 <= r["retrained_test_acc"] <= 1 for r in results)
    assert len(results[0]["seconds_runs"]) == 2 and len(results[1]["time_ratio_runs"]) == 2  # --repeat 2, alternated
    assert results[0]["seconds"] == pytest.approx(sum(results[0]["seconds_runs"]) / 2)      # the median of two
