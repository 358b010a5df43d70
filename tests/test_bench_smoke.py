"""Smoke test: each benchmark script's main() runs end to end at a tiny size, so the scripts cannot rot."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psutil")

BENCH = Path(__file__).resolve().parents[1] / "bench"


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
