"""The run directory: every file name of a run (`RunDir`), its manifest, finding the newest run, and the
keys under which per-image probe scores are stored.

Run directory:
    manifest.json        versions, argv, seeds, data root and fingerprint
    config.yaml          the resolved training config
    model.json           arch, input shape, classes, saved checkpoints, best epoch
    model.safetensors    final weights
    checkpoints/         epoch_0000.safetensors (initial weights, always) and other saved epochs
    metrics.jsonl        one line per epoch
    labels.csv           path,label[,clean_label]: the labels the model was trained on
    probe/ relabel/ retrain/   stage outputs"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisefix import __version__
from noisefix.errors import RunError

RUNS_DIR = Path("runs")


def environment() -> dict[str, str]:
    import torchvision

    return {
        "noisefix": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (see the module docstring for the layout)."""

    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def model_json(self) -> Path:
        return self.path / "model.json"

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def labels(self) -> Path:
        return self.path / "labels.csv"

    @property
    def probe(self) -> Path:
        return self.path / "probe"

    @property
    def relabel(self) -> Path:
        return self.path / "relabel"

    @property
    def retrain(self) -> Path:
        return self.path / "retrain"

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:04d}.safetensors"

    def require(self) -> "RunDir":
        """Raise a clear RunError unless this is a complete training run."""
        if not self.path.is_dir():
            raise RunError(f"run directory not found: {self.path}; train one first with `noisefix train DATA`")
        for needed in (self.manifest, self.model_json, self.weights):
            if not needed.exists():
                raise RunError(f"{self.path} is not a complete run (missing {needed.name}); re-run `noisefix train`")
        return self


def make_manifest(*, argv: list[str], seed: int, data_root: Path, labels_file: Path | None,
                  fingerprint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": environment(),
        "argv": list(argv),
        "seed": seed,
        "data_root": str(Path(data_root).resolve()),
        "labels_file": str(Path(labels_file).resolve()) if labels_file else None,
        "data_fingerprint": fingerprint,
    }
    manifest.update(extra or {})
    return manifest


def find_latest_run(*, runs_dir: Path = RUNS_DIR, data_root: Path | None = None, model: str | None = None,
                    stage: str | None = None) -> Path:
    """The newest complete run under `runs_dir`, for the same data (and model) when given.

    `stage` ("probe", "relabel") restricts to runs where that stage has written its outputs.
    """
    runs_dir = Path(runs_dir)
    candidates = []
    if runs_dir.is_dir():
        for manifest in runs_dir.glob("*/manifest.json"):
            run = manifest.parent
            if run.name.endswith(".partial"):
                continue
            try:
                info = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if data_root is not None and info.get("data_root") != str(Path(data_root).resolve()):
                continue
            if model is not None and info.get("model") != model:
                continue
            if stage is not None and not (run / stage).is_dir():
                continue
            candidates.append((manifest.stat().st_mtime, run))
    if not candidates:
        where = f" for data {data_root}" if data_root else ""
        need = f" with {stage} results" if stage else ""
        raise RunError(f"no run{need}{where} under {runs_dir}/; pass --run DIR or train one with `noisefix train`")
    return max(candidates)[1]
