"""Atomic file I/O (bytes, text, JSON, JSONL, CSV, safetensors) and staged output directories.

Every file is written to a temporary sibling and renamed into place, so a crash or Ctrl-C never leaves a
half-written artifact. Whole directories (a run, a stage's output folder) are built under `<name>.partial`
and swapped in only when complete; an existing one is replaced only with `force`. The one implementation:
every other module writes through these functions.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from noisefix.errors import RunError

PARTIAL = ".partial"  # suffix of a directory being built by `staged_dir`


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
    partial = partial_path(final)
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


def partial_path(final: Path) -> Path:
    """Where `staged_dir` builds `final` until it is complete."""
    return final.with_name(final.name + PARTIAL)


def is_partial(path: Path) -> bool:
    """Whether `path` is a directory still being built (or left over by a crash)."""
    return Path(path).name.endswith(PARTIAL)


def check_writable(final: Path, *, force: bool, what: str) -> None:
    """Raise RunError if `final` exists with content and `force` is not set."""
    final = Path(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not force:
        raise RunError(f"{what} already exists at {final}; pass --force to replace it, or choose another --out")
