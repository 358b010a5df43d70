"""The stages chained on tiny real runs, and one end-to-end run on the embedded digits set."""

import json

import pytest

from noisefix.config import ProbeConfig, RelabelConfig, RetrainConfig, TrainConfig
from noisefix.data.builtin import export_dataset, load_builtin
from noisefix.data.folders import load_data
from noisefix.errors import ProbeError, RunError
from noisefix.io.atomic import load_tensors, read_csv
from noisefix.stages.pipeline import run_pipeline
from noisefix.stages.probe import run_probe
from noisefix.stages.relabel import run_relabel
from noisefix.stages.retrain import run_retrain

PROBE = ProbeConfig(layers="x,relu1,fc5", folds=3)


def test_probe_writes_scores_for_every_layer_and_probe(tiny_run):
    result = run_probe(tiny_run, PROBE)
    probe_dir = tiny_run.run.probe
    assert {p.name for p in probe_dir.iterdir()} == {"scores.csv", "scores.json", "oof.safetensors", "layers.png"}
    summary = json.loads((probe_dir / "scores.json").read_text())
    assert summary["criterion"] == "holdout_agreement"
    assert {(r["layer"], r["probe"]) for r in summary["rows"]} == {
        (l, p) for l in ("x", "relu1", "fc5") for p in ("masc", "ncm", "logreg", "velpic")}
    assert summary["best"]["pick"].startswith("best") or "best" in summary["best"]["pick"]
    oof = load_tensors(probe_dir / "oof.safetensors")
    assert oof["final|relu1|masc|oof"].shape == (45, 3)
    assert (oof["folds"].numpy() == -1).sum() == tiny_run.holdout.sum() > 0
    assert result.best in result.rows
    with pytest.raises(RunError, match="--force"):
        run_probe(tiny_run, PROBE)


def test_probe_unknown_layer_lists_valid_ones(tiny_run):
    with pytest.raises(ProbeError, match="relu1"):
        run_probe(tiny_run, ProbeConfig(layers="conv9"))


def test_probe_several_checkpoints(tiny_run):
    result = run_probe(tiny_run, ProbeConfig(layers="x,relu2", probes=("masc", "ncm"), folds=3,
                                             checkpoints=("init", "final")))
    assert {r["checkpoint"] for r in result.rows} == {"init", "final"}
    assert set(result.model) == {"init", "final"}


def test_relabel_needs_probe_results_then_writes_ranked_issues(tiny_run):
    with pytest.raises(RunError, match="no probe results"):
        run_relabel(tiny_run, RelabelConfig())
    run_probe(tiny_run, PROBE)
    with pytest.raises(RunError, match="not probed"):
        run_relabel(tiny_run, RelabelConfig(layer="relu3"))
    result = run_relabel(tiny_run, RelabelConfig(ensemble=2))
    rows = read_csv(tiny_run.run.relabel / "labels.csv")
    assert list(rows[0]) == ["path", "given_label", "suggested_label", "label_quality", "score", "is_issue", "action"]
    quality = [float(r["label_quality"]) for r in rows]
    assert quality == sorted(quality) and len(rows) == 45
    assert len(result.summary["sources"]) == 2
    # the cleaned labels file round-trips through `train --labels`
    cleaned = load_data(tiny_run.splits.train.root, result.cleaned)
    assert cleaned.train.paths == tiny_run.splits.train.paths
    changed = (cleaned.train.targets != tiny_run.splits.train.targets).sum()
    assert changed == result.summary["n_relabeled"]  # labels left for review keep their given value


def test_prune_mode_drops_flagged_images(tiny_run):
    run_probe(tiny_run, PROBE)
    result = run_relabel(tiny_run, RelabelConfig(mode="prune", layer="x", probe="ncm"))
    cleaned = load_data(tiny_run.splits.train.root, result.cleaned)
    assert len(cleaned.train) == 45 - result.summary["n_issues"]


def test_retrain_reports_before_after_and_baseline(tiny_run):
    with pytest.raises(RunError, match="no relabel results"):
        run_retrain(tiny_run, RetrainConfig())
    run_probe(tiny_run, PROBE)
    run_relabel(tiny_run, RelabelConfig())
    result = run_retrain(tiny_run, RetrainConfig(epochs=3, patience=2, holdout=0.2))
    m = result.metrics
    for key in ("test_acc_memorized", "test_acc_retrained", "test_acc_baseline_given_labels", "gain_vs_baseline"):
        assert m[key] is not None
    assert (tiny_run.run.retrain / "model.safetensors").exists()


