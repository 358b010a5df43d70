"""Image folders and labels files -> labeled splits with stable sample ids (pixels: images.py; the labels and
classes files as text: labels_file.py).

Layouts (torchvision ``ImageFolder`` order: classes sorted by name, label = position):
- flat: ``DATA/<class>/<image>``, no test split;
- split: ``DATA/train/<class>/...`` plus ``DATA/test/<class>/...`` (or ``DATA/val/...``), the test split
  treated as clean and never relabeled;
- Clothing1M as it ships (``noisy_label_kv.txt`` or ``category_names_eng.txt`` in DATA): noisefix/data/clothing1m.py.
Images are files with an extension in ``IMAGE_EXTENSIONS`` (any case), found recursively inside a class
folder; names starting with "." are skipped. Symlinks that resolve outside DATA are refused.

A labels file overrides the folder labels of the training split and defines it: its rows are the training
samples. CSV with the header ``path,label[,clean_label]``, or whitespace-separated ``path label`` lines without
a header (Clothing1M style). ``path`` is relative to DATA; ``label`` is a class name or else an integer index.
The classes are, in this order of precedence: a classes file (one class name per line; an index label i means
its line i, counting from 0); the training folder's class folders, sorted, when there are at least two and
every row lies inside one of them; the labels themselves (sorted unique names, or "0".."max" when all are
integers). When index labels are read against class folders and most images of some folder carry the index
of another folder, ``DataSplits.warnings`` says so (the indices probably follow another order: give a classes
file). Files that are not regular files (FIFOs, sockets, devices) are listed by the folder scan so that the
image check reports them, and refused in a labels file; they are never opened.

A sample id is the image's POSIX path relative to DATA; every split lists them sorted. N images of C
channels and H x W pixels; nothing under DATA is ever modified.
"""

from __future__ import annotations

import hashlib
import json
import ntpath
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from noisefix.data.labels_file import (
    classes_from_labels,
    index_label_warning,
    label_index,
    read_classes_file,
    read_rows,
)
from noisefix.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


_TEST_DIRS = ("test", "val")


@dataclass
class LabeledImages:
    """One split: N images as sample ids (root-relative POSIX paths, sorted) with int64 (N,) labels."""

    root: Path
    paths: list[str]
    targets: np.ndarray
    classes: list[str]
    clean_targets: np.ndarray | None = None
    known_clean: np.ndarray | None = None  # (N,) clean labels known for some images only, -1 elsewhere (Clothing1M)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class DataSplits:
    """The training split, the clean test split (None for the flat layout) and the labels file's format."""

    train: LabeledImages
    test: LabeledImages | None
    labels_format: str | None
    warnings: list[str] = field(default_factory=list)  # one-line messages for the user (no prints here)


def _inside(real: str, root: Path) -> bool:
    return real == str(root) or real.startswith(str(root) + os.sep)


def _scan_images(folder: Path, root: Path) -> list[str]:
    """Root-relative POSIX paths of the images under ``folder`` (recursive, following inside symlinks)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if not _inside(real, root):
            raise DataError(f"folder {dirpath} is a symlink to {real}, outside {root}; copy the data into it")
        if real in seen:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        _check_utf8(str(rel_dir), root)
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            full = os.path.join(dirpath, name)
            _check_utf8(str(rel_dir / name), root)
            if os.path.islink(full) and not _inside(os.path.realpath(full), root):
                raise DataError(f"image {full} is a symlink to a file outside {root}; copy the file instead")
            found.append(str(rel_dir / name))
    return found


def _check_utf8(rel: str, root: Path) -> None:
    """DataError for a file or folder name that is not valid UTF-8 (the OS hands it over with surrogate escapes):
    it could not be written to a labels file or read back from one."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise DataError(f"the name {shown!r} under {root} is not valid UTF-8; rename it (e.g. with "
                        "`convmv -f latin1 -t utf8`) so it can be listed in labels files") from None


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _sorted_split(root, paths, targets, classes, clean=None) -> LabeledImages:
    order = sorted(range(len(paths)), key=paths.__getitem__)
    pick = np.asarray(order, dtype=np.int64)
    return LabeledImages(
        root=root,
        paths=[paths[i] for i in order],
        targets=np.asarray(targets, dtype=np.int64)[pick],
        classes=list(classes),
        clean_targets=None if clean is None else np.asarray(clean, dtype=np.int64)[pick],
    )


