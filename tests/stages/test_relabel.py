"""The relabel stage on a tiny real run with known noise: label quality, the noise estimate, the flag rules,
review rows, the options (library and CLI)."""

import numpy as np
import pytest
from typer.testing import CliRunner

from noisefix.cli import app
from noisefix.config import ProbeConfig, RelabelConfig, TrainConfig
from noisefix.data.folders import load_data
from noisefix.errors import ConfigError
from noisefix.io.atomic import read_csv, read_json
from noisefix.stages.probe import run_probe
from noisefix.stages.relabel import relabel_evidence, run_relabel
from noisefix.stages.runs import open_run
from noisefix.stages.train import run_train

COLUMNS = ["path", "given_label", "suggested_label", "label_quality", "score", "is_issue", "action", "clean_label"]


@pytest.fixture
def noisy_run(make_image_folder, tmp_path):
    """3 digit classes x 20 training images (10 clean test images each), 6 labels moved to the next class (clean
    labels kept), a 3-epoch MLP with 20 % held out, probed on x and relu1 (masc, ncm)."""
    data = make_image_folder(train_per_class=20, test_per_class=10)
    paths = sorted(p.relative_to(data).as_posix() for p in (data / "train").rglob("*.png"))
    clean = [int(p.split("/")[1]) for p in paths]
    given = [(c + 1) % 3 if i % 10 == 3 else c for i, c in enumerate(clean)]
    labels = data / "noisy.csv"
    labels.write_text("path,label,clean_label\n" + "".join(f"{p},{g},{c}\n" for p, g, c in zip(paths, given, clean)))
    out = tmp_path / "run"
    run_train(data, TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=3, batch_size=8, holdout=0.2),
              labels_file=labels, out=out)
    loaded = open_run(out)
    run_probe(loaded, ProbeConfig(layers="x,relu1", probes=("masc", "ncm"), folds=3))
    return loaded


def test_default_rule_writes_label_quality_noise_estimate_and_confusion(noisy_run):
    result = run_relabel(noisy_run, RelabelConfig())
    rows = read_csv(noisy_run.run.relabel / "labels.csv")
    assert list(rows[0]) == COLUMNS and len(rows) == 60
    quality = np.array([float(r["label_quality"]) for r in rows])
    assert np.isfinite(quality).all() and ((quality >= 0) & (quality <= 1)).all()
    assert np.all(np.diff(quality) >= 0)                                                # sorted ascending
    s = result.summary
    assert s["flag"] == "noise-aware" and s["n_issues"] == sum(int(r["is_issue"]) for r in rows)
    noise = s["noise"]
    low, high = noise["interval"]
    assert 0 <= low <= noise["wrong_fraction"] <= high <= 1 and "held-out" in noise["fitted_on"]
    assert noise["calibration"]["fitted_on"].startswith("30 clean test images")
    assert set(noise["per_class"]) == {"0", "1", "2"}
    assert noise["symmetric_p"] == pytest.approx(noise["wrong_fraction"] * 3 / 2)
    assert s["true_wrong_fraction"] == pytest.approx(0.1)
    assert s["label_quality_ranking"]["auroc"] > 0.5
    assert set(s["issue_detection"]) >= {"precision", "recall", "f1"}
    flagged = sum(n for row in s["confusion"].values() for n in row.values())
    assert flagged == s["n_issues"] == s["n_relabeled"] + s["n_review"]
    for r in rows:
        assert r["action"] == ("keep" if r["is_issue"] == "0" else ("review" if not r["suggested_label"] else "relabel"))


def test_disagree_rule_max_issues_and_review_rows(noisy_run):
    aware = run_relabel(noisy_run, RelabelConfig()).summary
    disagree = run_relabel(noisy_run, RelabelConfig(flag="disagree"), force=True).summary
    assert disagree["n_issues"] >= aware["n_issues"]
    assert run_relabel(noisy_run, RelabelConfig(flag="disagree", max_issues=2), force=True).summary["n_issues"] <= 2
    assert run_relabel(noisy_run, RelabelConfig(flag="disagree", max_issues=0.05), force=True).summary["n_issues"] <= 3
    result = run_relabel(noisy_run, RelabelConfig(flag="disagree", min_suggest=1.0), force=True)
    rows = read_csv(noisy_run.run.relabel / "labels.csv")
    review = [r for r in rows if r["action"] == "review"]
    assert len(review) == result.summary["n_review"] == result.summary["n_issues"] > 0       # 1: never suggest
    assert all(r["suggested_label"] == "" for r in review)
    relabeled = {r["path"] for r in rows if r["action"] == "relabel"}
    cleaned = load_data(noisy_run.splits.train.root, result.cleaned).train           # review keeps the given label
    changed = {p for p, a, b in zip(cleaned.paths, cleaned.targets, noisy_run.splits.train.targets) if a != b}
    assert changed == relabeled and len(relabeled) == result.summary["n_relabeled"]
    pruned = run_relabel(noisy_run, RelabelConfig(flag="disagree", mode="prune"), force=True)
    assert len(load_data(noisy_run.splits.train.root, pruned.cleaned).train) == 60 - pruned.summary["n_issues"]


def test_evidence_is_what_relabel_judges_from(noisy_run):
    evidence = relabel_evidence(noisy_run, RelabelConfig(ensemble=2))
    assert len(evidence.mats) == len(evidence.sources) == 2 and evidence.mats[0].shape == (60, 3)
    assert evidence.fit_mask.sum() == noisy_run.holdout.sum() > 0
    assert evidence.criterion == "holdout_agreement"
    test = noisy_run.splits.test                                                     # the clean split calibrates
    assert np.array_equal(evidence.trusted.labels, test.targets) and len(evidence.trusted.scores) == 2
    assert evidence.trusted.scores[0].shape == (len(test), 3)


@pytest.mark.parametrize("kwargs,word", [({"flag": "all"}, "flag must be one of noise-aware, disagree"),
                                         ({"max_issues": -1}, "max_issues"), ({"max_issues": 2.5}, "max_issues"),
                                         ({"min_suggest": 1.5}, "min-suggest")])
def test_relabel_options_validate_with_one_line_errors(kwargs, word):
    with pytest.raises(ConfigError, match=word) as err:
        RelabelConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_cli_relabel_options(noisy_run):
    runner = CliRunner()
    run = str(noisy_run.run.path)
    ok = runner.invoke(app, ["relabel", "--run", run, "--flag", "disagree", "--max-issues", "0.05", "--force"])
    assert ok.exit_code == 0, ok.output
    assert "estimated wrong labels" in ok.output and "true wrong labels" in ok.output
    assert "calibrated on 30 clean test images" in " ".join(ok.output.split())
    assert sum(r["is_issue"] == "1" for r in read_csv(noisy_run.run.relabel / "labels.csv")) <= 3
    given = runner.invoke(app, ["relabel", "--run", run, "--calibrate", "given", "--force"])
    assert given.exit_code == 0 and "clean test images" not in given.output
    assert read_json(noisy_run.run.relabel / "summary.json")["noise"]["calibration"]["fitted_on"].endswith("EM")
    for args, word in ((["--flag", "sometimes"], "flag must be one of"), (["--max-issues", "many"], "--max-issues"),
                       (["--max-issues", "-4"], "max_issues"), (["--calibrate", "val"], "--calibrate must be")):
        bad = runner.invoke(app, ["relabel", "--run", run, *args, "--force"])
        assert bad.exit_code == 1 and word in bad.output
