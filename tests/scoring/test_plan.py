"""Bounded probe memory: the per-layer plan (no d x d statistics on the Gram route, activations in RAM or on
disk), the on-disk activation cache against the in-RAM path, and the CLI's memory listing and torchrun guard."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noisefix.cli import app
from noisefix.config import ProbeConfig
from noisefix.errors import ProbeError
from noisefix.io.atomic import load_tensors
from noisefix.nn.extract import LayerInfo
from noisefix.probes import rows
from noisefix.probes.rows import SHARD_BYTES
from noisefix.scoring.plan import EXTRACT_BATCH, MEMORY_BUDGET, extraction_batch, group_layers, plan_layer
from noisefix.stages import probe as probe_stage
from noisefix.stages.probe import run_probe

PROBE = ProbeConfig(layers="x,relu1,fc5", folds=3)  # x, relu1: Gram route (12 images per class < d); fc5: d = 3
ALL = ("masc", "ncm", "logreg", "velpic")


def test_resnet18_sized_layer_is_planned_without_d2_statistics():
    layer = LayerInfo("layer4.1.relu_1", (1024, 4, 4), 16384)              # ResNet-18 under --pool auto
    for per_class in (90, 4000):                                             # a subset; CIFAR-10 with 20 % held out
        counts = np.full(10, per_class)
        plan = plan_layer(layer, probes=ALL, class_counts=counts, folds=5, n_train=10 * per_class, n_test=1000)
        assert not plan.second_moments and "gram" in plan.route
        assert set(plan.refit) == {"masc", "logreg", "velpic"}
        assert plan.stats_bytes < 0.5e9                                       # F*K*d*8 + flush buffer, not 107 GB
        assert plan.nbytes < MEMORY_BUDGET and len(group_layers([plan])) == 1
    big = plan_layer(layer, probes=ALL, class_counts=np.full(10, 4000), folds=5, n_train=40000, n_test=10000,
                     budget=2 * 2**30)                                       # 3.3 GB of activations > 2 GiB
    assert big.on_disk and big.disk_bytes == 4 * 16384 * 50000 and big.activation_bytes <= 4 * SHARD_BYTES
    with pytest.raises(ProbeError, match="leave logreg out"):               # logreg copies its 2.6 GB of rows
        group_layers([big], budget=2 * 2**30)
    lean = plan_layer(layer, probes=("masc", "ncm", "velpic"), class_counts=np.full(10, 4000), folds=5,
                      n_train=40000, n_test=10000, budget=2 * 2**30)
    assert lean.on_disk and lean.nbytes < 2 * 2**30 and len(group_layers([lean], budget=2 * 2**30)) == 1


def test_plan_keeps_d2_statistics_only_when_a_probe_needs_them():
    small = LayerInfo("fc", (512,), 512)
    counts = np.full(10, 600)                                                 # every class larger than d
    assert plan_layer(small, probes=ALL, class_counts=counts, folds=5, n_train=6000, n_test=0).second_moments
    assert not plan_layer(small, probes=("ncm", "logreg"), class_counts=counts, folds=5, n_train=6000,
                          n_test=0).second_moments
    huge = LayerInfo("conv", (256, 16, 16), 65536)                          # classes larger than d: d^2 moments
    plan = plan_layer(huge, probes=("masc",), class_counts=np.full(10, 70000), folds=5, n_train=700000, n_test=0)
    assert plan.second_moments and plan.stats_bytes > 10 * 5 * 65536**2 * 8
    with pytest.raises(ProbeError, match=r"--pool avg:2.*--folds.*--layers"):
        group_layers([plan])
    with pytest.raises(ProbeError, match="cache must be"):
        plan_layer(small, probes=ALL, class_counts=counts, folds=5, n_train=1, n_test=0, cache="sometimes")


def test_plan_route_follows_the_capability_flags(monkeypatch):
    from noisefix.probes import MASC, VeLPIC
    layer, counts = LayerInfo("conv", (64, 2, 2), 256), np.full(10, 100)    # every class smaller than d
    gram = plan_layer(layer, probes=("masc", "velpic"), class_counts=counts, folds=5, n_train=1000, n_test=0)
    assert gram.route == "gram (no d^2), RAM" and not gram.second_moments
    for cls in (MASC, VeLPIC):
        monkeypatch.setattr(cls, "gram_route", False)
    moments = plan_layer(layer, probes=("masc", "velpic"), class_counts=counts, folds=5, n_train=1000, n_test=0)
    assert moments.route == "d^2 moments, RAM" and moments.second_moments and moments.refit == ()


def test_extraction_batch_grows_for_small_layers_only():
    low, high = EXTRACT_BATCH
    mlp = [LayerInfo("x", (1, 28, 28), 784), LayerInfo("relu1", (256,), 256), LayerInfo("relu2", (256,), 256)]
    assert extraction_batch(mlp) == high
    conv = [LayerInfo("layer1", (64, 56, 56), 64 * 56 * 56), LayerInfo("pool", (64, 56, 56), 64)]  # pooled dim
    assert extraction_batch(conv) == low                     # the unpooled map counts: what the forward holds
    mid = [LayerInfo("conv", (16, 16, 16), 4096)]            # 16 KB per image: 4,096 within 64 MiB
    assert extraction_batch(mid) == 4096 and extraction_batch(mid, 7) == 7
    assert low <= extraction_batch([LayerInfo("c", (32, 28, 28), 25088)]) < high
    cnn = [LayerInfo("block3.pool", (64, 3, 3), 576), LayerInfo("relu1", (250,), 250)]  # small outputs ...
    assert extraction_batch(cnn) == high
    assert extraction_batch(cnn, forward_values=93_000) == low   # ... of a forward through 28 x 28 maps


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_disk_cache_gives_the_same_scores_as_ram(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "SHARD_BYTES", 4 * 64 * 7)                # 7 rows of x per shard: many shards
    run_probe(tiny_run, PROBE, cache="never", subdir="probe_ram")       # the automatic batch: one batch
    cache_dir = tmp_path / "cache"
    run_probe(tiny_run, dataclasses.replace(PROBE, batch_size=5), cache="always", cache_dir=cache_dir,
              subdir="probe_disk")                                      # and batches of 5 images
    assert not cache_dir.exists()                                             # deleted after the probe
    assert not (tiny_run.run.path / "probe-cache").exists()
    ram, disk = (tiny_run.run.path / d for d in ("probe_ram", "probe_disk"))
    a, b = _rows(ram / "scores.csv"), _rows(disk / "scores.csv")
    assert len(a) == len(b) == 12
    for ra, rb in zip(a, b):
        assert (ra["layer"], ra["probe"], ra["dim"], ra["pick"]) == (rb["layer"], rb["probe"], rb["dim"], rb["pick"])
        for key in ("mean_k", "agreement", "holdout_agreement", "clean_acc", "test_acc"):
            if ra[key]:
                assert float(ra[key]) == pytest.approx(float(rb[key]), abs=1e-6), (ra["layer"], ra["probe"], key)
    ta, tb = load_tensors(ram / "oof.safetensors"), load_tensors(disk / "oof.safetensors")
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.allclose(ta[key], tb[key], rtol=1e-5, atol=1e-6), key
    sa, sb = (json.loads((d / "scores.json").read_text()) for d in (ram, disk))
    assert sa["n_components"] == sb["n_components"]


def test_kept_cache_holds_safetensors_shards_and_a_crash_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "SHARD_BYTES", 4 * 128 * 10)
    cfg = ProbeConfig(layers="relu1", probes=("masc", "ncm"), folds=3)
    run_probe(tiny_run, cfg, cache="always", cache_dir=tmp_path / "kept", keep_cache=True)
    shards = sorted((tmp_path / "kept").rglob("*.safetensors"))
    assert len(shards) > 2 and not list((tmp_path / "kept").rglob("*.tmp*"))
    assert load_tensors(shards[0])["x"].shape[1] == 128


    def boom(*args, **kwargs):
        raise RuntimeError("crash while scoring")

    monkeypatch.setattr(probe_stage, "_score_group", boom)
    with pytest.raises(RuntimeError, match="crash"):
        run_probe(tiny_run, cfg, cache="always", cache_dir=tmp_path / "crash", subdir="probe_crash")
    assert not (tmp_path / "crash").exists() and not (tiny_run.run.path / "probe_crash").exists()
    assert not (tiny_run.run.path / "probe_crash.partial").exists()


runner = CliRunner()


def test_layers_memory_names_the_route(tiny_run):
    result = runner.invoke(app, ["layers", "--run", str(tiny_run.run.path), "--memory", "--folds", "3"],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert "route" in result.output and "gram" in lines["relu1"]
    assert "moments" in lines["fc5"]                                         # fc5: d = 3 < 12 images per class
    assert "memory model" in result.output


@pytest.mark.parametrize("args", [["relabel"], ["retrain"], ["demo"], ["clean", "data"], ["reproduce", "r.yaml"],
                                  ["data", "export", "digits", "dest"], ["layers"]])
def test_single_process_commands_refuse_under_torchrun(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "WORLD_SIZE=2" in result.output and "torchrun" in result.output
    assert not list(tmp_path.iterdir())                                       # nothing written
