import json

import numpy as np
import pytest

from noisefix.config import TrainConfig
from noisefix.errors import DataError, RunError
from noisefix.io.atomic import load_tensors, read_csv
from noisefix.stages.runs import load_run_model, open_run
from noisefix.stages.train import run_train

FAST = dict(optimizer="adam", lr=1e-3, epochs=3, batch_size=8)


@pytest.fixture
def tiny_run(tiny_folder, tmp_path):
    out = tmp_path / "run"
    run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=out)
    return tiny_folder, out


def test_train_writes_a_complete_run_dir(tiny_run):
    data, out = tiny_run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoints", "config.yaml", "labels.csv", "manifest.json", "metrics.jsonl", "model.json",
                     "model.safetensors"]
    info = json.loads((out / "model.json").read_text())
    assert info["classes"] == ["0", "1", "2"] and info["in_shape"] == [1, 8, 8]
    assert info["checkpoints"][0] == 0 and (out / "checkpoints" / "epoch_0000.safetensors").exists()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(1, info["final_epoch"] + 1)) and "test_acc" in lines[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["versions"]) >= {"torch", "torchvision", "noisefix"} and manifest["seed"] == 0
    assert not list(out.parent.glob("*.partial"))


def test_train_refuses_to_overwrite_without_force(tiny_run):
    data, out = tiny_run
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="--force"):
        run_train(data, TrainConfig.for_model("mlp", **FAST), out=out)
    assert (out / "model.safetensors").read_bytes() == before
    run_train(data, TrainConfig.for_model("mlp", **{**FAST, "seed": 3}), out=out, force=True)
    assert (out / "model.safetensors").read_bytes() != before


def test_bad_data_writes_nothing(tmp_path):
    with pytest.raises(DataError):
        run_train(tmp_path / "missing", TrainConfig.for_model("mlp", **FAST), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_same_seed_same_weights(tiny_folder, tmp_path):
    a = run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=tmp_path / "a")
    b = run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=tmp_path / "b")
    ta = load_tensors(a.run.weights)
    tb = load_tensors(b.run.weights)
    assert all(np.array_equal(ta[k].numpy(), tb[k].numpy()) for k in ta)


def test_open_run_refuses_changed_data(tiny_run):
    data, out = tiny_run
    loaded = open_run(out)
    assert loaded.splits.train.classes == ["0", "1", "2"]
    victim = sorted((data / "train" / "0").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")  # same image count, different file
    with pytest.raises(RunError, match="differs"):
        open_run(out)


def test_load_run_model_checkpoints(tiny_run):
    _, out = tiny_run
    loaded = open_run(out)
    _, label = load_run_model(loaded, "init")
    assert label == "epoch 0"
    with pytest.raises(RunError, match="available"):
        load_run_model(loaded, "17")
    with pytest.raises(RunError, match="epoch number"):
        load_run_model(loaded, "latest")


def test_open_run_missing_and_incomplete(tmp_path):
    with pytest.raises(RunError, match="not found"):
        open_run(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(RunError, match="not a complete run"):
        open_run(tmp_path / "half")


def _break_images(data):
    good = sorted((data / "train" / "1").iterdir())[0]
    good.write_bytes(good.read_bytes()[:40])  # truncated PNG
    (data / "train" / "2" / "fake.jpg").write_text("not an image at all")  # text file named .jpg
    return {f"train/1/{good.name}", "train/2/fake.jpg"}


def test_bad_images_fail_by_default_naming_them(tiny_folder, tmp_path):
    bad = _break_images(tiny_folder)
    with pytest.raises(DataError, match="2 bad image") as err:
        run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=tmp_path / "run")
    assert all(p in str(err.value) for p in bad) and "--on-bad-image skip" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_bad_images_skipped_and_listed(tiny_folder, tmp_path):
    bad = _break_images(tiny_folder)
    out = run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST, on_bad_image="skip"),
                    out=tmp_path / "run").run.path
    listed = {r["path"] for r in read_csv(out / "skipped_images.csv")}
    assert listed == bad
    loaded = open_run(out)
    assert not bad & set(loaded.splits.train.paths) and len(loaded.splits.train) == 30 - 1


def test_one_checkpoint_parser():
    from noisefix.stages.runs import checkpoint_epochs, expand_checkpoints, parse_checkpoint

    assert [parse_checkpoint(c) for c in ("final", "best", "init", "7")] == ["final", "best", 0, 7]
    info = {"checkpoints": [0, 2, 4], "final_epoch": 4}
    assert expand_checkpoints(("all",), info) == ["init", "2", "final"]
    assert checkpoint_epochs(["init", "2", "best", "final"], info) == {"init": 0, "2": 2, "final": 4}
    with pytest.raises(RunError, match="epoch number"):
        expand_checkpoints(("final", "latest"), info)  # before anything is extracted


def test_best_epochs_by_holdout_and_oracle():
    from noisefix.nn.training import EpochResult
    from noisefix.stages.train import BestEpochs

    best = BestEpochs(by="holdout")
    accs = [(0.5, 0.6), (0.7, 0.55), (0.7, 0.9), (0.6, 0.95)]  # (holdout, test) per epoch
    new = [best.update(EpochResult(e + 1, 0.0, 1.0, None, {"holdout": h, "test": t})) for e, (h, t) in enumerate(accs)]
    assert new == [True, True, False, False]  # a tie keeps the earlier epoch
    assert (best.epoch, best.test_acc, best.oracle_epoch, best.oracle_test_acc) == (2, 0.55, 4, 0.95)
    nothing = BestEpochs(by="test")  # no held-out images and no test split
    assert not nothing.update(EpochResult(1, 0.0, 1.0, None, {}))
    assert (nothing.epoch, nothing.test_acc, nothing.oracle_test_acc) == (None, None, None)


def test_reporters_follow_the_protocol():
    from noisefix.ui.reporter import NullReporter, Reporter, RichReporter, or_null

    assert isinstance(NullReporter(), Reporter) and isinstance(RichReporter(), Reporter)
    assert isinstance(or_null(None), NullReporter)
    rich = RichReporter()
    assert or_null(rich) is rich
