import json

import pytest
from typer.testing import CliRunner

from noisefix.cli import app

runner = CliRunner()
COMMANDS = ["train", "layers", "probe", "relabel", "retrain", "demo", "data"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_every_stage():
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in result.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_has_help(cmd):
    result = invoke(cmd, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_missing_folder_is_one_clear_line_and_exit_1(tmp_path):
    result = invoke("train", tmp_path / "nope", "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "error:" in result.output and "not found" in result.output
    assert not (tmp_path / "run").exists()


def test_bad_option_value_is_a_clear_error(tiny_folder, tmp_path):
    result = invoke("train", tiny_folder, "--optimizer", "rmsprop", "--out", tmp_path / "run")
    assert result.exit_code == 1 and "optimizer must be sgd or adam" in result.output


def test_export_then_train_then_layers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("data", "export", "digits", "d", "--corrupt", "0.4", "--train-subset", "200", "--test-subset", "100")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "noisy_labels.csv").exists()
    result = invoke("train", "d", "--labels", "d/noisy_labels.csv", "--model", "mlp", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "next: noisefix probe" in result.output
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.endswith(".lock"))  # not the writer lock
    assert json.loads((run / "model.json").read_text())["arch"] == "mlp"
    result = invoke("layers", "--memory")  # newest run under ./runs
    assert result.exit_code == 0, result.output
    assert "relu4" in result.output and str(run.name) in result.output and "GiB" in result.output
