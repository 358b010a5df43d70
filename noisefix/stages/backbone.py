"""Training-free cleaning: `noisefix probe DATA --model NAME --weights W` without a prior run.

A run directory is written around the pretrained backbone itself -- its weights (with a fresh head for the K
classes) are both checkpoint 0 and the final weights, nothing is trained, no image is held out -- so that
`probe` scores every default layer of it (stage outputs and pooled features, cross-fitted probes, the pick by
out-of-fold agreement with the given labels, which no training has inflated) and `relabel --layer best` then
works on it like on any run. Without weights there is nothing worth probing: an untrained network's
features are random, and the message says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from noisefix.config import ImageConfig, TrainConfig, dump_yaml
from noisefix.data.transforms import parse_channels, parse_size
from noisefix.errors import ConfigError, RunError
from noisefix.io.atomic import save_tensors, staged_dir, write_csv, write_json, write_text
from noisefix.io.run_dir import RunDir, file_sha256, find_latest_run, make_manifest
from noisefix.nn.device import seed_everything
from noisefix.nn.models import build_model
from noisefix.nn.weights import spec_metadata, torchvision_names
from noisefix.stages.inputs import image_spec_for
from noisefix.stages.runs import LoadedRun, open_run
from noisefix.stages.train import check_out, default_run_path, image_fields, load_checked, write_run_labels
from noisefix.ui.reporter import Reporter, escape, or_null


def untrained_probe_error(data_root: Path, model: str) -> RunError:
    """The error for `probe DATA --model NAME` with neither a run nor weights."""
    pretrained = (f"--weights DEFAULT (torchvision's pretrained {model}) or --weights FILE" if model in torchvision_names()
                  else f"--weights FILE (a {model} state dict, e.g. a run's model.safetensors)")
    return RunError(f"no run for data {data_root} and no --weights: probing an untrained {model} would score "
                    f"random features; run `noisefix clean {data_root} --model {model}` to train and clean, or "
                    f"pass {pretrained}")


def _model_info(model: str, spec_shape, classes: list[str]) -> dict:
    """model.json of a backbone run: epoch 0 is the only checkpoint and the final one; nothing trained."""
    return {"arch": model, "in_shape": list(spec_shape), "num_classes": len(classes), "classes": classes,
            "checkpoints": [0], "final_epoch": 0, "holdout": 0, "trained": False,
            "best_by": None, "best_epoch": None, "best_test_acc": None, "oracle_epoch": None,
            "oracle_test_acc": None, "final_train_acc": None, "final_test_acc": None}


def make_backbone_run(data_root: Path, model: str, weights, *, labels_file: Path | None = None,
                      classes_file: Path | None = None, image: ImageConfig | None = None, out: Path | None = None,
                      seed: int = 0, on_bad_image: str = "fail", force: bool = False,
                      reporter: Reporter | None = None) -> RunDir:
    """Write a run directory around `model` with pretrained `weights` on the data (no training); return it."""
    reporter = or_null(reporter)
    if weights is None:
        raise untrained_probe_error(data_root, model)
    if not model:
        raise ConfigError("--weights needs --model NAME (the architecture the weights are for), e.g. --model resnet18")
    image = image or ImageConfig()
    out = Path(out) if out else default_run_path(data_root, f"{model}-pretrained")
    check_out(out, data_root, force=force)
    cfg = TrainConfig.for_model(model, seed=seed, on_bad_image=on_bad_image)  # what retrain would fine-tune with
    splits, data_fingerprint, skipped = load_checked(data_root, labels_file, classes_file, on_bad_image, reporter)
    train = splits.train
    spec = image_spec_for(train, model, weights, image)
    seed_everything(seed)
    net = build_model(model, in_shape=spec.shape, num_classes=len(train.classes), weights=weights)
    reporter.info(f"probing pretrained [bold]{escape(model)}[/] ({escape(str(weights))}, {net.variant} architecture) without training: "
                  f"{len(train)} images, {len(train.classes)} classes, input {spec.shape}, "
                  f"{spec.normalization} normalization")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    with staged_dir(out, force=force, what="run directory") as tmp:
        run = RunDir(tmp)
        manifest = make_manifest(
            argv=sys.argv, seed=seed, data_root=data_root, labels_file=labels_file, fingerprint=data_fingerprint,
            extra={"model": model, "stage": "pretrained",
                   "classes_file": str(Path(classes_file).resolve()) if classes_file else None})
        write_json(run.manifest, manifest)
        meta = {"epoch": "0", **spec_metadata(spec.to_dict()), "run_id": manifest["run_id"]}
        if skipped:
            write_csv(run.skipped, ["path", "reason"], skipped)
        write_text(run.config, dump_yaml({"train": cfg, "image": image}))
        write_run_labels(run.labels, splits, np.zeros(len(train), dtype=bool))
        save_tensors(run.checkpoint(0), state, meta)
        save_tensors(run.weights, state, meta)
        write_json(run.model_json, {**_model_info(model, spec.shape, train.classes),
                                    **image_fields(spec, net, weights, classes_file),
                                    "run_id": manifest["run_id"], "labels_sha256": file_sha256(run.labels)})
    return RunDir(out)


def _check_same_inputs(loaded: LoadedRun, image: ImageConfig, classes_file: Path | None) -> None:
    """An existing run is probed as it was trained: options that would change its inputs are refused."""
    spec = loaded.spec
    size, channels = parse_size(image.image_size), parse_channels(image.channels)
    if size is not None and size != spec.size:
        raise ConfigError(f"run {loaded.run.path} was trained on {spec.size[0]}x{spec.size[1]} images; probe "
                          "feeds its network what it was trained on: drop --image-size, or train a new run with it")
    if channels is not None and channels != spec.channels:
        raise ConfigError(f"run {loaded.run.path} was trained on {spec.channels}-channel images; drop --channels")
    if classes_file is not None and loaded.classes_file != Path(classes_file).resolve():
        raise ConfigError(f"run {loaded.run.path} was trained with classes file {loaded.classes_file}; "
                          "drop --classes (a run's classes are fixed), or train a new run with it")


def probe_target(data: Path | None, *, run: Path | None = None, model: str | None = None, weights=None,
                 labels_file: Path | None = None, classes_file: Path | None = None,
                 image: ImageConfig | None = None, out: Path | None = None, seed: int = 0,
                 on_bad_image: str = "fail", force: bool = False, reporter: Reporter | None = None) -> LoadedRun:
    """The run `probe` scores: with `weights`, a new backbone run on DATA (see `make_backbone_run`); else
    `run`, or the newest run for DATA (and `model`). Asking for a model that has no run and no weights is
    an error that points to `clean` and `--weights`."""
    image = image or ImageConfig()
    if weights is not None:
        if run is not None:
            raise ConfigError("--weights makes a new run around the pretrained network; drop --run, or drop "
                              "--weights to probe that run")
        if data is None:
            raise ConfigError("--weights needs the image folder to probe: noisefix probe DATA --model NAME --weights W")
        made = make_backbone_run(data, model, weights, labels_file=labels_file, classes_file=classes_file,
                                 image=image, out=out, seed=seed, on_bad_image=on_bad_image, force=force,
                                 reporter=reporter)
        return open_run(made.path, reporter=reporter)
    if labels_file is not None or out is not None:
        raise ConfigError("--labels and --out make a new run, which needs --weights; a run is probed with the "
                          "labels it was trained on")
    if run is None and data is not None and model is not None:
        try:
            find_latest_run(data_root=data, model=model)
        except RunError:
            raise untrained_probe_error(data, model) from None
    loaded = open_run(run, data_root=data, model=model, reporter=reporter)
    _check_same_inputs(loaded, image, classes_file)
    return loaded
