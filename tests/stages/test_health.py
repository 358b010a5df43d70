"""The training health check of `clean` (stages.health) and the cheap-probe screening of `probe`."""

import math

import numpy as np

from noisefix.config import ProbeConfig
from noisefix.stages.health import check_health
from noisefix.stages.pipeline import clean_train_config, run_clean
from noisefix.probes import screen_probes


def _row(checkpoint, layer, agree, probe="ncm"):
    return {"checkpoint": checkpoint, "layer": layer, "probe": probe, "holdout_agreement": agree}


def test_healthy_run_gives_no_warning():
    metrics = [{"loss": 2.1}, {"loss": 1.6}]
    rows = [_row("init", "relu1", 0.3), _row("1", "relu1", 0.5), _row("init", "x", 0.6)]
    assert check_health(metrics, rows, rows[1], criterion="holdout_agreement", num_classes=10) == []


def test_loss_that_barely_moved_is_reported():
    metrics = [{"loss": 2.3032}, {"loss": 2.2854}]           # the 300-image folder of the issue
    rows = [_row("init", "relu1", 0.3), _row("1", "relu1", 0.5)]
    warns = check_health(metrics, rows, rows[1], criterion="holdout_agreement", num_classes=10)
    assert len(warns) == 1 and "barely moved" in warns[0] and "--lr" in warns[0]
    assert check_health([{"loss": float("nan")}], rows, rows[1], criterion="holdout_agreement", num_classes=10)


def test_untrained_pick_and_no_gain_over_init_are_reported():
    rows = [_row("init", "relu1", 0.6), _row("1", "relu1", 0.5), _row("init", "x", 0.7)]
    warns = check_health([{"loss": math.log(10) * 0.5}], rows, rows[2], criterion="holdout_agreement",
                         num_classes=10)
    assert any("untrained network" in w for w in warns) and any("raw input" in w for w in warns)


def test_pretrained_start_is_named_and_weights_are_not_suggested_again():
    rows = [_row("init", "relu1", 0.6), _row("1", "relu1", 0.5)]
    warns = check_health([{"loss": 2.3}], rows, rows[0], criterion="holdout_agreement", num_classes=10,
                         pretrained=True)
    assert len(warns) == 3 and not any("--weights W`" not in w and "--weights" in w for w in warns)
    assert all("untrained" not in w for w in warns) and "pretrained network" in warns[1]
    assert "training-free `noisefix probe" in warns[2]
    plain = check_health([{"loss": 2.3}], rows, rows[0], criterion="holdout_agreement", num_classes=10)
    assert "or --weights" in plain[0] and "untrained network" in plain[1]


def test_screening_keeps_the_sums_only_probe_first():
    assert screen_probes(("masc", "ncm", "logreg")) == (["ncm"], ["masc", "logreg"])
    assert screen_probes(("masc",)) == ([], ["masc"])


def test_clean_recipe_is_the_fast_one_not_the_papers():
    cfg = clean_train_config("mlp_small", epochs=4, seed=0, lr=None, batch_size=64)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.save_epochs) == ("adam", 1e-3, 64, (2,))


def test_clean_that_cannot_learn_warns_and_records_it(tiny_folder, tmp_path):
    out = run_clean(tiny_folder, tmp_path / "run", epochs=2, lr=1e-9, seed=0)
    health = out.relabel.summary["health"]
    assert not health["ok"] and any("barely moved" in w for w in health["warnings"])
    assert set(out.seconds) >= {"train", "probe", "relabel", "total"}
    masc_layers = {r["layer"] for r in out.probe.rows if r["probe"] == "masc" and r["checkpoint"] == "final"}
    assert 0 < len(masc_layers) <= 2 and "x" not in {r["layer"] for r in out.probe.rows if r["checkpoint"] != "init"}
    assert {r["probe"] for r in out.probe.rows if r["checkpoint"] == "init"} == {"ncm"}  # the untrained baseline
    assert all(r["dim"] > 3 for r in out.probe.rows if r["probe"] == "masc")  # 3 classes: never on the logits
    assert np.isfinite(out.seconds["total"])
    assert ProbeConfig(screen=2).screen == 2


def test_clean_without_a_screening_probe_fits_every_layer(tiny_folder, tmp_path):
    out = run_clean(tiny_folder, tmp_path / "run", epochs=1, seed=0, probes=("masc",))
    trained = {r["layer"] for r in out.probe.rows if r["checkpoint"] != "init"}
    assert {r["probe"] for r in out.probe.rows} == {"masc"} and len(trained) > 2


def test_screen_keeps_the_layers_where_the_costly_probes_quick_fit_agrees_best(tiny_run, monkeypatch):
    """--screen 1 cross-fits MASC only on the layer whose one-off MASC fit on a per-class sample agrees best
    with the held-out labels (not NCM's ranking: on conv layers the two disagree)."""
    from noisefix.probes import probe_class
    from noisefix.scoring import screening
    from noisefix.stages import probe as probe_stage

    real, calls = screening.screening_agreement, []

    def spy(probe, X, labels, folds, **kw):
        value = real(probe, X, labels, folds, **kw)
        calls.append((probe, X.dim, value))
        return value

    monkeypatch.setattr(screening, "screening_agreement", spy)
    out = probe_stage.run_probe(tiny_run, ProbeConfig(probes=("masc", "ncm"), screen=1, folds=3), force=True)
    K = len(tiny_run.splits.train.classes)
    candidates = [r for r in out.rows if r["probe"] == "ncm" and probe_class("masc").informative(r["dim"], K)]
    assert len(candidates) > 1 and [(p, d) for p, d, _ in calls] == [("masc", r["dim"]) for r in candidates]
    best = max(range(len(calls)), key=lambda j: (calls[j][2], -j))
    assert [r["layer"] for r in out.rows if r["probe"] == "masc"] == [candidates[best]["layer"]]
