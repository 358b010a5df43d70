"""Real image folders and pretrained backbones through the CLI: mixed sizes and modes with default options,
and training-free cleaning (`probe --model resnet18 --weights FILE`, then `relabel --layer best`)."""

import json

import torch
import torchvision
from typer.testing import CliRunner

from noisefix.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_mixed_folder_through_clean_train_probe_relabel(mixed_folder, tmp_path):
    result = invoke("clean", mixed_folder, "--out", tmp_path / "clean")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "clean" / "model.json").read_text())
    assert info["image"]["channels"] == 3 and info["image"]["normalization"] == "dataset"
    assert info["in_shape"] == [3, *info["image"]["size"]] and info["classes"] == ["bird", "cat", "dog"]
    run = tmp_path / "run"
    result = invoke("train", mixed_folder, "--out", run, "--epochs", "20")  # not 500: seconds, not minutes
    assert result.exit_code == 0, result.output
    result = invoke("probe", "--run", run)
    assert result.exit_code == 0, result.output
    result = invoke("relabel", "--run", run)
    assert result.exit_code == 0, result.output
    assert (run / "relabel" / "cleaned_labels.csv").is_file()


def test_probe_pretrained_resnet18_without_a_run_then_relabel(make_image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_image_folder()  # 8x8 grayscale digits: resized and repeated to the weights' 3 channels
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)  # 1000-class ImageNet head
    result = invoke("probe", data, "--model", "resnet18")
    assert result.exit_code == 1 and "untrained resnet18" in result.output and "--weights" in result.output
    result = invoke("probe", data, "--model", "resnet18", "--weights", weights, "--image-size", "32",
                    "--probes", "masc,ncm")  # 32 px, not the weights' 224, and no logreg: seconds on a CPU
    assert result.exit_code == 0, result.output
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.endswith(".lock"))
    info = json.loads((run / "model.json").read_text())
    assert info["variant"] == "torchvision" and info["trained"] is False and info["in_shape"] == [3, 32, 32]
    assert info["image"]["normalization"] == "weights"
    scores = json.loads((run / "probe" / "scores.json").read_text())
    assert {r["layer"] for r in scores["rows"]} >= {"layer1", "layer4", "flatten"}
    result = invoke("relabel", "--layer", "best")
    assert result.exit_code == 0, result.output
    assert str(run.name) in result.output and (run / "relabel" / "cleaned_labels.csv").is_file()


def test_wrong_weights_and_too_small_images_are_one_line_errors(tiny_folder, tmp_path):
    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    result = invoke("probe", tiny_folder, "--model", "resnet18", "--weights", weights, "--out", tmp_path / "r")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "does not fit model 'resnet18'" in result.output and "in the file vs" in result.output
    result = invoke("train", tiny_folder, "--model", "cnn", "--image-size", "4", "--out", tmp_path / "t")
    assert result.exit_code == 1 and "--image-size 8 or larger" in result.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "t").exists()
