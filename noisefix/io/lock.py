"""One writer per output directory: an exclusive lock (the `filelock` package) beside the directory.

Every writer of a run or output folder (train, probe, relabel, retrain, clean, reproduce, data export) holds
`writer_lock(folder)` while it builds the folder's new contents; a second process asking for the same folder
gets a one-line RunError at once instead of mixing its files into the first one's. The lock file is
`<parent>/.<name>.lock` (it stays, empty, after the lock is released: deleting it would race with a waiting
writer). A stage folder inside a run (RUN/probe, RUN/relabel, ...) is locked through its run, so a `train
--force` cannot replace a run while `probe` writes into it.

Holding the lock also proves that no other noisefix process is writing the folder, so the debris a killed
writer left beside it (`<name>.partial`, `[.]<name>.old-PID`, `[.]<name>.tmp-PID`) is removed then, and only then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from noisefix.errors import RunError

RUN_MARKER = "manifest.json"  # a folder holding this file is a run: its stage folders are locked through it


def lock_path(folder: Path) -> Path:
    """Where the lock of `folder` lives: a hidden sibling `.<name>.lock`."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.lock")


def lock_owner(folder: Path) -> Path:
    """The folder whose lock guards writes to `folder`: its run when `folder` is a stage folder of a run."""
    folder = Path(folder)
    parent = folder.parent
    if parent != folder and (parent / RUN_MARKER).is_file():
        return parent
    return folder


def stale_siblings(folder: Path) -> list[Path]:
    """What an interrupted writer of `folder` may have left beside it."""
    folder = Path(folder)
    parent, name = folder.parent, folder.name
    if not parent.is_dir():
        return []
    out = []
    for entry in os.scandir(parent):
        n = entry.name
        if n == f"{name}.partial" or n.startswith(tuple(f"{dot}{name}.{kind}-" for dot in ("", ".")
                                                        for kind in ("old", "tmp"))):
            out.append(parent / n)
    return sorted(out)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def writer_lock(folder: Path, *, clean_stale: bool = True) -> Iterator[Path]:
    """Hold the exclusive writer lock of `folder` (of its run, for a stage folder) for the block.

    Raises RunError at once when another process holds it. With `clean_stale`, leftovers of a killed writer
    of `folder` are removed once the lock is held. Yields the lock file's path.
    """
    folder = Path(folder)
    owner = lock_owner(folder)
    path = lock_path(owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunError(f"another noisefix process is writing {owner} (lock {path}); wait for it or choose "
                       "another --out") from None
    try:
        if clean_stale:
            for stale in stale_siblings(folder):
                _remove(stale)
        yield path
    finally:
        lock.release()
