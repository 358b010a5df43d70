"""Built-in datasets as uint8 arrays, and their export as an image folder with an optional noisy labels file.

- ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 images, 0..16 scaled to 0..255), split by a fixed
  stratified draw (seed 0) into 1,198 training and 599 test images (one third, per class).
- ``mnist``, ``fashion-mnist``: the four standard gzipped IDX files (parsed here with numpy + gzip;
  uncompressed copies work too).
- ``cifar10``, ``cifar100``: torchvision's ``cifar-10-batches-py`` / ``cifar-100-python`` folders.
- ``tiny-imagenet``: the standard ``tiny-imagenet-200`` folder (``wnids.txt``, ``train/<wnid>/images/``,
  ``val/images/`` + ``val/val_annotations.txt``; 200 classes, 64x64 RGB); the validation split is the test
  split. Never downloaded here (no torchvision loader): fetch and unzip it yourself, then ``--data-root``.

Sources are searched in ``data_root``, then ``$NOISEFIX_DATA``, then the standard places (the Debian
``/usr/share/datasets/fashion-mnist``, ``~/.cache/noisefix``, torchvision's usual ``./data``); below each
base also in ``mnist/``, ``MNIST/raw`` (or ``fashion-mnist/``, ``FashionMNIST/raw``). When nothing is found,
torchvision downloads into ``~/.cache/noisefix`` if there is internet; else a DataError lists every place.

Class names are folder names that sort in label order (``ImageFolder`` order): MNIST and digits use
"0".."9"; Fashion-MNIST and CIFAR prefix the name with its zero-padded index ("0_T-shirt_top",
"00_apple"), with "/" and spaces replaced by "_".
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from noisefix.config import check_seed
from noisefix.data.labels_file import write_labels_file
from noisefix.data.noise import corrupt_labels
from noisefix.data.splits import stratified_indices
from noisefix.errors import ConfigError, DataError
from noisefix.io.lock import writer_lock

BUILTIN = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet")


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


_SUBDIRS = {
    "mnist": ("", "mnist", "MNIST/raw"),
    "fashion-mnist": ("", "fashion-mnist", "FashionMNIST/raw"),
    "cifar10": ("",),
    "cifar100": ("",),
    "tiny-imagenet": ("",),
}


_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


_TINY_FOLDER = "tiny-imagenet-200"


_SYSTEM_PLACES = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}


_DIGITS_TEST_FRACTION = 1 / 3


@dataclass
class ArrayDataset:
    """A dataset in memory: uint8 images (N, H, W) or (N, H, W, 3), int64 labels (N,), class names (K)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]


def _folder_names(names) -> list[str]:
    """Names prefixed with their zero-padded index so they sort in label order: "0_T-shirt_top"."""
    width = len(str(len(names) - 1))
    return [f"{i:0{width}d}_" + re.sub(r"[/\s]+", "_", n) for i, n in enumerate(names)]


def _load_digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    y = d.target.astype(np.int64)
    test = stratified_indices(y, round(len(y) * _DIGITS_TEST_FRACTION), np.random.default_rng(0))
    train = np.setdiff1d(np.arange(len(y)), test)
    return ArrayDataset("digits", x[train], y[train], x[test], y[test], [str(i) for i in range(10)])


def read_idx(path) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped when the name ends in .gz), shaped by its header."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}; download it again") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes; download it again")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(dims)):
        need = offset + int(np.prod(dims))
        raise DataError(f"IDX file {path} has {len(data)} bytes, its header {dims} needs {need}; download it again")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims).copy()


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "noisefix"


def _places(name: str, data_root) -> list[Path]:
    """Every folder searched for ``name``, in order."""
    bases = [Path(data_root)] if data_root is not None else []
    if os.environ.get("NOISEFIX_DATA"):
        bases.append(Path(os.environ["NOISEFIX_DATA"]))
    places = [b / s for b in bases for s in _SUBDIRS[name]]
    places += [Path(p) for p in _SYSTEM_PLACES.get(name, ())]
    return places + [b / s for b in (_cache_dir(), Path("data")) for s in _SUBDIRS[name]]


def _found(name: str, place: Path) -> bool:
    if name == "tiny-imagenet":
        return (place / _TINY_FOLDER / "wnids.txt").is_file()
    if name in _CIFAR_FOLDERS:
        return (place / _CIFAR_FOLDERS[name]).is_dir()
    return all((place / f"{f}.gz").is_file() or (place / f).is_file() for f in _IDX_FILES)


