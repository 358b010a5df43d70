"""Hints and errors name options that exist and give commands one can run; --version."""

import json
import re

from typer.testing import CliRunner

from noisefix import __version__
from noisefix.cli import app

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200", **(env or {})})


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"noisefix {__version__}"


def test_no_run_error_gives_full_commands_and_mentions_clean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("relabel")
    assert result.exit_code == 1
    assert "`noisefix clean DATA`" in result.output and "`noisefix train DATA --model mlp`" in result.output


def test_export_suggests_clean(tmp_path):
    result = invoke("data", "export", "digits", tmp_path / "d", "--corrupt", "0.4", "--train-subset", "30",
                    "--test-subset", "10")
    assert result.exit_code == 0, result.output
    assert f"next: noisefix clean {tmp_path / 'd'} --labels {tmp_path / 'd' / 'noisy_labels.csv'}" in result.output


def test_layers_suggests_a_real_layer_list_and_rerun_names_no_missing_option(tiny_run):
    result = invoke("layers", "--run", tiny_run.run.path)
    assert result.exit_code == 0, result.output
    hint = re.search(r"--layers (\S+)", result.output).group(1)
    assert "..." not in hint and "…" not in hint
    assert all(name in result.output.split("next:")[0] for name in hint.split(","))
    (tiny_run.run.probe).mkdir()
    (tiny_run.run.probe / "scores.json").write_text("{}")
    result = invoke("probe", "--run", tiny_run.run.path, "--layers", "x", "--probes", "ncm")
    assert result.exit_code == 1 and "--force" in result.output and "another --out" not in result.output


def test_probe_screens_layers_and_refuses_a_screen_nothing_can_do(tiny_run):
    result = invoke("probe", "--run", tiny_run.run.path, "--probes", "masc,ncm", "--screen", "1", "--folds", "3")
    assert result.exit_code == 0, result.output
    rows = json.loads((tiny_run.run.probe / "scores.json").read_text())["rows"]
    assert {r["probe"] for r in rows} == {"masc", "ncm"}
    assert len({r["layer"] for r in rows if r["probe"] == "masc"}) == 1 < len({r["layer"] for r in rows})
    result = invoke("probe", "--run", tiny_run.run.path, "--probes", "masc", "--screen", "1", "--force")
    assert result.exit_code == 1 and "add ncm to the probes" in result.output and "--screen 0" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_train_keeps_early_checkpoints_and_its_hint_scans_them(tmp_path, make_image_folder):
    data = make_image_folder(train_per_class=8)
    result = invoke("train", data, "--model", "mlp", "--epochs", "5", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert {2, 4} <= set(info["checkpoints"])
    hint = re.search(r"next: (noisefix probe .*)", result.output).group(1)
    assert hint.endswith("--checkpoints all --screen 2 --probes masc,ncm") and "  or: noisefix probe" in result.output
    result = invoke(*hint.split()[1:], "--folds", "2")                                   # the hint runs as printed
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "run" / "probe" / "scores.json").read_text())["rows"]
    assert {"init", "2", "4", "final"} <= {r["checkpoint"] for r in rows}
    result = invoke("train", data, "--model", "mlp", "--epochs", "5", "--out", tmp_path / "run2",
                    "--no-early-checkpoints")
    assert result.exit_code == 0, result.output
    assert not {2, 4} & set(json.loads((tmp_path / "run2" / "model.json").read_text())["checkpoints"])
    assert "--checkpoints all" not in result.output