def _load_folder(folder: Path, root: Path) -> LabeledImages:
    """A split from ``folder/<class>/...``; labels from the class folders."""
    classes = _class_dirs(folder)
    per_class = [_scan_images(folder / c, root) for c in classes]
    if not any(per_class):
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"no images ({exts}) in class folders under {folder}; put them in {folder}/<class>/")
    for c, found in zip(classes, per_class):
        if not found:
            raise DataError(f"class folder {folder / c} has no images; add images or remove the folder")
    if len(classes) < 2:
        raise DataError(f"{folder} has only the class folder {classes[0]!r}; a classifier needs at least 2")
    paths = [p for found in per_class for p in found]
    targets = [i for i, found in enumerate(per_class) for _ in found]
    return _sorted_split(root, paths, targets, classes)


def _path_parts(rel: str) -> tuple[str, ...]:
    """The components of a relative POSIX path, empty and "." ones dropped (PurePosixPath(rel).parts for a
    relative path, without building the object: 60,000 rows cost about 1 s that way)."""
    return tuple(p for p in rel.split("/") if p not in ("", "."))


def _check_row_path(rel: str, root: Path, where: str, test_dir: Path | None, real_dirs: dict) -> str:
    """The normalized root-relative POSIX path of a labels-file row, or DataError.

    ``real_dirs`` caches the resolved parent folders, so a million rows cost one lstat each.
    """
    if "\0" in rel:  # the OS cannot name such a file (os.lstat would raise ValueError)
        raise DataError(f"{where}: path {rel!r} contains a NUL byte; fix the path")
    if rel.startswith(("/", "\\")) or ntpath.splitdrive(rel)[0]:  # not PureWindowsPath: 60,000 rows cost 1 s
        raise DataError(f"{where}: absolute path {rel!r}; give it relative to the data folder {root}")
    parts = _path_parts(rel)
    if not parts:
        raise DataError(f"{where}: empty path {rel!r}; give the image path relative to {root}")
    if ".." in parts:
        raise DataError(f"{where}: path {rel!r} leaves the data folder; give it relative to {root}")
    norm = "/".join(parts)
    parent = "/".join(parts[:-1])
    if parent not in real_dirs:
        real_dirs[parent] = os.path.realpath(os.path.join(root, parent))
    real = os.path.join(real_dirs[parent], parts[-1])
    try:
        st = os.lstat(real)
        if stat.S_ISLNK(st.st_mode):
            real, st = os.path.realpath(real), None
    except OSError:
        st = None  # reported as not found below
    if not _inside(real, root):
        raise DataError(f"{where}: {rel!r} is a symlink to {real}, outside {root}; copy the file in instead")
    if not (stat.S_ISREG(st.st_mode) if st is not None else os.path.isfile(real)):  # one stat for a plain file
        if os.path.exists(real):
            raise DataError(f"{where}: {rel!r} is not a regular file (a folder, FIFO, socket or device); "
                            "point the row at an image file")
        raise DataError(f"{where}: image {rel!r} not found under {root}; fix the path or add the file")
    if test_dir is not None and parts[0] == test_dir.name:
        raise DataError(f"{where}: {rel!r} is in the test split; training rows must not come from {test_dir}")
    return norm


def rows_to_split(rows, file: Path, root: Path, classes: list[str] | None, test_dir=None) -> LabeledImages:
    """The split of `read_rows`' rows (each path checked under `root`, no duplicates), labels onto `classes`
    (None: from the labels themselves); errors name `file` and the row's line."""
    first_line: dict[str, int] = {}
    real_dirs: dict[str, str] = {}
    for n, rel, _, _ in rows:
        path = _check_row_path(rel, root, f"{file}:{n}", test_dir, real_dirs)
        if path in first_line:
            raise DataError(f"{file}:{n}: duplicate path {path!r} (also on line {first_line[path]}); keep one row")
        first_line[path] = n
    classes = classes_from_labels(rows, file) if classes is None else classes
    if len(classes) < 2:
        raise DataError(f"labels file {file} names only the class {classes[0]!r}; a classifier needs at least 2")
    lookup = {c: i for i, c in enumerate(classes)}
    labels = [label_index(r[2], lookup, len(classes), f"{file}:{r[0]}") for r in rows]
    if len(set(labels)) < 2:
        raise DataError(f"labels file {file} gives all {len(labels)} rows the class {classes[labels[0]]!r}; a "
                        "classifier needs images of at least 2 classes: label the others too")
    clean = None
    if rows[0][3] is not None:
        clean = [label_index(r[3], lookup, len(classes), f"{file}:{r[0]}") for r in rows]
    return _sorted_split(root, list(first_line), labels, classes, clean)


