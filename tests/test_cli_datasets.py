"""Datasets as they ship through the CLI: `clean` on a miniature Clothing1M reports the real-noise evaluation;
`data export --cifar-n` writes CIFAR-N's human labels beside the CIFAR images."""

import csv
import json

from typer.testing import CliRunner

from noisefix.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_clean_on_clothing1m_reports_the_real_noise_evaluation(clothing1m, tmp_path):
    out = tmp_path / "run"
    result = invoke("clean", clothing1m, "--out", out, "--model", "mlp_small", "--image-size", "16", "--epochs", "4",
                    "--review", "0", "--retrain")
    assert result.exit_code == 0, result.output
    assert "left out of training" in result.output
    summary = json.loads((out / "relabel" / "summary.json").read_text())
    real = summary["real_noise_evaluation"]
    assert real["n_images"] == 18 and real["true_wrong_fraction"] == 3 / 18  # every sixth noisy label is wrong
    assert set(real) >= {"estimated_wrong_fraction", "label_quality_ranking", "issue_detection",
                         "label_accuracy_before", "label_accuracy_after"}
    assert set(real["issue_detection"]) >= {"precision", "recall", "f1"} and "auroc" in real["label_quality_ranking"]
    assert "true_wrong_fraction" not in summary  # no clean label for every image: no whole-set numbers
    with open(out / "relabel" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and sum(bool(r["clean_label"]) for r in rows) == 18
    assert json.loads((out / "retrain" / "metrics.json").read_text())  # retrain re-read Clothing1M + cleaned labels


def test_cifar_n_set_needs_the_file(tmp_path):
    result = invoke("data", "export", "cifar10", tmp_path / "out", "--cifar-n-set", "aggre")
    assert result.exit_code == 1 and "give the file with --cifar-n" in result.output
