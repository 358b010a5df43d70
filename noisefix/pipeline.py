"""Stages chained end to end: the digits demo (and the building block for `clean` and `reproduce`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisefix import artifacts
from noisefix.config import ProbeConfig, RelabelConfig, RetrainConfig, TrainConfig
from noisefix.report import NullReporter
from noisefix.stage_probe import ProbeOutcome, run_probe
from noisefix.stage_relabel import RelabelOutcome, run_relabel
from noisefix.stage_retrain import RetrainOutcome, run_retrain
from noisefix.stages import TrainOutcome, open_run, run_train

DEMO_NOISE = 0.4


@dataclass
class PipelineOutcome:
    train: TrainOutcome
    probe: ProbeOutcome
    relabel: RelabelOutcome
    retrain: RetrainOutcome | None


def run_pipeline(data: Path, run: Path, *, labels_file: Path | None, train_cfg: TrainConfig,
                 probe_cfg: ProbeConfig, relabel_cfg: RelabelConfig, retrain_cfg: RetrainConfig | None,
                 force: bool = False, reporter=None) -> PipelineOutcome:
    """train -> probe -> relabel -> (retrain) on one image folder, writing one run directory."""
    reporter = reporter or NullReporter()
    trained = run_train(data, train_cfg, labels_file=labels_file, out=run, force=force, reporter=reporter)
    loaded = open_run(run, reporter=reporter)
    probed = run_probe(loaded, probe_cfg, force=True, reporter=reporter)
    relabeled = run_relabel(loaded, relabel_cfg, force=True, reporter=reporter)
    retrained = run_retrain(loaded, retrain_cfg, force=True, reporter=reporter) if retrain_cfg else None
    return PipelineOutcome(trained, probed, relabeled, retrained)


def run_demo(out: Path, *, force: bool = False, seed: int = 0, reporter=None) -> PipelineOutcome:
    """Digits with 40 % symmetric noise: export, memorize with the paper's MLP, probe, relabel, retrain."""
    from noisefix.datasets import export_dataset, load_builtin

    reporter = reporter or NullReporter()
    out = Path(out)
    artifacts.check_writable(out, force=force, what="demo output")
    data = out / "digits"
    export_dataset(load_builtin("digits"), data, corrupt=DEMO_NOISE, seed=seed, force=True)
    reporter.info(f"exported scikit-learn digits to {data} with {DEMO_NOISE:.0%} symmetric label noise (seed {seed})")
    train_cfg = TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=300, seed=seed)
    return run_pipeline(data, out / "run", labels_file=data / "noisy_labels.csv", train_cfg=train_cfg,
                        probe_cfg=ProbeConfig(seed=seed), relabel_cfg=RelabelConfig(),
                        retrain_cfg=RetrainConfig(seed=seed), force=True, reporter=reporter)
