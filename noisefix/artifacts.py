"""Run-directory layout and atomic file I/O (JSON, JSONL, CSV, YAML, safetensors).

Every file is written to a temporary sibling and renamed into place, so a crash or Ctrl-C never leaves a
half-written artifact. Whole directories (a run, a stage's output folder) are built under `<name>.partial`
and swapped in only when complete; an existing one is replaced only with `force`.

Run directory:
    manifest.json        versions, argv, seeds, data root and fingerprint
    config.yaml          the resolved training config
    model.json           arch, input shape, classes, saved checkpoints, best epoch
    model.safetensors    final weights
    checkpoints/         epoch_0000.safetensors (initial weights, always) and other saved epochs
    metrics.jsonl        one line per epoch
    labels.csv           path,label[,clean_label]: the labels the model was trained on
    probe/ relabel/ retrain/   stage outputs
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from noisefix import __version__
from noisefix.errors import RunError

RUNS_DIR = Path("runs")


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"missing file {path}; was the stage that writes it run?") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one JSON line (used for per-epoch metrics inside a `.partial` directory)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, default=_json_default) + "\n")
        fh.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise RunError(f"missing file {path}; was the stage that writes it run?") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (never pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).exists():
        raise RunError(f"missing tensor file {path}")
    return load_file(str(path))


@contextlib.contextmanager
def staged_dir(final: Path, *, force: bool, what: str) -> Iterator[Path]:
    """Build a directory under `<final>.partial` and swap it into `final` only if the block succeeds.

    Refuses when `final` exists and is non-empty unless `force`; with `force` the old directory is replaced
    only after the new one is complete. A stale `.partial` from an earlier crash is discarded first.
    """
    final = Path(final)
    check_writable(final, force=force, what=what)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def check_writable(final: Path, *, force: bool, what: str) -> None:
    """Raise RunError if `final` exists with content and `force` is not set."""
    final = Path(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not force:
        raise RunError(f"{what} already exists at {final}; pass --force to replace it, or choose another --out")


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
