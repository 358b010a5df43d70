"""Clothing1M as it ships -> the training split (noisy labels), the clean test split and the known clean labels.

DATA is the folder holding, as distributed (Xiao et al., CVPR 2015):
- ``images/``: nested folders of JPEGs (``images/0/00/123.jpg``), every size; read lazily, never copied;
- ``noisy_label_kv.txt`` (~1M lines) and ``clean_label_kv.txt`` (~72k): ``path label`` lines, ``path``
  relative to DATA, ``label`` a class index 0..13;
- ``noisy_train_key_list.txt``, ``clean_train_key_list.txt``, ``clean_val_key_list.txt``,
  ``clean_test_key_list.txt``: one path per line;
- ``category_names_eng.txt``: the 14 class names, one per line, in index order.

The training split is ``noisy_train_key_list`` with the labels of ``noisy_label_kv`` (images of the clean test
list are left out of it); the test split is ``clean_test_key_list`` with the labels of ``clean_label_kv``,
treated as clean; the classes are the names file's. ``known_clean`` holds the ``clean_label_kv`` label of every
training image that has one (about 37k have both labels), -1 for the others: relabel evaluates its flags on
them. A labels file given with DATA (e.g. relabel's cleaned labels) replaces the training rows; the classes
and the test split stay. The clean train/val lists are not used (they are clean-labelled training data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noisefix.data.folders import DataSplits, LabeledImages, rows_to_split
from noisefix.data.labels_file import read_classes_file, read_rows
from noisefix.errors import ConfigError, DataError

NOISY_KV = "noisy_label_kv.txt"
CLEAN_KV = "clean_label_kv.txt"
NOISY_TRAIN = "noisy_train_key_list.txt"
CLEAN_TEST = "clean_test_key_list.txt"
NAMES = "category_names_eng.txt"

_KV_CONTENT = "'path label' lines, e.g. 'images/0/00/123.jpg 3' (a path under the Clothing1M folder, a class index)"
_KEYS_CONTENT = "one image path per line, e.g. 'images/0/00/123.jpg'"


def is_clothing1m(root: Path) -> bool:
    """True when `root` looks like Clothing1M as it ships (its label or names file at the top, no train/)."""
    return not (root / "train").is_dir() and ((root / NOISY_KV).is_file() or (root / NAMES).is_file())


def _lines(path: Path, content: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of the non-blank lines of one list file; DataError when missing or empty."""
    if not path.is_file():
        raise DataError(f"Clothing1M file {path} not found; it should hold {content}, as shipped with the dataset")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"Clothing1M file {path} is not UTF-8 text; it should hold {content}") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DataError(f"Clothing1M file {path} is empty; it should hold {content}")
    return lines


def read_kv(path: Path, num_classes: int) -> dict[str, int]:
    """path -> class index of a ``*_label_kv.txt`` file."""
    labels: dict[str, int] = {}
    for n, line in _lines(path, _KV_CONTENT):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= num_classes:
            raise DataError(f"{path}:{n}: expected {_KV_CONTENT} in [0, {num_classes}), got {line!r}; fix the line")
        if labels.setdefault(fields[0], int(fields[1])) != int(fields[1]):
            raise DataError(f"{path}:{n}: {fields[0]!r} is listed twice with different labels; keep one line")
    return labels


def read_keys(path: Path) -> list[tuple[int, str]]:
    """(line number, path) of a ``*_key_list.txt`` file."""
    keys = _lines(path, _KEYS_CONTENT)
    for n, key in keys:
        if len(key.split()) != 1:
            raise DataError(f"{path}:{n}: expected {_KEYS_CONTENT}, got {key!r}; fix the line")
    return keys


def _labelled(keys: list[tuple[int, str]], kv: dict[str, int], keys_file: Path, kv_file: Path) -> list[tuple]:
    """`read_rows`-style rows (line, path, label token, None) of `keys`, labelled from `kv`."""
    rows = []
    for n, key in keys:
        if key not in kv:
            raise DataError(f"{keys_file}:{n}: {key!r} has no label in {kv_file}; the two files must come from one "
                            "Clothing1M release")
        rows.append((n, key, str(kv[key]), None))
    return rows


def _known_clean(split: LabeledImages, clean: dict[str, int]) -> np.ndarray:
    return np.asarray([clean.get(p, -1) for p in split.paths], dtype=np.int64)


def load_clothing1m(root: Path, labels_file=None, *, classes_file=None) -> DataSplits:
    """The splits of the Clothing1M folder `root` (see the module docstring); `labels_file` replaces the
    training rows."""
    if classes_file is not None:
        raise ConfigError(f"Clothing1M's classes come from {root / NAMES}; drop --classes")
    if not (root / NAMES).is_file():
        raise DataError(f"Clothing1M file {root / NAMES} not found; it should hold the 14 class names, one per line "
                        "in index order, as shipped with the dataset")
    classes = read_classes_file(root / NAMES)
    clean = read_kv(root / CLEAN_KV, len(classes))
    test_keys = read_keys(root / CLEAN_TEST)
    test = rows_to_split(_labelled(test_keys, clean, root / CLEAN_TEST, root / CLEAN_KV), root / CLEAN_TEST, root,
                         classes)
    in_test = set(test.paths)
    warnings = []
    if labels_file is None:
        keys = read_keys(root / NOISY_TRAIN)
        kept = [(n, k) for n, k in keys if k not in in_test]
        if len(kept) < len(keys):
            warnings.append(f"{root / NOISY_TRAIN}: {len(keys) - len(kept)} images of {CLEAN_TEST} left out of "
                            "training (the test split must stay unseen)")
        rows = _labelled(kept, read_kv(root / NOISY_KV, len(classes)), root / NOISY_TRAIN, root / NOISY_KV)
        train = rows_to_split(rows, root / NOISY_TRAIN, root, classes)
        fmt = "csv"  # class names such as "Down Coat" hold spaces, which 'path label' lines cannot
    else:
        rows, fmt = read_rows(Path(labels_file))
        train = rows_to_split(rows, Path(labels_file), root, classes)
        leaked = next((p for p in train.paths if p in in_test), None)
        if leaked is not None:
            raise DataError(f"labels file {labels_file}: {leaked!r} is in {CLEAN_TEST}; training rows must not come "
                            "from the test split")
    train.known_clean = _known_clean(train, clean)
    return DataSplits(train=train, test=test, labels_format=fmt, warnings=warnings)
