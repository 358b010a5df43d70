"""Image folders and labels files -> labeled splits with stable sample ids (pixels: noisefix/images.py).

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

import csv
import hashlib
import io
import json
import ntpath
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from noisefix.errors import ConfigError, DataError, shorten_names

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


LABELS_FORMATS = ("csv", "lines")


_TEST_DIRS = ("test", "val")


_INT = re.compile(r"[0-9]+")


MAX_CLASSES = 100_000  # integer labels name classes "0".."max"; a larger max is a typo, not a class


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


def read_rows(path: Path) -> tuple[list[tuple[int, str, str, str | None]], str]:
    """Rows ``(line number, path, label, clean label or None)`` of a labels file, and its format."""
    if not path.is_file():
        raise DataError(f"labels file {path} not found; give a CSV (path,label[,clean_label]) or 'path label' file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8; re-save the labels file as UTF-8") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"labels file {path} is empty; add one 'path,label' row per training image")
    rows = []
    if lines[0].lstrip().lower().startswith("path,"):
        fmt = "csv"
        reader = csv.reader(io.StringIO(text, newline=""))  # a quoted newline stays in its field, not a new row
        header = [h.strip().lower() for h in next(reader)]
        if header not in (["path", "label"], ["path", "label", "clean_label"]):
            raise DataError(f"{path}:1: header {','.join(header)!r} is not path,label[,clean_label]; fix it")
        try:
            for fields in reader:
                n = reader.line_num
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise DataError(f"{path}:{n}: {len(fields)} fields, the header has {len(header)}; fix the row")
                fields = [f.strip() for f in fields]
                if len(header) == 3 and not fields[2]:
                    raise DataError(f"{path}:{n}: clean_label is missing; fill it in or drop the column")
                rows.append((n, fields[0], fields[1], fields[2] if len(header) == 3 else None))
        except csv.Error as e:  # e.g. a field over the csv module's size limit
            raise DataError(f"{path}:{reader.line_num}: unreadable CSV row ({e}); fix the row") from None
    elif "," in lines[0]:
        raise DataError(f"{path}:1: a CSV labels file needs the header path,label[,clean_label]; add it")
    else:
        fmt = "lines"
        for n, line in enumerate(lines, start=1):
            fields = line.strip().rsplit(None, 1)
            if not fields:
                continue
            if len(fields) != 2:
                raise DataError(f"{path}:{n}: expected 'path label', got {line.strip()!r}; fix the line")
            rows.append((n, fields[0], fields[1], None))
    if not rows:
        raise DataError(f"labels file {path} has a header but no rows; add one row per training image")
    return rows, fmt


def _as_index(token: str) -> int:
    """A digits-only token as an int, capped (int() refuses over 4,300 digits)."""
    digits = token.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _classes_from_labels(rows, file: Path) -> list[str]:
    tokens = {r[2] for r in rows} | {r[3] for r in rows if r[3] is not None}
    if all(_INT.fullmatch(t) for t in tokens):
        top = max(_as_index(t) for t in tokens)
        if top >= MAX_CLASSES:  # "0".."top" would be `top` class names and could exhaust memory
            n = next(r[0] for r in rows if top in (_as_index(r[2]), _as_index(r[3] or "0")))
            raise DataError(f"{file}:{n}: class index {top} is over the limit of {MAX_CLASSES} classes; "
                            "use indices 0..K-1 or class names")
        return [str(i) for i in range(top + 1)]
    return sorted(tokens)


def _label_index(token: str, lookup: dict[str, int], k: int, where: str) -> int:
    if token in lookup:
        return lookup[token]
    if _INT.fullmatch(token) and _as_index(token) < k:
        return _as_index(token)
    names = ", ".join(list(lookup)[:5]) + (", ..." if k > 5 else "")
    raise DataError(f"{where}: unknown class {token!r}; use a class name ({names}) or an index in [0, {k})")


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
    classes = _classes_from_labels(rows, file) if classes is None else classes
    if len(classes) < 2:
        raise DataError(f"labels file {file} names only the class {classes[0]!r}; a classifier needs at least 2")
    lookup = {c: i for i, c in enumerate(classes)}
    labels = [_label_index(r[2], lookup, len(classes), f"{file}:{r[0]}") for r in rows]
    if len(set(labels)) < 2:
        raise DataError(f"labels file {file} gives all {len(labels)} rows the class {classes[labels[0]]!r}; a "
                        "classifier needs images of at least 2 classes: label the others too")
    clean = None
    if rows[0][3] is not None:
        clean = [_label_index(r[3], lookup, len(classes), f"{file}:{r[0]}") for r in rows]
    return _sorted_split(root, list(first_line), labels, classes, clean)


def write_labels_file(dest, *, paths, labels, classes, fmt: str, clean=None) -> None:
    """Write a labels file that ``load_data`` reads back: class names, rows in the given order, atomically.

    ``labels`` and ``clean`` are int (N,) indices into ``classes``; ``clean`` needs the "csv" format.
    """
    if fmt not in LABELS_FORMATS:
        raise ConfigError(f"unknown labels format {fmt!r}; choose one of {', '.join(LABELS_FORMATS)}")
    if clean is not None and fmt != "csv":
        raise ConfigError("the 'lines' labels format has no clean_label column; write it with fmt='csv'")
    labels = np.asarray(labels)
    columns = [labels] if clean is None else [labels, np.asarray(clean)]
    if any(len(col) != len(paths) for col in columns):
        raise DataError(f"{len(paths)} paths but {[len(c) for c in columns]} labels; give one label per path")
    if fmt == "lines" and any(len(c.split()) != 1 for c in classes):
        raise DataError("a class name contains whitespace, which the 'lines' format cannot hold; use 'csv'")
    if fmt == "lines" and any("\n" in p or "\r" in p for p in paths):
        raise DataError("a file name contains a line break, which the 'lines' format cannot hold; use 'csv'")
    dest = Path(dest)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if fmt == "csv":
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["path", "label"] + (["clean_label"] if clean is not None else []))
                writer.writerows(zip(paths, *([classes[i] for i in col] for col in columns)))
            else:
                f.writelines(f"{p} {classes[y]}\n" for p, y in zip(paths, labels))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


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


def read_classes_file(path) -> list[str]:
    """Class names, one per line (blank lines skipped, whitespace stripped), in index order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"classes file {path} not found; give a text file with one class name per line")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise DataError(f"classes file {path} is not valid UTF-8; re-save it as UTF-8") from None
    names = [n for n in names if n]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"classes file {path}: class {name!r} is listed twice (entries {seen[name]} and {i}); "
                            "list each class once")
        seen[name] = i
    if len(names) < 2:
        raise DataError(f"classes file {path} lists {len(names)} class(es); a classifier needs at least 2")
    return names