def test_end_to_end_on_digits_with_known_noise(tmp_path):
    """Digits, 40 % symmetric noise: memorize, probe, relabel; the cleaned labels must be much more accurate."""
    data = export_dataset(load_builtin("digits"), tmp_path / "digits", corrupt=0.4, seed=0)
    out = run_pipeline(data, tmp_path / "run", labels_file=data / "noisy_labels.csv",
                       train_cfg=TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=25),
                       probe_cfg=ProbeConfig(probes=("masc", "ncm")), relabel_cfg=RelabelConfig(),
                       retrain_cfg=None)
    s = out.relabel.summary
    assert out.train.train_acc > 0.85                              # (mostly) memorized the noisy labels
    assert out.train.test_acc < out.train.best_test_acc - 0.05     # ... and generalizes worse for it
    assert s["label_accuracy_before"] < 0.72
    assert s["label_accuracy_after"] > s["label_accuracy_before"] + 0.15
    assert s["issue_detection"]["f1"] > 0.75
    best, oracle = out.probe.best, out.probe.oracle
    assert oracle["test_acc"] - best["test_acc"] < 0.06          # label-only pick close to the oracle
    assert best["test_acc"] > out.probe.model["final"]["test_acc"] + 0.05


def test_clean_scans_early_checkpoints_end_to_end_on_digits(tmp_path, monkeypatch):
    from noisefix.data import folders
    from noisefix.stages import runs
    from noisefix.stages.pipeline import run_clean

    data = export_dataset(load_builtin("digits"), tmp_path / "digits", corrupt=0.4, seed=0, train_subset=600,
                          test_subset=200)
    reads, refingerprints = [], []
    monkeypatch.setattr(folders, "_layout", lambda root, _layout=folders._layout: reads.append(root) or _layout(root))
    monkeypatch.setattr(runs, "fingerprint", lambda s, _f=runs.fingerprint: refingerprints.append(1) or _f(s))
    out = run_clean(data, tmp_path / "clean", labels_file=data / "noisy_labels.csv", epochs=4,
                    optimizer="adam", lr=1e-3)
    assert len(reads) == 1 and not refingerprints               # the folder is read once for every stage
    checkpoints = {r["checkpoint"] for r in out.probe.rows}
    assert checkpoints == {"init", "2", "final"}
    assert out.probe.criterion == "holdout_agreement"
    assert (out.probe.out / "dynamics.png").exists()
    chosen = out.relabel.summary["sources"][0]
    assert chosen["checkpoint"] in checkpoints
    best_held = max(r["holdout_agreement"] for r in out.probe.rows)
    assert chosen["holdout_agreement"] == best_held          # selection over checkpoint x layer x probe
    s = out.relabel.summary
    assert s["label_accuracy_after"] > s["label_accuracy_before"]


def test_clean_auto_model_per_dataset(clothing1m, make_image_folder):
    """auto: a pretrained ResNet-50 on Clothing1M as it ships (unless weights are given), the small MLP on small
    images; a named model and its weights pass through."""
    from noisefix.stages.pipeline import CLOTHING1M_MODEL, clean_model

    c1m = load_data(clothing1m).train
    assert clean_model(clothing1m, c1m, "auto") == CLOTHING1M_MODEL == ("resnet50", "DEFAULT")
    given = clean_model(clothing1m, c1m, "auto", "w.pt")                              # by image size, as elsewhere
    assert given[1] == "w.pt" and given[0] in ("mlp_small", "resnet18")
    digits = make_image_folder()
    assert clean_model(digits, load_data(digits).train, "auto") == ("mlp_small", None)
    assert clean_model(clothing1m, c1m, "cnn") == ("cnn", None)


def test_clean_on_clothing1m_starts_from_imagenet_resnet50_in_the_hub_cache(clothing1m, hub, tmp_path):
    """Without the weights file: a one-line error naming where it looked; with it (random weights saved as
    torchvision's file): clean fine-tunes resnet50 from it."""
    import torch
    import torchvision

    from noisefix.config import ImageConfig
    from noisefix.nn.weights import hub_file
    from noisefix.stages.pipeline import run_clean

    with pytest.raises(RunError, match="resnet50.*--weights PATH") as err:
        run_clean(clothing1m, tmp_path / "missing", epochs=1, image=ImageConfig(image_size=32, workers=0))
    assert "\n" not in str(err.value)
    path = hub_file(torchvision.models.ResNet50_Weights.DEFAULT)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet50().state_dict(), path)
    outcome = run_clean(clothing1m, tmp_path / "run", epochs=1, image=ImageConfig(image_size=32, workers=0),
                        review=0)
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["arch"] == "resnet50" and info["weights"] is not None
    assert outcome.relabel.summary["n_images"] == len(load_data(clothing1m).train)
