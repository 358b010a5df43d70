"""Labels files and classes files as text: reading a labels file's rows (CSV ``path,label[,clean_label]`` or
``path label`` lines), turning label tokens into class indices, writing labels files that ``load_data`` reads
back, reading a classes file, and the warning when index labels contradict the class folders. Checking the
rows' paths against the data folder and building the split is `folders.rows_to_split`.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from noisefix.errors import ConfigError, DataError, shorten_names

LABELS_FORMATS = ("csv", "lines")


_INT = re.compile(r"[0-9]+")


MAX_CLASSES = 100_000  # integer labels name classes "0".."max"; a larger max is a typo, not a class


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


def as_index(token: str) -> int:
    """A digits-only token as an int, capped (int() refuses over 4,300 digits)."""
    digits = token.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def classes_from_labels(rows, file: Path) -> list[str]:
    """The classes `read_rows` rows name: "0".."max" when every label (and clean label) is an index, else the
    sorted names; DataError (naming `file`'s line) for an index over MAX_CLASSES."""
    tokens = {r[2] for r in rows} | {r[3] for r in rows if r[3] is not None}
    if all(_INT.fullmatch(t) for t in tokens):
        top = max(as_index(t) for t in tokens)
        if top >= MAX_CLASSES:  # "0".."top" would be `top` class names and could exhaust memory
            n = next(r[0] for r in rows if top in (as_index(r[2]), as_index(r[3] or "0")))
            raise DataError(f"{file}:{n}: class index {top} is over the limit of {MAX_CLASSES} classes; "
                            "use indices 0..K-1 or class names")
        return [str(i) for i in range(top + 1)]
    return sorted(tokens)


def label_index(token: str, lookup: dict[str, int], k: int, where: str) -> int:
    """The class index of a label token: a name in `lookup`, else an index in [0, k); DataError at `where`."""
    if token in lookup:
        return lookup[token]
    if _INT.fullmatch(token) and as_index(token) < k:
        return as_index(token)
    names = ", ".join(list(lookup)[:5]) + (", ..." if k > 5 else "")
    raise DataError(f"{where}: unknown class {token!r}; use a class name ({names}) or an index in [0, {k})")


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
        if token not in lookup and _INT.fullmatch(token) and as_index(token) < len(classes):
            per_folder.setdefault(folder, Counter())[as_index(token)] += 1
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
