"""Pixels: decode a split's images once (checking them) and serve uint8 batches for training and extraction.

N images of C channels and H x W pixels. ``ImageSource`` decodes everything into memory when it fits, else per
batch on a thread pool; ``scan_images`` finds unreadable or odd-sized files up front.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from noisefix.data.folders import LabeledImages
from noisefix.errors import ConfigError, DataError

_CHUNK = 256  # images per decoding task


def _check_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(size, None) for an image that decodes fully, else (None, reason)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.size, None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, f"cannot decode: {' '.join(str(e).split())[:120]}"


def scan_images(split: LabeledImages, *, num_threads: int | None = None) -> list[tuple[str, str]]:
    """Decode every image of `split` once; returns (path, reason) for each unreadable one and each whose size
    differs from the first readable image. Empty when all are fine."""
    with ThreadPoolExecutor(num_threads or _default_threads()) as pool:
        results = list(pool.map(_check_image, (split.root / p for p in split.paths), chunksize=256))
    sizes = [size for size, _ in results if size is not None]
    if not sizes:
        return [(p, reason) for p, (_, reason) in zip(split.paths, results)]
    ref = sizes[0]
    bad = []
    for p, (size, reason) in zip(split.paths, results):
        if reason is not None:
            bad.append((p, reason))
        elif size != ref:
            bad.append((p, f"size {size[0]}x{size[1]} differs from {ref[0]}x{ref[1]}"))
    return bad


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class ImageSource:
    """Batched uint8 access to one split's images: decoded once into memory when they fit, else per batch.

    ``shape`` is (C, H, W) from the first image: mode "L" gives C = 1, any other mode is converted to RGB
    (C = 3); every image is converted to that mode and must have the first image's size. Decoding runs on
    a thread pool (Pillow releases the GIL while decoding).
    """

    def __init__(self, split: LabeledImages, *, max_memory_bytes: int = 2**31, num_threads: int | None = None):
        if len(split) == 0:
            raise DataError("the split has no images; check the data folder and labels file")
        self.split = split
        self.num_threads = num_threads or _default_threads()
        with self._open(split.paths[0]) as first:
            self._mode = "L" if first.mode == "L" else "RGB"
            self._size = first.size  # (W, H)
        self.shape = (1 if self._mode == "L" else 3, self._size[1], self._size[0])
        self.in_memory = len(split) * int(np.prod(self.shape)) <= max_memory_bytes
        self._data = None
        if self.in_memory:
            with ThreadPoolExecutor(self.num_threads) as pool:
                self._data = self._collect(*self._submit(pool, np.arange(len(split))))  # (N, C, H, W)

    def __len__(self) -> int:
        return len(self.split)

    def _open(self, rel: str) -> Image.Image:
        try:
            return Image.open(self.split.root / rel)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot decode image {rel}: {e}; remove or replace the file") from None

    def _fill(self, buf: np.ndarray, start: int, idx: np.ndarray) -> None:
        for j, i in enumerate(idx, start=start):
            rel = self.split.paths[i]
            with self._open(rel) as img:
                if img.size != self._size:
                    (w, h), (w0, h0) = img.size, self._size
                    raise DataError(
                        f"image {rel} is {w}x{h} but {self.split.paths[0]} is {w0}x{h0}; "
                        "resize all images to one size"
                    )
                try:
                    arr = np.asarray(img if img.mode == self._mode else img.convert(self._mode))
                except (OSError, ValueError, SyntaxError) as e:
                    raise DataError(f"cannot decode image {rel}: {e}; remove or replace the file") from None
            buf[j] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def _submit(self, pool: ThreadPoolExecutor, idx: np.ndarray):
        buf = np.empty((len(idx), *self.shape), dtype=np.uint8)
        step = max(1, min(_CHUNK, -(-len(idx) // self.num_threads)))
        futures = [pool.submit(self._fill, buf, s, idx[s : s + step]) for s in range(0, len(idx), step)]
        return buf, futures

    @staticmethod
    def _collect(buf: np.ndarray, futures) -> torch.Tensor:
        for f in futures:
            f.result()
        return torch.from_numpy(buf)

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
        with ThreadPoolExecutor(self.num_threads) as pool:
            pending = self._submit(pool, chunks[0]) if chunks else None
            for k, idx in enumerate(chunks):
                x = self._collect(*pending)
                pending = self._submit(pool, chunks[k + 1]) if k + 1 < len(chunks) else None  # prefetch
                yield x, torch.from_numpy(idx)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 in [0, 1], same shape and device (no normalization)."""
    return x.to(torch.float32).div_(255)
