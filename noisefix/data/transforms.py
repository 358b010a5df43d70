"""One image file -> the uint8 (C, H, W) tensor a model is fed, and the ``ImageSpec`` that says how.

The rule, applied to every image of a run (train, held-out and test images alike):

1. decode with Pillow and apply the EXIF orientation (``ImageOps.exif_transpose``);
2. convert to 8 bits per channel: 16-bit and 32-bit integer grayscale (``I;16*``, ``I``) are scaled from
   0..65535 to 0..255 (rounded, not clipped); float (``F``) is clipped to 0..255 as Pillow does; images with
   an alpha channel (``LA``, ``RGBA``, ``PA``, palette with transparency) are composited onto white, as a
   viewer shows them; palette, ``CMYK``, ``YCbCr`` and bilevel images are converted by Pillow;
3. to ``spec.channels``: 1 = Pillow's luma (ITU-R 601-2) of colour images, 3 = grayscale repeated;
4. when the image is not already ``spec.size`` = (H, W): resize (bilinear, antialiased, torchvision
   ``transforms.v2``) so that it covers H x W with its aspect ratio kept -- for a square target, the shorter
   side becomes H -- then crop the centre H x W. An image of the right size is left untouched, so a folder
   of equal-sized images gives exactly its own pixels.

``ImageSpec.to_input`` then turns a uint8 batch into floats: ``x / 255``, minus ``mean``, over ``std`` per
channel (no normalization when ``mean`` is None: raw [0, 1] pixels, the behaviour of runs made before specs).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

from noisefix.errors import ConfigError, DataError

CHANNEL_CHOICES = ("auto", "1", "3")


NORMALIZATIONS = ("dataset", "weights", "none")


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


_GRAY_MODES = frozenset({"1", "L", "LA", "La", "F", *_SIXTEEN_BIT})


@dataclass(frozen=True)
class ImageSpec:
    """How the images of a run become model inputs (see the module docstring); stored in model.json."""

    size: tuple[int, int]                   # (H, W) every image is resized/cropped to
    channels: int                           # 1 (grayscale) or 3 (RGB)
    mean: tuple[float, ...] | None = None   # per-channel mean of x/255 subtracted before the model; None: raw
    std: tuple[float, ...] | None = None    # per-channel std divided by; None with mean None
    normalization: str = "none"             # where mean/std came from: dataset, weights or none

    def __post_init__(self) -> None:
        size = parse_size(self.size)
        if size is None:
            raise ConfigError("an ImageSpec needs a size; give S or (H, W)")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both mean and std, or neither")
        object.__setattr__(self, "size", size)
        if self.mean is not None:
            mean, std = _per_channel(self.mean, self.channels), _per_channel(self.std, self.channels)
            if min(std) <= 0:
                raise ConfigError(f"std must be positive, got {std}")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every decoded image."""
        return (self.channels, *self.size)

    def to_dict(self) -> dict:
        return {"size": list(self.size), "channels": self.channels, "normalization": self.normalization,
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageSpec":
        return cls(size=tuple(d["size"]), channels=int(d["channels"]), normalization=d.get("normalization", "none"),
                   mean=None if d.get("mean") is None else tuple(d["mean"]),
                   std=None if d.get("std") is None else tuple(d["std"]))

    @classmethod
    def from_in_shape(cls, in_shape) -> "ImageSpec":
        """The spec of a run saved before specs existed: its (C, H, W), raw [0, 1] pixels."""
        c, h, w = in_shape
        return cls(size=(h, w), channels=c)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 model input on x's device: x/255, normalized when mean is set."""
        out = x.to(torch.float32).div_(255)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
            out = out.sub_(mean).div_(std)
        return out


def _per_channel(values, channels: int) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if len(vals) == channels:
        return vals
    if len(vals) == 3 and channels == 1:  # RGB statistics for gray images: their luma-weighted average
        return (0.299 * vals[0] + 0.587 * vals[1] + 0.114 * vals[2],)
    if len(vals) == 1:
        return vals * channels
    raise ConfigError(f"{len(vals)} normalization values for {channels}-channel images; give 1 or {channels}")


def parse_channels(value) -> int | None:
    """``"auto"`` (or None) -> None, ``1``/``3`` (int or text) -> that int; ConfigError otherwise."""
    text = "auto" if value is None else str(value).strip().lower()
    if text not in CHANNEL_CHOICES:
        raise ConfigError(f"channels must be auto, 1 or 3, got {value!r}")
    return None if text == "auto" else int(text)


def parse_size(value) -> tuple[int, int] | None:
    """None -> None; ``S`` or ``"S"`` -> (S, S); ``"HxW"`` or (H, W) -> (H, W); ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = str(value).lower().replace("x", " ").split()
    try:
        size = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image size {value!r} is invalid; give a positive integer S (S x S) or HxW, e.g. 224")
    return size


def check_regular(path: Path) -> str | None:
    """None for a regular file (after symlinks), else why it is not one (opening a FIFO would block)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "directory" \
        if stat.S_ISDIR(mode) else "device or special file"
    return f"not a regular file ({kind})"


def header_info(path: Path) -> tuple[tuple[int, int], bool] | None:
    """((H, W) as displayed, is grayscale) from the file header without decoding pixels; None if unreadable."""
    if check_regular(path) is not None:
        return None
    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
                    w, h = h, w
            except Exception:  # a corrupt EXIF block: the decoder will report it
                pass
            return (h, w), _is_gray(img)
    except Exception:  # Pillow raises many types on corrupt headers; reported when decoded
        return None


def _is_gray(img: Image.Image) -> bool:
    if img.mode in _GRAY_MODES:
        return True
    if img.mode in ("P", "PA"):
        palette = img.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def _eight_bit(img: Image.Image) -> Image.Image:
    """An "L" or "RGB" image with the pixels of `img` (see the module docstring, step 2)."""
    if img.mode in _SIXTEEN_BIT:
        arr = np.asarray(img).astype(np.int64)
        arr = (np.clip(arr, 0, 65535) * 255 + 32767) // 65535  # 0..65535 -> 0..255, rounded
        return Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("LA", "La", "RGBA", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(white, rgba).convert("RGB")
        return flat.convert("L") if _is_gray(img) else flat
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("L" if img.mode in _GRAY_MODES or _is_gray(img) else "RGB")


def decode_pixels(path: Path, channels: int | None = None) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) pixels of one file, oriented and converted (steps 1-3); ``channels=None``
    keeps the file's own kind (1 for grayscale files, else 3). Raises DataError for any file that fails."""
    reason = check_regular(path)
    if reason is not None:
        raise DataError(reason)
    try:
        with Image.open(path) as img:
            img.load()
            oriented = ImageOps.exif_transpose(img) or img
            flat = _eight_bit(oriented)
            want = channels or (1 if flat.mode == "L" else 3)
            arr = np.array(flat.convert("L") if want == 1 and flat.mode != "L" else flat)  # writable copy
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error, ...)
        text = " ".join(str(e).replace(repr(str(path)), "").replace(str(path), "").split())
        raise DataError(f"cannot decode: {text[:120] or type(e).__name__}") from None
    if want == 3 and arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr


def fit_to(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (C, h, w) -> (C, H, W): resize to cover H x W keeping the aspect ratio, then centre-crop (step 4)."""
    h, w = t.shape[-2:]
    H, W = size
    if (h, w) == (H, W):
        return t
    scale = max(H / h, W / w)
    new = (max(H, math.ceil(h * scale - 1e-6)), max(W, math.ceil(w * scale - 1e-6)))
    if new != (h, w):
        t = TF.resize(t, list(new), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(t, [H, W])


def load_image(path: Path, spec: ImageSpec) -> torch.Tensor:
    """uint8 (C, H, W) tensor of one file under `spec` (steps 1-4); DataError when it cannot be decoded."""
    arr = decode_pixels(path, spec.channels)
    t = torch.from_numpy(np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)))
    return fit_to(t, spec.size)
