"""Stages chained end to end: `noisefix demo` on digits and `noisefix clean`, the one-shot cleaning command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from noisefix.config import ImageConfig, ProbeConfig, RelabelConfig, RetrainConfig, TrainConfig
from noisefix.io.atomic import check_writable
from noisefix.stages.probe import ProbeOutcome, run_probe
from noisefix.stages.relabel import RelabelOutcome, run_relabel
from noisefix.stages.retrain import RetrainOutcome, run_retrain
from noisefix.stages.runs import open_run
from noisefix.stages.train import TrainOutcome, run_train
from noisefix.ui.reporter import Reporter, or_null

DEMO_NOISE = 0.4


@dataclass
class PipelineOutcome:
    train: TrainOutcome
    probe: ProbeOutcome
    relabel: RelabelOutcome
    retrain: RetrainOutcome | None


def run_pipeline(data: Path, run: Path, *, labels_file: Path | None, train_cfg: TrainConfig,
                 probe_cfg: ProbeConfig, relabel_cfg: RelabelConfig, retrain_cfg: RetrainConfig | None,
                 force: bool = False, reporter: Reporter | None = None, weights=None,
                 image: ImageConfig | None = None, classes_file: Path | None = None) -> PipelineOutcome:
    """train -> probe -> relabel -> (retrain) on one image folder, writing one run directory. `weights`,
    `image` and `classes_file` go to `run_train` (a pretrained start is checkpoint 0)."""
    reporter = or_null(reporter)
    trained = run_train(data, train_cfg, labels_file=labels_file, out=run, force=force, reporter=reporter,
                        weights=weights, image=image, classes_file=classes_file)
    loaded = open_run(run, reporter=reporter)
    probed = run_probe(loaded, probe_cfg, force=True, reporter=reporter)
    relabeled = run_relabel(loaded, relabel_cfg, force=True, reporter=reporter)
    retrained = run_retrain(loaded, retrain_cfg, force=True, reporter=reporter) if retrain_cfg else None
    return PipelineOutcome(trained, probed, relabeled, retrained)


def run_demo(out: Path, *, force: bool = False, seed: int = 0, reporter: Reporter | None = None) -> PipelineOutcome:
    """Digits with 40 % symmetric noise: export, memorize with the paper's MLP, probe, relabel, retrain."""
    from noisefix.data.builtin import export_dataset, load_builtin

    reporter = or_null(reporter)
    out = Path(out)
    check_writable(out, force=force, what="demo output")
    data = out / "digits"
    export_dataset(load_builtin("digits"), data, corrupt=DEMO_NOISE, seed=seed, force=True)
    reporter.info(f"exported scikit-learn digits to {data} with {DEMO_NOISE:.0%} symmetric label noise (seed {seed})")
    train_cfg = TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=300, seed=seed)
    return run_pipeline(data, out / "run", labels_file=data / "noisy_labels.csv", train_cfg=train_cfg,
                        probe_cfg=ProbeConfig(seed=seed), relabel_cfg=RelabelConfig(),
                        retrain_cfg=RetrainConfig(seed=seed), force=True, reporter=reporter)


CLEAN_SCHEDULE = (1, 2, 4, 8, 16, 32, 64)


def clean_train_config(model: str, *, epochs: int, seed: int, **overrides) -> TrainConfig:
    """The paper's recipe for `model`, stopped at `epochs`, with the early checkpoint schedule 1, 2, 4, 8, ..."""
    return TrainConfig.for_model(model, epochs=epochs, seed=seed,
                                 save_epochs=tuple(e for e in CLEAN_SCHEDULE if e < epochs), **overrides)


def run_clean(data: Path, out: Path, *, model: str = "mlp", labels_file: Path | None = None, epochs: int = 16,
              probes: tuple[str, ...] = ("masc", "ncm"), retrain: bool = False, seed: int = 0,
              force: bool = False, reporter: Reporter | None = None, weights=None,
              image: ImageConfig | None = None, classes_file: Path | None = None,
              **train_overrides) -> PipelineOutcome:
    """The practitioner's one-shot cleaning: a short training run with early checkpoints (no memorization),
    every checkpoint x layer x probe scored, relabel from the one with the best held-out agreement.

    With `weights` the network is fine-tuned from them and the pretrained network itself is checkpoint 0
    (init), scored like every other. `train_overrides` go to the training config (e.g. optimizer, lr,
    on_bad_image)."""
    image = image or ImageConfig()
    probe_cfg = ProbeConfig(probes=probes, checkpoints=("all",), seed=seed, workers=image.workers)
    return run_pipeline(Path(data), Path(out), labels_file=labels_file,
                        train_cfg=clean_train_config(model, epochs=epochs, seed=seed, **train_overrides),
                        probe_cfg=probe_cfg, relabel_cfg=RelabelConfig(),
                        retrain_cfg=RetrainConfig(seed=seed) if retrain else None, force=force,
                        reporter=reporter, weights=weights, image=image, classes_file=classes_file)