def _download(name: str, dest: Path) -> None:
    """Fetch ``name`` with torchvision into ``dest`` (its usual sub-folders); raises when offline."""
    from torchvision import datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
    for train in (True, False):
        cls[name](str(dest), train=train, download=True)


def _locate(name: str, data_root, download: bool) -> Path:
    places = _places(name, data_root)
    for place in places:
        if _found(name, place):
            return place
    looked = "; ".join(str(p) for p in places)
    if not download or name == "tiny-imagenet":
        raise DataError(f"{name} not found (looked in: {looked}); pass --data-root with its files")
    try:
        _download(name, _cache_dir())
    except Exception as e:  # noqa: BLE001 - any failure of the downloader means "not available here"
        raise DataError(
            f"{name} not found (looked in: {looked}) and the download failed "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
            "pass --data-root with its files or set NOISEFIX_DATA"
        ) from None
    return next(p for p in _places(name, data_root) if _found(name, p))


def _load_idx(name: str, place: Path, classes: list[str]) -> ArrayDataset:
    arrays = [read_idx(place / f"{f}.gz" if (place / f"{f}.gz").is_file() else place / f) for f in _IDX_FILES]
    x_train, y_train, x_test, y_test = arrays
    for x, y in ((x_train, y_train), (x_test, y_test)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or (y >= len(classes)).any():
            raise DataError(f"IDX files in {place} do not match ({x.shape} images, {y.shape} labels)")
    return ArrayDataset(name, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), classes)


def _load_cifar(name: str, place: Path) -> ArrayDataset:
    from torchvision import datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    try:
        train, test = (cls(str(place), train=t, download=False) for t in (True, False))
    except RuntimeError as e:
        raise DataError(f"{name} in {place} is unreadable ({e}); download it again") from None
    return ArrayDataset(
        name,
        np.asarray(train.data, dtype=np.uint8),  # (N, 32, 32, 3)
        np.asarray(train.targets, dtype=np.int64),
        np.asarray(test.data, dtype=np.uint8),
        np.asarray(test.targets, dtype=np.int64),
        _folder_names(train.classes),
    )


def _load_tiny_imagenet(place: Path) -> ArrayDataset:
    root = place / _TINY_FOLDER
    wnids = sorted((root / "wnids.txt").read_text().split())
    index = {w: i for i, w in enumerate(wnids)}

    def read(paths: list[Path]) -> np.ndarray:
        try:
            return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths])
        except (OSError, ValueError) as e:
            raise DataError(f"tiny-imagenet in {root} has an unreadable image ({e}); unzip it again") from None

    train = [(p, index[w]) for w in wnids for p in sorted((root / "train" / w / "images").glob("*.JPEG"))]
    val = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in index:
            val.append((root / "val" / "images" / parts[0], index[parts[1]]))
    if not train or not val:
        raise DataError(f"tiny-imagenet in {root} is incomplete (train {len(train)}, val {len(val)} images)")
    return ArrayDataset("tiny-imagenet", read([p for p, _ in train]), np.array([y for _, y in train], np.int64),
                        read([p for p, _ in val]), np.array([y for _, y in val], np.int64), _folder_names(wnids))


def load_builtin(name: str, *, data_root=None, download: bool = True) -> ArrayDataset:
    """Load a built-in dataset (one of ``BUILTIN``) from the places in the module docstring."""
    if name not in BUILTIN:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN)}")
    if name == "digits":
        return _load_digits()
    place = _locate(name, data_root, download)
    if name == "tiny-imagenet":
        return _load_tiny_imagenet(place)
    if name in _CIFAR_FOLDERS:
        return _load_cifar(name, place)
    classes = [str(i) for i in range(10)] if name == "mnist" else _folder_names(FASHION_MNIST_CLASSES)
    return _load_idx(name, place, classes)


def _check_arrays(ds: ArrayDataset) -> None:
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        grey, rgb = x.ndim == 3, x.ndim == 4 and x.shape[-1] == 3
        if x.dtype != np.uint8 or not (grey or rgb):
            raise DataError(f"{ds.name} {split} images are {x.dtype} {x.shape}; need uint8 (N,H,W) or (N,H,W,3)")
        if y.shape != (len(x),) or (len(y) and (y.min() < 0 or y.max() >= len(ds.classes))):
            raise DataError(f"{ds.name} {split} labels must be (N,) = ({len(x)},) in [0, {len(ds.classes)})")


