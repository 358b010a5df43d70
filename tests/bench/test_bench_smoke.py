"""Smoke test: each benchmark script's main() runs end to end at a tiny size, so the scripts cannot rot."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psutil")

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_synthetic_stream_is_split_independent():
    data = _load("bench_masc").Synthetic(24, 3, seed=1)
    X, y = data.batch(0, 700, block=256)
    parts = [data.batch(i, 100, block=256) for i in range(0, 700, 100)]
    np.testing.assert_array_equal(X, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(y, np.concatenate([p[1] for p in parts]))
    assert X.min() >= 0


def test_bench_masc_main(tmp_path):
    out = tmp_path / "masc.md"
    rows = _load("bench_masc").main(["--n", "600", "--dims", "16,32", "--classes", "3", "--large-d", "32",
                                     "--paper-n-large", "300", "--cross-fit-max-d", "32", "--out", str(out)])
    assert [(r["d"], r["n"]) for r in rows] == [(16, 600), (32, 600), (32, 300)]
    compared = [r for r in rows if "agree" in r]
    assert len(compared) == 2 and all(r["agree"] >= 0.999 for r in compared)
    assert all("cf_total" in r for r in rows)
    assert "| 32 | 300 |" in out.read_text()


def test_bench_scaling_main(tmp_path):
    out = tmp_path / "scaling.md"
    rows = _load("bench_scaling").main(["--ns", "500,1500", "--dim", "16", "--classes", "3", "--block", "256",
                                        "--out", str(out)])
    assert [r["n"] for r in rows] == [500, 1500]
    assert all(r["total"] > 0 and r["mem"] >= 0 for r in rows)
    assert "| 1,500 |" in out.read_text()


def test_bench_masc_profile_eigh(capsys):
    assert _load("bench_masc").main(["--profile-eigh", "48", "--classes", "3"]) == []
    assert "Lanczos" in capsys.readouterr().out


def test_bench_extract_main(tmp_path):
    out = tmp_path / "extract.md"
    rows = _load("bench_extract").main(["--models", "mlp", "--n", "96", "--batch", "32", "--paper-n", "4",
                                        "--device", "cpu", "--dtypes", "fp32,bf16", "--out", str(out)])
    assert [(r["batch"], "paper" in r) for r in rows] == [(32, False), (1, True)]  # bf16 skipped on CPU
    assert rows[0]["forward"] > 0 and rows[0]["extract"] > 0 and rows[1]["paper"] > 0
    assert "| mlp | fp32 | 32 |" in out.read_text()


def test_bench_probe_main(tmp_path, make_image_folder):
    from noisefix.config import TrainConfig
    from noisefix.stages.train import run_train

    data = make_image_folder(train_per_class=20, test_per_class=5)
    run = tmp_path / "run"
    run_train(data, TrainConfig.for_model("mlp", epochs=2, batch_size=16, holdout=0.0), out=run)
    out = tmp_path / "probe.md"
    (row,) = _load("bench_probe").main([str(run), "--folds", "2", "--out", str(out)])
    assert row["nf_s"] > 0 and row["screened_s"] > 0 and row["p_s"] > 0 and row["decode_s"] > 0
    assert row["nf_pick"].split("/")[0] in row["nf_acc"] and row["p_pick"].split("/")[0] in row["p_acc"]
    assert set(row["p_acc"]) <= set(row["nf_acc"]) and all(0 <= a <= 1 for a in row["p_acc"].values())
    assert not (run / "bench-probe").exists()          # the scratch probe output is removed
    assert "| run | mlp | 60 / 15 |" in out.read_text()


def test_bench_fold_exactness_main(tmp_path, make_image_folder):
    from noisefix.config import TrainConfig
    from noisefix.stages.train import run_train

    data = make_image_folder(train_per_class=20, test_per_class=5)
    run = tmp_path / "run"
    run_train(data, TrainConfig.for_model("mlp", epochs=1, batch_size=16, holdout=0.0), out=run)
    out = tmp_path / "folds.md"
    rows = _load("bench_fold_exactness").main([str(run), "--folds", "2", "--out", str(out)])
    assert rows and {r["route"] for r in rows} <= {"gram", "moments"}
    for r in rows:
        assert 0 <= r["differ"] <= 1 and np.isfinite(r["max_diff"]) and r["refined_s"] > 0 and r["exact_s"] > 0
    assert "| run | " + rows[0]["layer"] + " |" in out.read_text()


def test_bench_loader_main(tmp_path):
    out = tmp_path / "loader.md"
    rates, mems = _load("bench_loader").main(["--sizes", "40,80", "--real", "6", "--min-side", "20", "--max-side",
                                              "40", "--models", "cnn", "--workers", "0,1", "--batch", "8",
                                              "--seconds", "0.2", "--mem-batches", "2", "--work", str(tmp_path),
                                              "--out", str(out)])
    (row,) = rates
    assert row["forward"] > 0 and all(row[k] > 0 for k in ("load0", "load1", "both0", "both1"))
    assert [m["n"] for m in mems] == [40, 80] and all(m["peak"] >= m["base"] > 0 for m in mems)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]         # the generated folders are removed
    assert "| cnn | 3x32x32 |" in out.read_text() and "| 80 |" in out.read_text()


def test_bench_clothing1m_lists_main(tmp_path):
    out = tmp_path / "lists.md"
    rows = _load("bench_clothing1m_lists").main(["--sizes", "200", "--real", "3", "--work", str(tmp_path),
                                                 "--out", str(out)])
    assert [(r["n"], r["train"]) for r in rows] == [(200, 198)] and rows[0]["load_s"] > 0
    assert not [p for p in tmp_path.iterdir() if p.is_dir()] and "| 200 | 198 |" in out.read_text()


def test_clean_variants_main(tmp_path, capsys):
    import json

    from noisefix.data.builtin import export_dataset, load_builtin

    data = export_dataset(load_builtin("digits"), tmp_path / "d", corrupt=0.4, seed=0, train_subset=200,
                          test_subset=100)
    _load("clean_variants").main([str(data), '[{"epochs": 2}]'])
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert row["variant"] == {"epochs": 2} and 0 <= row["f1"] <= 1 and row["seconds"] > 0
    assert 0 < row["estimated_wrong"] < 1 and row["sources"]


def test_test_split_noise_check(tmp_path):
    from noisefix.data.builtin import export_dataset, load_builtin
    from noisefix.stages.pipeline import run_clean

    data = export_dataset(load_builtin("digits"), tmp_path / "d", corrupt=0.3, seed=0, train_subset=300,
                          test_subset=200)
    out = run_clean(data, tmp_path / "run", labels_file=data / "noisy_labels.csv", epochs=2, seed=0)
    r = _load("test_split_noise_check").check(str(out.train.run.path), halvings=2)
    assert 0.1 < r["true"] < 0.4 and all(0 <= r[k] <= 1 for k in ("estimate", "estimate_half", "eps"))
    assert r["corrected"] <= r["estimate_half"] + 1e-12


def test_bench_layout_main(tmp_path):
    out = tmp_path / "layout.md"
    rows = _load("bench_layout").main(["--cases", "cnn:1x12x12", "--n", "16", "--batch", "8", "--train-batch", "8",
                                       "--repeat", "1", "--out", str(out)])
    assert len(rows) == 1 and rows[0]["diff"] < 1e-4                 # the same activations in either layout
    assert all(rows[0][f"{what}_{k}"] > 0 for what in ("extract", "train") for k in ("channels_last", "contiguous"))
    assert "| cnn : 1x12x12 : 16 |" in out.read_text()
