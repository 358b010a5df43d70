"""Opening a finished training run: its files checked, its data reloaded and matched by fingerprint, its
weights (any saved checkpoint) loaded into a fresh model; checkpoint names parsed in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from noisefix.data.folders import DataSplits, fingerprint, load_data
from noisefix.data.transforms import ImageSpec
from noisefix.errors import NoisefixError, RunError
from noisefix.io.atomic import read_csv
from noisefix.io.run_dir import (
    RUNS_DIR,
    RunDir,
    find_latest_run,
    read_manifest,
    read_model_info,
    verify_identity,
)
from noisefix.nn.models import build_model, load_weights
from noisefix.stages.inputs import run_spec
from noisefix.stages.train import apply_skips
from noisefix.ui.reporter import Reporter, escape, or_null


@dataclass
class LoadedRun:
    run: RunDir
    manifest: dict
    model_info: dict
    splits: DataSplits
    holdout: np.ndarray  # bool (N,) over splits.train: images the network was not trained on

    @property
    def spec(self) -> ImageSpec:
        """How the run's images become model inputs (size, channels, normalization), as trained."""
        return run_spec(self.model_info)

    @property
    def classes_file(self) -> Path | None:
        """The classes file the run's labels were read with (index labels are positions in it), if any."""
        found = self.manifest.get("classes_file")
        return Path(found) if found else None


def open_run(run_path: Path | None, *, data_root: Path | None = None, model: str | None = None,
             stage: str | None = None, reporter: Reporter | None = None, data: DataSplits | None = None) -> LoadedRun:
    """Resolve a run (the newest matching one under ./runs/ when not given), reload and verify its data.

    `data`: the run's data as `run_train` read it in this process (`TrainOutcome.data`), used instead of reading
    the folder and fingerprinting it again (the run's manifest holds that fingerprint); the classes are still
    checked."""
    reporter = or_null(reporter)
    if run_path is None:
        run_path = find_latest_run(data_root=data_root, model=model, stage=stage)
        reporter.info(f"using run [bold]{escape(str(run_path))}[/] (newest under {RUNS_DIR}/; pass --run to choose)")
    run = RunDir(Path(run_path)).require()
    manifest = read_manifest(run.manifest)
    info = read_model_info(run.model_json)
    verify_identity(run, manifest, info)
    _check_spec(run, info)
    root = Path(data_root) if data_root is not None else Path(manifest["data_root"])
    labels_file, classes_file = manifest.get("labels_file"), manifest.get("classes_file")
    splits = data if data is not None else load_data(root, Path(labels_file) if labels_file else None,
                                                     classes_file=Path(classes_file) if classes_file else None)
    if splits.train.classes != info["classes"]:
        raise RunError(f"the data at {root} has classes {splits.train.classes[:6]}... but run {run.path} was "
                       f"trained on {info['classes'][:6]}...; pass the data the run was trained on")
    if data is None and fingerprint(splits) != manifest["data_fingerprint"]:
        raise RunError(f"the data at {root} differs from the data run {run.path} was trained on (fingerprint "
                       "mismatch: images or labels changed); retrain, or pass the original data")
    if run.skipped.exists():
        splits = apply_skips(splits, {r["path"] for r in read_csv(run.skipped, required=("path",))})
    rows = read_csv(run.labels, required=("path", "label", "split"))  # no split column: no held-out set
    held = {r["path"] for r in rows if r["split"] == "holdout"}
    holdout = np.array([p in held for p in splits.train.paths], dtype=bool)
    return LoadedRun(run=run, manifest=manifest, model_info=info, splits=splits, holdout=holdout)


def _check_spec(run: RunDir, info: dict) -> None:
    """model.json's "image" entry (how images become inputs) must build an ImageSpec."""
    try:
        run_spec(info)
    except (NoisefixError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RunError(f"{run.model_json}: unreadable 'image' entry ({type(exc).__name__}: {str(exc)[:80]}); "
                       "restore the file or re-run `noisefix train --force`") from None


def load_run_model(loaded: LoadedRun, checkpoint: str = "final") -> tuple[torch.nn.Module, str]:
    """Rebuild the run's model with the weights of `checkpoint` (final | best | init | EPOCH)."""
    info = loaded.model_info
    model = build_model(info["arch"], in_shape=tuple(info["in_shape"]), num_classes=info["num_classes"],
                        variant=info.get("variant"))
    run = loaded.run
    which = parse_checkpoint(checkpoint)
    if which == "final":
        path, label = run.weights, f"final (epoch {info['final_epoch']})"
    elif which == "best":
        path, label = run.best_checkpoint, f"best (epoch {info.get('best_epoch')})"
    else:
        path, label = run.checkpoint(which), f"epoch {which}"
    if not path.exists():
        have = ", ".join(["final", "best"] + [str(e) for e in info.get("checkpoints", [])])
        raise RunError(f"checkpoint {checkpoint!r} not saved in {run.path}; available: {have} "
                       "(train with --save-every to keep more)")
    load_weights(model, path)
    model.eval()
    return model, label


def parse_checkpoint(name: str) -> str | int:
    """The one parser of checkpoint names: "final", "best", or an epoch number ("init" is epoch 0)."""
    if name in ("final", "best"):
        return name
    if name == "init":
        return 0
    try:
        return int(name)
    except ValueError:
        raise RunError(f"checkpoint must be final, best, init or an epoch number, got {name!r}") from None


def expand_checkpoints(spec: tuple[str, ...], model_info: dict) -> list[str]:
    """`all` -> init, every saved epoch, final; otherwise the names as given (deduplicated, in order), each
    checked by `parse_checkpoint` before anything is extracted."""
    out: list[str] = []
    for item in spec:
        if item == "all":
            out += ["init"] + [str(e) for e in model_info.get("checkpoints", []) if e not in (0, model_info["final_epoch"])]
            out.append("final")
        else:
            parse_checkpoint(item)
            out.append(item)
    return list(dict.fromkeys(out))


def checkpoint_epochs(checkpoints: list[str], model_info: dict) -> dict[str, int]:
    """Epoch number of each probed checkpoint that has one (init = 0, final = the last epoch; not best)."""
    out = {}
    for c in checkpoints:
        which = parse_checkpoint(c)
        if which == "final":
            out[c] = int(model_info["final_epoch"])
        elif which != "best":
            out[c] = which
    return out
