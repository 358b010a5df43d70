import json
import os

import pytest
import torch

from noisefix.errors import RunError
from noisefix.io import atomic
from noisefix.io.atomic import (
    load_tensors,
    save_tensors,
    staged_dir,
    write_json,
    write_text,
)
from noisefix.io.run_dir import find_latest_run


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "x.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(path.parent) == ["x.json"]


def test_failed_write_keeps_previous_content(tmp_path, monkeypatch):
    path = tmp_path / "x.txt"
    write_text(path, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        write_text(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_staged_dir_swaps_only_on_success(tmp_path):
    final = tmp_path / "run"
    with staged_dir(final, force=False, what="run") as tmp:
        (tmp / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(RunError, match="--force"):
        with staged_dir(final, force=False, what="run"):
            pass
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(final, force=True, what="run") as tmp:
            (tmp / "b.txt").write_text("half")
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == [".run.lock", "run"]  # the writer lock stays (io/lock.py)
    assert os.listdir(final) == ["a.txt"]
    with staged_dir(final, force=True, what="run") as tmp:
        (tmp / "b.txt").write_text("2")
    assert os.listdir(final) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == [".run.lock", "run"]


def test_tensors_round_trip_safetensors(tmp_path):
    t = {"w": torch.arange(6.0).reshape(2, 3)}
    save_tensors(tmp_path / "t.safetensors", t)
    assert torch.equal(load_tensors(tmp_path / "t.safetensors")["w"], t["w"])
    with pytest.raises(RunError):
        load_tensors(tmp_path / "missing.safetensors")


def test_find_latest_run_filters_by_data_and_model(tmp_path):
    runs = tmp_path / "runs"
    for name, model, data in [("a", "mlp", "d1"), ("b", "cnn", "d1"), ("c", "mlp", "d2")]:
        (runs / name).mkdir(parents=True)
        (runs / name / "manifest.json").write_text(json.dumps(
            {"model": model, "data_root": str((tmp_path / data).resolve())}))
    assert find_latest_run(runs_dir=runs, data_root=tmp_path / "d1", model="mlp").name == "a"
    assert find_latest_run(runs_dir=runs, model="cnn").name == "b"
    with pytest.raises(RunError, match="no run"):
        find_latest_run(runs_dir=runs, model="resnet18")
    with pytest.raises(RunError, match="with probe results"):
        find_latest_run(runs_dir=runs, stage="probe")


def test_score_keys_round_trip():
    from noisefix.io.run_dir import parse_score_key, score_key

    assert score_key("final", "relu1", "masc", "oof") == "final|relu1|masc|oof"
    assert parse_score_key("final|relu1|masc|oof") == ("final", "relu1", "masc", "oof")
    assert parse_score_key(score_key("3", "fc5", "ncm")) == ("3", "fc5", "ncm", None)
    with pytest.raises(RunError, match="not a probe score key"):
        parse_score_key("folds")


def test_find_latest_run_skips_partial_runs(tmp_path):
    runs = tmp_path / "runs"
    partial = atomic.partial_path(runs / "a")
    partial.mkdir(parents=True)
    (partial / "manifest.json").write_text(json.dumps({"model": "mlp", "data_root": str(tmp_path)}))
    assert atomic.is_partial(partial)
    with pytest.raises(RunError, match="no run"):
        find_latest_run(runs_dir=runs)
