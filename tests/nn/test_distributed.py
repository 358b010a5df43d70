"""Data-parallel train and probe under torchrun: 2 CPU processes (gloo) against the single-process run.

One digits run (1,000 training images, 10 % held out, so about 90 per class) is trained by 2 processes, then
probed by 1 and by 2 processes. Layer x (d = 64 < 90 per class) has its moment probes fitted from all-reduced
statistics and scored per shard; relu1 (d = 128) and logreg go through activations gathered to rank 0.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from noisefix.data.builtin import export_dataset, load_builtin
from noisefix.io.atomic import load_tensors
from noisefix.nn import distributed
from noisefix.stages.runs import load_run_model, open_run

PROBE = ["--layers", "x,relu1,fc5", "--folds", "3", "--device", "cpu"]


def noisefix(*args: str, procs: int = 1, cwd) -> subprocess.CompletedProcess:
    """`python -m noisefix ARGS`, or under torchrun with `procs` CPU processes (free port via --standalone)."""
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
               "-m", "noisefix", "--"] if procs > 1 else [sys.executable, "-m", "noisefix"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(launch + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A run trained for 2 epochs by 2 processes on noisy digits."""
    root = tmp_path_factory.mktemp("ddp")
    data = export_dataset(load_builtin("digits"), root / "digits", corrupt=0.4, seed=0, train_subset=1000,
                          test_subset=101)
    noisefix("train", str(data), "--labels", str(data / "noisy_labels.csv"), "--out", str(root / "run"),
             "--epochs", "2", "--optimizer", "adam", "--lr", "1e-3", "--device", "cpu", procs=2, cwd=root)
    return root / "run"


def test_shards_partition_and_single_process_helpers():
    for strided in (True, False):
        parts = [distributed.shard(11, of_rank=r, world=3, strided=strided) for r in range(3)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(11))
        assert {len(p) for p in parts} <= {3, 4}
    assert distributed.world_size() == 1 and distributed.is_main()   # not under torchrun: no-op helpers
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")
    rows = np.arange(12.0).reshape(6, 2)
    assert np.array_equal(distributed.gather_rows(rows, [np.arange(6)]), rows)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}


def test_train_two_processes_writes_one_loadable_run(ddp_run):
    names = {p.name for p in ddp_run.iterdir()}
    assert {"manifest.json", "config.yaml", "model.json", "model.safetensors", "metrics.jsonl", "labels.csv",
            "checkpoints"} <= names
    assert not list(ddp_run.parent.glob("*.partial")) and not list(ddp_run.parent.glob(".*old*"))
    metrics = [json.loads(line) for line in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]                   # rank 0 alone wrote them
    assert metrics[-1]["train_acc"] > 0.3 and metrics[-1]["test_acc"] > 0.5
    loaded = open_run(ddp_run)
    model, _ = load_run_model(loaded)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_probe_two_processes_equals_single_process(ddp_run, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(ddp_run, one)
    shutil.copytree(ddp_run, two)
    noisefix("probe", "--run", str(one), *PROBE, cwd=tmp_path)
    out = noisefix("probe", "--run", str(two), *PROBE, procs=2, cwd=tmp_path)
    assert out.stdout.count("probe results:") == 1                   # only rank 0 reports
    assert {p.name for p in (two / "probe").iterdir()} == {p.name for p in (one / "probe").iterdir()}
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    a, b = (json.loads((r / "probe" / "scores.json").read_text()) for r in (one, two))
    assert len(a["rows"]) == len(b["rows"]) == 12
    for ra, rb in zip(a["rows"] + [a["best"], a["oracle"]], b["rows"] + [b["best"], b["oracle"]]):
        assert (ra["checkpoint"], ra["layer"], ra["probe"], ra["pick"]) == (rb["checkpoint"], rb["layer"], rb["probe"], rb["pick"])
        for key in ("agreement", "holdout_agreement", "clean_acc", "test_acc", "mean_k"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-4), (ra["layer"], ra["probe"], key)
    assert a["model"] == b["model"] and a["n_components"] == b["n_components"]
    assert (one / "probe" / "scores.csv").read_text().splitlines()[0] == (two / "probe" / "scores.csv").read_text().splitlines()[0]
    ta, tb = (load_tensors(r / "probe" / "oof.safetensors") for r in (one, two))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.allclose(ta[key], tb[key], rtol=1e-4, atol=1e-5), key
        if key.endswith("|test"):
            assert torch.equal(ta[key].argmax(1), tb[key].argmax(1)), key
