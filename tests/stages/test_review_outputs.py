"""relabel's review page and top issues, probe's plots with the pick, clean's checkpoint clean-up."""

import html
import json
import re
import shutil
import subprocess

import pytest

from noisefix.config import ProbeConfig, RelabelConfig, TrainConfig
from noisefix.io.atomic import read_csv
from noisefix.stages.pipeline import drop_unused_checkpoints
from noisefix.stages.probe import run_probe
from noisefix.stages.relabel import TOP_ISSUES, run_relabel
from noisefix.stages.runs import open_run
from noisefix.stages.train import run_train

CHROMIUM = "/usr/bin/chromium"
PROBE = ProbeConfig(layers="x,relu1", probes=("masc", "ncm"), folds=3, checkpoints=("init", "final"))


@pytest.fixture
def noisy_run(make_image_folder, tmp_path):
    """A 3-epoch MLP run on 3 digit classes x 15 training images, every fifth label moved to the next class."""
    data = make_image_folder(train_per_class=15)
    paths = sorted(p.relative_to(data).as_posix() for p in (data / "train").rglob("*.png"))
    lines = ["path,label,clean_label"]
    for i, p in enumerate(paths):
        c = int(p.split("/")[1])
        lines.append(f"{p},{(c + 1) % 3 if i % 5 == 0 else c},{c}")
    labels = tmp_path / "noisy.csv"
    labels.write_text("\n".join(lines) + "\n")
    cfg = TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=3, batch_size=8, holdout=0.2)
    run_train(data, cfg, labels_file=labels, out=tmp_path / "run")
    return open_run(tmp_path / "run")


def test_relabel_writes_the_review_page_of_the_flagged_images(noisy_run):
    run_probe(noisy_run, PROBE)
    probe_dir, out = noisy_run.run.probe, noisy_run.run.relabel
    assert (probe_dir / "dynamics.png").is_file() and (probe_dir / "layers.png").is_file()
    result = run_relabel(noisy_run, RelabelConfig(flag="disagree", review=5))
    rows = read_csv(out / "labels.csv")
    flagged = [r for r in rows if r["is_issue"] == "1"]
    assert len(flagged) >= 3, "the probes should disagree with the moved labels"
    page = (out / "review.html").read_text(encoding="utf-8")
    shown = min(5, len(flagged))
    assert result.review == out / "review.html" and (out / "review.png").is_file()
    assert page.count("<img ") == shown and f"<b id=n-shown>{shown}</b>" in page
    assert sum(int(c) for c in re.findall(r"data-count=(\d+)", page)) == shown
    for r in flagged[:shown]:
        assert r["path"] in page
    assert [r["path"] for r in result.top_issues] == [r["path"] for r in flagged[:TOP_ISSUES]]


def test_relabel_review_0_writes_no_page(noisy_run):
    run_probe(noisy_run, PROBE)
    result = run_relabel(noisy_run, RelabelConfig(flag="disagree", review=0))
    assert result.review is None and not (noisy_run.run.relabel / "review.html").exists()
    assert result.top_issues


def test_drop_unused_checkpoints_keeps_the_sources_and_the_final_weights(tiny_run):
    run = tiny_run.run
    info = json.loads(run.model_json.read_text())
    saved = info["checkpoints"]
    assert 0 in saved and run.best_checkpoint.is_file()
    count, freed = drop_unused_checkpoints(run, [{"checkpoint": "init"}, {"checkpoint": "final"}])
    left = json.loads(run.model_json.read_text())["checkpoints"]
    assert left == [0] and run.checkpoint(0).is_file() and run.weights.is_file()
    assert not run.best_checkpoint.exists() and count == len(saved) and freed > 0  # epochs but 0, and best
    assert open_run(run.path).model_info["checkpoints"] == [0]  # the run still opens


@pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                    reason=f"{CHROMIUM} not installed (Debian package `chromium`, installed by .ci/run); "
                           "the real-browser render of relabel's review.html is skipped")
def test_relabel_review_page_in_headless_chromium_matches_labels_csv(noisy_run, tmp_path):
    run_probe(noisy_run, PROBE)
    run_relabel(noisy_run, RelabelConfig(flag="disagree"))
    flagged = [r for r in read_csv(noisy_run.run.relabel / "labels.csv") if r["is_issue"] == "1"]
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
           "--dump-dom", (noisy_run.run.relabel / "review.html").resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    imgs = re.findall(r"<img [^>]*>", dom)
    assert len(imgs) == min(100, len(flagged)) and all('data-loaded="1"' in tag for tag in imgs)
    assert 'data-broken="0"' in dom and sum(int(c) for c in re.findall(r'data-count="(\d+)"', dom)) == len(imgs)
    for r in flagged:
        assert html.escape(r["path"]) in dom