def _subset(labels: np.ndarray, n, rng: np.random.Generator, what: str) -> np.ndarray:
    if n is None:
        return np.arange(len(labels))
    if isinstance(n, bool) or int(n) != n or not 1 <= n <= len(labels):
        raise ConfigError(f"{what}={n!r} is invalid; give an integer in [1, {len(labels)}] or None for all")
    return stratified_indices(labels, int(n), rng)


def _check_dest(dest: Path, force: bool) -> None:
    if not dest.exists():
        return
    if not dest.is_dir():
        raise DataError(f"export destination {dest} is a file; choose a folder path")
    if not any(dest.iterdir()):
        return
    if not force:
        raise DataError(f"export destination {dest} is not empty; choose a new folder or force the replacement")
    if not (dest / "train").is_dir():
        raise DataError(f"{dest} is not a noisefix export (no train/ folder); refusing to replace it")


def _write_split(tmp: Path, split: str, x: np.ndarray, y: np.ndarray, pick: np.ndarray, classes) -> list[str]:
    """Write images ``x[pick]`` as PNGs under ``tmp/split/<class>/``; return their paths relative to tmp."""
    width = max(5, len(str(len(x) - 1)))
    paths = [f"{split}/{classes[y[i]]}/{i:0{width}d}.png" for i in pick]
    for c in np.unique(y[pick]):
        (tmp / split / classes[c]).mkdir(parents=True)

    def save(lo: int) -> None:
        for i, rel in zip(pick[lo : lo + 512], paths[lo : lo + 512]):
            Image.fromarray(x[i]).save(tmp / rel)

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(save, range(0, len(pick), 512)))
    return paths


def export_dataset(
    ds: ArrayDataset,
    dest,
    *,
    corrupt: float | None = None,
    noise: str = "symmetric",
    seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    force: bool = False,
    noisy_labels: np.ndarray | None = None,
) -> Path:
    """Write ``DEST/train/<class>/<NNNNN>.png`` and ``DEST/test/<class>/<NNNNN>.png``; return DEST.

    NNNNN is the image's index in the source arrays. Subsets are stratified draws seeded from
    ``(seed, 1)`` and ``(seed, 2)``. When ``corrupt`` is a rate (0.0 included), the exported training labels,
    in source order, are corrupted with ``corrupt_labels(..., noise=noise, seed=seed)`` and written to
    ``DEST/noisy_labels.csv`` (``path,label,clean_label``, class names); ``noisy_labels`` (one per training
    image in source order, e.g. CIFAR-N's human labels) are written there instead. Everything is built in the sibling
    ``DEST.tmp-<pid>`` and renamed into place at the end; a non-empty DEST is refused unless ``force``,
    and then replaced only after the new export is complete.
    """
    _check_arrays(ds)
    dest = Path(dest)
    _check_dest(dest, force)
    check_seed(seed)
    train = _subset(ds.y_train, train_subset, np.random.default_rng([seed, 1]), "train_subset")
    test = _subset(ds.y_test, test_subset, np.random.default_rng([seed, 2]), "test_subset")
    noisy = None
    if noisy_labels is not None:
        if corrupt is not None:
            raise ConfigError("give either a corruption rate or the noisy labels, not both")
        noisy = np.asarray(noisy_labels, dtype=np.int64)[train]
    if corrupt is not None:
        noisy, _ = corrupt_labels(ds.y_train[train], num_classes=len(ds.classes), rate=corrupt, noise=noise, seed=seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(dest):  # one exporter per DEST; what a killed one left (DEST.tmp-PID) is removed
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            paths = _write_split(tmp, "train", ds.x_train, ds.y_train, train, ds.classes)
            _write_split(tmp, "test", ds.x_test, ds.y_test, test, ds.classes)
            if noisy is not None:
                order = np.asarray(sorted(range(len(paths)), key=paths.__getitem__), dtype=np.int64)
                write_labels_file(
                    tmp / "noisy_labels.csv",
                    paths=[paths[i] for i in order],
                    labels=noisy[order],
                    classes=ds.classes,
                    fmt="csv",
                    clean=ds.y_train[train][order],
                )
            if dest.exists() and any(dest.iterdir()):
                old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
                os.rename(dest, old)
                os.rename(tmp, dest)
                shutil.rmtree(old)
            else:
                os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
