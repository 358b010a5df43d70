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

from noisefix.errors import ConfigError, RunError
from noisefix.io.lock import writer_lock

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
    except OSError as exc:  # a full disk fails in write or fsync, where the OS names no file: name it
        raise _naming(exc, path)
    finally:
        tmp.unlink(missing_ok=True)


def _naming(exc: OSError, path: Path) -> OSError:
    if exc.filename is None:
        exc.filename = str(path)
    return exc


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
    except UnicodeDecodeError:
        raise RunError(f"{path} is not UTF-8 text; it is damaged: re-run the stage that writes it") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise RunError(f"{path} is nested too deeply to be a noisefix file; re-run the stage that writes it") from None


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


def read_csv(path: Path, *, required: Iterable[str] = ()) -> list[dict[str, str]]:
    """The rows of a CSV file written by `write_csv`; RunError naming the file when it is missing, not UTF-8,
    unreadable, or its header lacks one of the `required` columns."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise RunError(f"missing file {path}; was the stage that writes it run?") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path} is not a readable CSV file ({type(exc).__name__}); re-run the stage that "
                       "writes it") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise RunError(f"{path} lacks the column(s) {', '.join(missing)} (header: {','.join(header)}); it was "
                       "edited or damaged: restore it or re-run the stage that writes it")
    return rows


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (never pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except OSError as exc:
        raise _naming(exc, path)
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # how safetensors reports a failed write (a full disk)
            raise
        raise RunError(f"cannot write {path} ({safetensors_reason(exc)}); check the free disk space and the "
                       "permissions, or choose another --out") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: Path, *, required: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; RunError naming the file when it is missing, truncated, not
    safetensors (a garbage or lying header), or lacks one of the `required` keys."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"missing tensor file {path}; was the stage that writes it run?")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError... on a broken file
        raise RunError(f"{path} is not a readable safetensors file ({safetensors_reason(exc)}); it is damaged "
                       "or not written by noisefix: re-run the stage that writes it (with --force)") from None
    missing = [k for k in required if k not in tensors]
    if missing:
        raise RunError(f"{path} lacks the tensor(s) {', '.join(missing[:3])}; it was not written by this "
                       "stage: re-run it with --force")
    return tensors


def safetensors_reason(exc: BaseException) -> str:
    """A short one-line reason from a safetensors / torch error (no file paths, at most 100 characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:100]


@contextlib.contextmanager
def staged_dir(final: Path, *, force: bool, what: str) -> Iterator[Path]:
    """Build a directory under `<final>.partial` and swap it into `final` only if the block succeeds.

    Holds the writer lock of `final` (of its run, for a stage folder; io/lock.py) for the whole block: a
    second writer gets a RunError at once. Refuses when `final` exists and is non-empty unless `force`; with
    `force` the old directory is replaced only after the new one is complete. Leftovers of a killed writer
    (a stale `.partial`, `.old-PID`) are discarded once the lock is held.
    """
    final = Path(final)
    with writer_lock(final):
        check_writable(final, force=force, what=what)
        partial = partial_path(final)
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


def check_writable(final: Path, *, force: bool, what: str, elsewhere: str | None = None) -> None:
    """Raise RunError if `final` exists with content and `force` is not set; the message names `elsewhere`
    (e.g. "--out"), the option that writes somewhere else, when the command has one."""
    final = Path(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not force:
        other = f", or choose another {elsewhere}" if elsewhere else ""
        raise RunError(f"{what} already exists at {final}; pass --force to replace it{other}")


def check_outside(path: Path, data_root: Path, *, what: str) -> None:
    """ConfigError when `path` is the data folder, inside it or contains it: noisefix never writes into data."""
    root, target = Path(data_root).resolve(), Path(path).resolve()
    if target == root or root in target.parents or target in root.parents:
        raise ConfigError(f"{what} {path} would be inside (or contain) the data folder {data_root}; noisefix "
                          "never writes into your data: choose a folder elsewhere")