def index_label_warning(rows, folders: list[str], classes: list[str], where: str) -> str | None:
    """A warning when integer labels contradict the class folders, else None.

    Only rows whose label is an index (not a class name) count. Each folder's most common index is its
    probable class; when following those indices explains over 10 % more of the rows than reading index i as
    ``classes[i]`` does, the indices follow another order. Label noise alone does not trigger it: a folder's
    most common label stays its own class while fewer labels are wrong than right.
    """
    lookup = {c: i for i, c in enumerate(classes)}
    per_folder: dict[str, Counter] = {}
    for (_, _, token, _), folder in zip(rows, folders):
        if token not in lookup and _INT.fullmatch(token) and _as_index(token) < len(classes):
            per_folder.setdefault(folder, Counter())[_as_index(token)] += 1
    n = sum(sum(c.values()) for c in per_folder.values())
    if not n:
        return None
    agree = sum(c[lookup[f]] for f, c in per_folder.items() if f in lookup)
    best = sum(max(c.values()) for c in per_folder.values())
    moved = sorted((f, c.most_common(1)[0][0]) for f, c in per_folder.items() if c.most_common(1)[0][0] != lookup.get(f))
    if not moved or best - agree <= 0.1 * n:
        return None
    f, i = moved[0]
    return (f"{where}: index labels contradict the class folders: {1 - agree / n:.0%} of {n} index-labelled images "
            f"name another folder's class (most of {f}/ is labelled {i}, read as {classes[i]!r}); indices mean "
            f"positions in [{shorten_names(classes, limit=5)}]; if they follow another order, pass --classes FILE "
            "with one class name per line in index order")


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