def _layout(root: Path) -> tuple[Path, Path | None]:
    """(training folder, test folder or None) for the flat or split layout."""
    if not (root / "train").is_dir():
        return root, None
    test = next((root / d for d in _TEST_DIRS if (root / d).is_dir()), None)
    return root / "train", test


def _row_folders(rows, train_dir: Path, root: Path) -> list[str] | None:
    """The class folder (under ``train_dir``) of every row, or None when some row lies outside all of them."""
    names = set(_class_dirs(train_dir))
    prefix = PurePosixPath(train_dir.relative_to(root).as_posix()).parts
    folders = []
    for _, rel, _, _ in rows:
        if rel.startswith("/"):
            return None
        parts = _path_parts(rel)
        if len(parts) < len(prefix) + 2 or parts[: len(prefix)] != prefix or parts[len(prefix)] not in names:
            return None
        folders.append(parts[len(prefix)])
    return folders


def _align(split: LabeledImages, classes: list[str], folder: Path, what: str) -> LabeledImages:
    """`split` (labels from its class folders) relabelled onto `classes`, which must name the same folders."""
    if set(split.classes) != set(classes):
        extra, missing = sorted(set(split.classes) - set(classes)), sorted(set(classes) - set(split.classes))
        other = "the classes file" if what == "folder" else "train"
        raise DataError(f"{what} classes differ (only in {folder.name}: {extra}, only in {other}: {missing}); "
                        f"give {folder} the same class folders")
    remap = np.asarray([classes.index(c) for c in split.classes], dtype=np.int64)
    return LabeledImages(split.root, split.paths, remap[split.targets], list(classes))


def _load_train(root: Path, train_dir: Path, test_dir, labels_file, classes) -> tuple[LabeledImages, str | None, list]:
    if labels_file is None:
        train = _load_folder(train_dir, root)
        return (train if classes is None else _align(train, classes, train_dir, "folder")), None, []
    rows, fmt = read_rows(Path(labels_file))
    folders = _row_folders(rows, train_dir, root)
    if classes is None and folders is not None and len(set(_class_dirs(train_dir))) >= 2:
        classes = _class_dirs(train_dir)
    train = rows_to_split(rows, Path(labels_file), root, classes, test_dir)
    warning = None if folders is None else index_label_warning(rows, folders, train.classes, str(labels_file))
    return train, fmt, [warning] if warning else []


def load_data(root, labels_file=None, *, classes_file=None) -> DataSplits:
    """Load DATA (flat or split layout), the optional labels file and classes file; see the module docstring."""
    given = Path(root)
    if not given.is_dir():
        raise DataError(f"data folder {given} not found; give a folder laid out as DATA/<class>/<image>")
    root = given.resolve()
    from noisefix.data import clothing1m  # a third layout, recognised by its files; it reads rows through here

    if clothing1m.is_clothing1m(root):
        return clothing1m.load_clothing1m(root, labels_file, classes_file=classes_file)
    train_dir, test_dir = _layout(root)
    classes = read_classes_file(classes_file) if classes_file is not None else None
    train, fmt, warnings = _load_train(root, train_dir, test_dir, labels_file, classes)
    test = None if test_dir is None else _align(_load_folder(test_dir, root), train.classes, test_dir, "test")
    return DataSplits(train=train, test=test, labels_format=fmt, warnings=warnings)


def fingerprint(splits: DataSplits) -> str:
    """sha256 hex over each split's classes and sorted (path, file size, label); no image is decoded."""
    h = hashlib.sha256()
    for name, split in (("train", splits.train), ("test", splits.test)):
        if split is None:
            continue
        h.update(json.dumps([name, split.classes]).encode())
        root = str(split.root)  # os.path, not pathlib: 70,000 files cost 0.5 s more that way
        for path, label in sorted(zip(split.paths, split.targets.tolist())):
            h.update(f"{path}\0{os.path.getsize(os.path.join(root, path))}\0{label}\n".encode())
    return h.hexdigest()


def drop_paths(split: LabeledImages, paths: set[str]) -> LabeledImages:
    """`split` without the samples whose path is in `paths`."""
    keep = np.array([p not in paths for p in split.paths], dtype=bool)
    return LabeledImages(root=split.root, paths=[p for p, k in zip(split.paths, keep) if k],
                         targets=split.targets[keep], classes=split.classes,
                         clean_targets=None if split.clean_targets is None else split.clean_targets[keep],
                         known_clean=None if split.known_clean is None else split.known_clean[keep])
