"""Pixels: check a split's files, choose how its images become model inputs, and serve them in batches.

N images; every decoded image is uint8 (C, H, W) under one :class:`ImageSpec` (noisefix/data/transforms.py
gives the decode / convert / resize rule). ``infer_spec`` picks the spec from the data, ``scan_images`` finds
unreadable and non-regular files up front, and ``ImageSource`` streams batches through a
``torch.utils.data.DataLoader`` (``workers`` processes decoding lazily from disk, pinned memory on CUDA), or
serves them from an in-RAM cache of decoded, resized uint8 images when they fit ``max_memory_bytes``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from noisefix.data.folders import LabeledImages
from noisefix.data.transforms import (
    ImageSpec,
    decode_pixels,
    header_info,
    load_image,
    parse_size,
)
from noisefix.errors import ConfigError, DataError

HEADER_SAMPLE = 1000  # images whose headers (size, mode) decide the default size and channels


STATS_SAMPLE = 500  # training images decoded to measure the per-dataset mean/std


GRAY_FRACTION = 0.95  # channels=auto gives 1 channel when at least this fraction of the sampled files is grayscale


MAX_SKIP_FRACTION = 0.10  # --on-bad-image skip refuses to drop more than this fraction of a split


CACHE_BYTES = 2**31  # default budget of the in-RAM cache of decoded images


MIN_WORKER_PASS = 256  # a pass over fewer images decodes in the main process: starting workers costs more


def default_workers() -> int:
    """DataLoader worker processes by default: min(4, CPUs - 1), 0 on a single CPU."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def sample_indices(n: int, k: int) -> np.ndarray:
    """At most k indices spread evenly over range(n) (deterministic; every class folder is represented)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _check_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """((H, W), None) for a file that decodes fully, else (None, reason)."""
    try:
        arr = decode_pixels(path)
    except DataError as e:
        return None, str(e)
    return arr.shape[:2], None


def scan_images(split: LabeledImages, *, same_size: bool = False,
                num_threads: int | None = None) -> list[tuple[str, str]]:
    """Decode every image of `split` once; (path, reason) for each file that is not a regular file (a FIFO is
    never opened) or does not decode. With ``same_size`` also each image whose size differs from the most
    common size (the majority, so one odd image sorting first cannot make every other one "bad"); by default
    mixed sizes are fine: they are resized. Empty when all are fine."""
    with ThreadPoolExecutor(num_threads or _threads()) as pool:
        results = list(pool.map(_check_image, (split.root / p for p in split.paths)))
    ref = None
    sizes = [size for size, _ in results if size is not None]
    if same_size and sizes:
        values, counts = np.unique(np.asarray(sizes), axis=0, return_counts=True)
        ref = tuple(int(v) for v in values[counts.argmax()])
    bad = []
    for p, (size, reason) in zip(split.paths, results):
        if reason is not None:
            bad.append((p, reason))
        elif ref is not None and tuple(size) != ref:
            bad.append((p, f"size {size[1]}x{size[0]} differs from the usual {ref[1]}x{ref[0]}"))
    return bad


def check_skip_fraction(n_bad: int, n_total: int, *, limit: float = MAX_SKIP_FRACTION) -> None:
    """DataError when skipping `n_bad` of `n_total` images would drop more than `limit` of the data."""
    if n_total and n_bad > limit * n_total:
        raise DataError(f"{n_bad} of {n_total} images ({n_bad / n_total:.0%}) are bad, over the {limit:.0%} that "
                        "--on-bad-image skip drops; check the folder (wrong files, a failed copy?) and fix them")


def _lower_median(values) -> int:
    ordered = sorted(values)
    return int(ordered[(len(ordered) - 1) // 2])


def _headers(split: LabeledImages, idx: np.ndarray) -> list[tuple[tuple[int, int], bool]]:
    with ThreadPoolExecutor(_threads()) as pool:
        found = list(pool.map(header_info, (split.root / split.paths[i] for i in idx)))
    return [h for h in found if h is not None]


def infer_spec(split: LabeledImages, *, size: tuple[int, int] | None = None, channels: int | None = None,
               default_size: tuple[int, int] | None = None, mean=None, std=None,
               normalize: bool = True) -> ImageSpec:
    """The :class:`ImageSpec` for a training split.

    size: ``size`` when given, else ``default_size`` (the weights' or model's expected size), else the data's
    median height and width over the headers of up to ``HEADER_SAMPLE`` images (an equal-sized folder keeps
    its size, so nothing is resized). channels: ``channels`` when given, else 1 when at least
    ``GRAY_FRACTION`` of the sampled files are grayscale, else 3. Normalization: ``mean``/``std`` when given
    (a pretrained network's own), else with ``normalize`` the per-channel mean/std of up to ``STATS_SAMPLE``
    training images decoded under this spec, else none (raw [0, 1] pixels).
    """
    if len(split) == 0:
        raise DataError("the split has no images; check the data folder and labels file")
    size, default_size = parse_size(size), parse_size(default_size)
    need_headers = channels is None or (size is None and default_size is None)
    headers = _headers(split, sample_indices(len(split), HEADER_SAMPLE)) if need_headers else []
    if need_headers and not headers:
        raise DataError(f"none of the sampled images under {split.root} can be read (e.g. {split.paths[0]}); "
                        "check the files")
    if channels is None:
        channels = 1 if np.mean([gray for _, gray in headers]) >= GRAY_FRACTION else 3
    if size is None:
        size = default_size or (_lower_median(h for (h, _), _ in headers), _lower_median(w for (_, w), _ in headers))
    if mean is not None:
        return ImageSpec(size=size, channels=channels, mean=tuple(mean), std=tuple(std), normalization="weights")
    spec = ImageSpec(size=size, channels=channels)
    if not normalize:
        return spec
    mean, std = dataset_stats(split, spec)
    return ImageSpec(size=spec.size, channels=channels, mean=mean, std=std, normalization="dataset")


def dataset_stats(split: LabeledImages, spec: ImageSpec, *, sample: int = STATS_SAMPLE):
    """Per-channel mean and std of x/255 over up to `sample` images of `split` decoded under `spec`
    (unreadable ones left out; a constant channel gets std 1)."""
    idx = sample_indices(len(split), sample)

    def moments(i):
        try:
            x = load_image(split.root / split.paths[i], spec).to(torch.float64).div_(255)
        except DataError:
            return None
        flat = x.reshape(x.shape[0], -1)
        return flat.shape[1], flat.sum(1), (flat * flat).sum(1)

    with ThreadPoolExecutor(_threads()) as pool:
        found = [m for m in pool.map(moments, idx) if m is not None]
    if not found:
        raise DataError(f"none of the sampled images under {split.root} can be decoded; check the files")
    n = sum(m[0] for m in found)
    mean = sum(m[1] for m in found) / n
    var = (sum(m[2] for m in found) / n - mean * mean).clamp_min(0)
    std = torch.where(var.sqrt() > 1e-6, var.sqrt(), torch.ones_like(var))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


class _Files(Dataset):
    """Map-style dataset over a split's files: item i -> (i, uint8 (C, H, W)) or (i, error message)."""

    def __init__(self, split: LabeledImages, spec: ImageSpec):
        self.root, self.paths, self.spec = split.root, split.paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        rel = self.paths[i]
        try:
            return i, load_image(self.root / rel, self.spec)
        except DataError as e:  # returned, not raised: a worker's exception would reach the user as a traceback
            return i, f"cannot read image {rel} ({e}); remove or replace the file (or pass --on-bad-image skip)"


def _collate(items):
    """Stack one batch; (None, first error) when an image failed."""
    for _, x in items:
        if isinstance(x, str):
            return None, x
    return torch.stack([x for _, x in items]), torch.tensor([i for i, _ in items], dtype=torch.int64)


#: Decoded splits of this process (root, paths, shape) -> uint8 (N, C, H, W), so the stages of one `clean`
#: (train, probe, relabel's review, retrain) decode a folder once; least recently stored dropped first.
_DECODED: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def _files_key(split: LabeledImages) -> int:
    """A hash of the split's paths with each file's size and modification time (a changed file decodes anew)."""
    stats, root = [], str(split.root)
    for rel in split.paths:
        try:
            st = os.stat(os.path.join(root, rel))  # not pathlib: 3x faster over 70,000 files
            stats.append((rel, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((rel, -1, -1))
    return hash(tuple(stats))


#: While `files_unchanged()` is active: (root, paths) -> `_files_key`, so each split's files are stat'ed once.
_UNCHANGED: "dict[tuple, int] | None" = None


@contextmanager
def files_unchanged() -> Iterator[None]:
    """Within it, the decode cache stats a split's files once (about 0.2 s per 60,000 files) and trusts that key
    for every later ImageSource of the same paths: for the stages of one `clean`, which read a folder that
    nothing writes to meanwhile. Outside it, every ImageSource stats its files (a changed file decodes anew)."""
    global _UNCHANGED
    outer = _UNCHANGED
    _UNCHANGED = {} if outer is None else outer
    try:
        yield
    finally:
        _UNCHANGED = outer


def _split_key(split: LabeledImages) -> int:
    """`_files_key`, computed once per (root, paths) inside `files_unchanged`."""
    if _UNCHANGED is None:
        return _files_key(split)
    ident = (str(split.root), tuple(split.paths))
    if ident not in _UNCHANGED:
        _UNCHANGED[ident] = _files_key(split)
    return _UNCHANGED[ident]


def _remember(key: tuple, data: torch.Tensor, budget: int) -> None:
    """Keep `data` under `key` while all kept splits together stay within `budget` bytes."""
    _DECODED[key] = data
    while sum(d.numel() for d in _DECODED.values()) > budget and len(_DECODED) > 1:
        _DECODED.popitem(last=False)


class ImageSource:
    """Batched uint8 access to one split's images under one :class:`ImageSpec`.

    ``spec`` (default: ``infer_spec(split, normalize=False)``) fixes ``shape`` = (C, H, W) for every image.
    When N * C * H * W bytes fit ``max_memory_bytes`` the images are decoded once into an in-RAM cache;
    otherwise each pass streams them from disk through a DataLoader with ``workers`` processes
    (:func:`default_workers`; 0 decodes in this process) and ``pin_memory`` (default: when CUDA is available).
    """

    def __init__(self, split: LabeledImages, spec: ImageSpec | None = None, *, max_memory_bytes: int = CACHE_BYTES,
                 workers: int | None = None, pin_memory: bool | None = None):
        if len(split) == 0:
            raise DataError("the split has no images; check the data folder and labels file")
        if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 0):
            raise ConfigError(f"workers={workers!r} is invalid; give 0 (decode in this process) or more")
        self.split = split
        self.spec = spec if spec is not None else infer_spec(split, normalize=False)
        self.shape = self.spec.shape
        self.workers = default_workers() if workers is None else int(workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._files = _Files(split, self.spec)
        self.in_memory = len(split) * int(np.prod(self.shape)) <= max_memory_bytes
        self._data = None
        if self.in_memory:
            key = (str(split.root), _split_key(split), self.shape)
            self._data = _DECODED.get(key)
            if self._data is None:
                self._data = torch.empty((len(split), *self.shape), dtype=torch.uint8)  # (N, C, H, W)
                for x, idx in self._stream([np.arange(s, min(s + 256, len(split)))
                                            for s in range(0, len(split), 256)], pin=False):
                    self._data[idx] = x
                _remember(key, self._data, max_memory_bytes)

    def __len__(self) -> int:
        return len(self.split)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> the float model input under this source's spec (see ``ImageSpec.to_input``)."""
        return self.spec.to_input(x)

    def _stream(self, chunks: list[np.ndarray], *, pin: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        total = sum(len(c) for c in chunks)
        workers = self.workers if total >= MIN_WORKER_PASS else 0
        loader = DataLoader(self._files, batch_sampler=[c.tolist() for c in chunks], num_workers=workers,
                            collate_fn=_collate, pin_memory=pin, prefetch_factor=2 if workers else None)
        for x, idx in loader:
            if x is None:
                raise DataError(idx)
            yield x, idx

    def batches(
        self, batch_size: int, *, indices=None, shuffle: bool = False, seed: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, idx)``: uint8 (B, C, H, W) images and int64 (B,) positions into ``split.paths``.

        ``indices`` restricts and orders the samples (default: all, in order); ``shuffle`` permutes them
        with ``np.random.default_rng(seed)``, so a given seed always gives the same batches.
        """
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} is invalid; give a positive integer")
        order = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if order.size and (order.min() < 0 or order.max() >= len(self)):
            raise ConfigError(f"indices must lie in [0, {len(self)}); got {order.min()}..{order.max()}")
        if shuffle:
            order = np.random.default_rng(seed).permutation(order)
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        if self.in_memory:
            for idx in chunks:
                t = torch.from_numpy(idx)
                yield self._data[t], t
            return
        yield from self._stream(chunks, pin=self.pin_memory)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 in [0, 1], same shape and device (no normalization; see
    ``ImageSource.to_input`` for the run's normalized input)."""
    return x.to(torch.float32).div_(255)


__all__ = ["ImageSource", "ImageSpec", "check_skip_fraction", "default_workers", "infer_spec",
           "scan_images", "to_float"]
