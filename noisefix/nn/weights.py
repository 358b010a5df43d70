"""Pretrained weights: torchvision's weight enums from the local torch hub cache, or state-dict files.

``--weights`` is ``DEFAULT``, an enum name of the model's torchvision weights (``IMAGENET1K_V1``, or the full
``ResNet50_Weights.IMAGENET1K_V2``), or the path of a state-dict file (``.safetensors``; ``.pt``/``.pth`` read
with ``torch.load(weights_only=True)``, never unpickling code). An enum is looked up in the torch hub cache,
``torch.hub.get_dir()/checkpoints/<file name of its URL>``, downloaded there only when that works (there is
internet), and otherwise refused with the file it looked for. :func:`weights_input` says what a network with
such weights expects of its images (size, channels, normalization), so ``infer_spec`` can follow it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from noisefix.errors import ConfigError, RunError, shorten_names

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


SPEC_KEY = "noisefix_image_spec"  # safetensors metadata key holding a run's ImageSpec as JSON


@dataclass(frozen=True)
class InputHint:
    """What a model (with its weights) expects of the images; None where it does not care."""

    size: tuple[int, int] | None = None       # the size it was trained at (the weights' crop size)
    channels: int | None = None               # input channels of its first layer
    mean: tuple[float, ...] | None = None     # the weights' own normalization
    std: tuple[float, ...] | None = None
    min_size: tuple[int, int] | None = None   # smallest (H, W) it can run on
    spec: dict | None = None                  # the ImageSpec saved with noisefix weights, when there is one


def torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _enum_class(name: str):
    try:
        return torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return None


def find_enum(name: str, text: str):
    """The torchvision weights enum ``text`` names for model ``name`` (DEFAULT, IMAGENET1K_V1 or the full
    ``Class.MEMBER``), or None when ``text`` is no such name."""
    if "." in text and not text.lower().endswith(WEIGHT_SUFFIXES) and "/" not in text:
        try:
            return torchvision.models.get_weight(text)
        except (ValueError, KeyError, AttributeError):
            return None
    enum = _enum_class(name)
    if enum is None:
        return None
    member = "DEFAULT" if text.lower() == "default" else text
    return enum.__members__.get(member)


def resolve_weights(name: str, weights):
    """("enum", WeightsEnum) or ("file", Path) for a ``--weights`` value, None for None; errors name the fix."""
    if weights is None:
        return None
    text = str(weights)
    path = Path(text).expanduser()
    if path.exists():
        return "file", path
    enum = find_enum(name, text)
    if enum is not None:
        return "enum", enum
    if "/" in text or "\\" in text or text.lower().endswith(WEIGHT_SUFFIXES):
        raise RunError(f"weights file {text!r} does not exist; check the path, or give a torchvision weights name")
    cls = _enum_class(name)
    names = ", ".join(["DEFAULT", *cls.__members__]) if cls is not None else None
    if names is None:
        raise ConfigError(f"--weights {text!r}: model {name!r} has no torchvision weights; give the path of a "
                          "state-dict file (.safetensors, .pt, .pth)")
    raise ConfigError(f"--weights {text!r} is neither a file nor a weights name of {name}; use one of {names} "
                      "or the path of a state-dict file")


def hub_file(enum) -> Path:
    """Where torchvision keeps the file of weights ``enum``: torch.hub.get_dir()/checkpoints/<URL file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / enum.url.rsplit("/", 1)[-1]


def enum_state_dict(name: str, enum, *, download: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of torchvision weights ``enum`` for ``name`` (1000-class head), through torchvision's own
    builder so its key fixes apply; from the hub cache, downloaded there first when missing and possible."""
    path = hub_file(enum)
    if not path.is_file():
        problem = "downloading is off"
        if download:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(enum.url, str(path), progress=False)
            except Exception as exc:  # no internet: URLError, timeouts, HTTP errors, a read-only cache
                problem = f"downloading it failed ({' '.join(str(exc).split())[:80]})"
        if not path.is_file():
            raise RunError(f"torchvision weights {enum} are not in the torch hub cache (looked for {path}) and "
                           f"{problem}; copy {path.name} there from a machine with internet, or pass --weights PATH")
    try:
        return torchvision.models.get_model(name, weights=enum).state_dict()
    except Exception as exc:  # a truncated or foreign file in the cache
        raise RunError(f"cannot load {path} as {enum} ({type(exc).__name__}: {str(exc).splitlines()[0][:80]}); "
                       "delete it and fetch it again") from None


def _unwrap(state) -> dict | None:
    """A dict of tensors from a loaded checkpoint: itself, or its "state_dict"/"model" entry; "module." removed."""
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in ("state_dict", "model", "model_state_dict") if isinstance(state.get(k), dict)),
                     None)
        state = inner
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_state_dict(path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a state-dict file (.safetensors, or .pt/.pth via ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"weights file {str(path)!r} does not exist; check the path or train a model first")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError, OSError...: truncated, garbage or a lying header
            reason = " ".join(str(exc).split())[:100] or type(exc).__name__
            raise RunError(f"weights file {str(path)!r} is not a readable safetensors file ({reason}); it is "
                           "damaged or not safetensors: restore it, or re-run the stage that wrote it") from None
    if suffix not in (".pt", ".pth"):
        raise ConfigError(f"weights file {str(path)!r} must end in .safetensors, .pt or .pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError depending on the content
        raise RunError(
            f"weights file {str(path)!r} cannot be loaded safely ({type(exc).__name__}); "
            "save model.state_dict() with torch.save or use safetensors"
        ) from exc
    tensors = _unwrap(state)
    if tensors is None:
        raise RunError(f"weights file {str(path)!r} does not hold a state_dict of tensors; save model.state_dict()")
    return tensors


def file_spec(path) -> dict | None:
    """The ImageSpec dict noisefix saved in a .safetensors file's metadata, or None."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta[SPEC_KEY]) if SPEC_KEY in meta else None
    except Exception:  # not a readable safetensors file: the loader reports it
        return None


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """(qualified name, module) of the first Conv2d in module order, or None."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _meta_min_size(name: str) -> tuple[int, int] | None:
    cls = _enum_class(name)
    size = cls.DEFAULT.meta.get("min_size") if cls is not None else None
    return tuple(size) if size else None


def _imagenet_hint(enum, min_size) -> dict:
    t = enum.transforms()
    crop = tuple(t.crop_size) * (2 if len(t.crop_size) == 1 else 1)
    return dict(size=crop, channels=3, mean=tuple(t.mean), std=tuple(t.std), min_size=min_size)


def weights_input(name: str, source, *, torchvision_arch: bool) -> InputHint:
    """What model ``name`` (``torchvision_arch``: torchvision's architecture) expects with weights ``source``
    (from :func:`resolve_weights`): torchvision weights -> their crop size, RGB and their mean/std; a file of
    a torchvision architecture -> the same ImageNet conventions as that model's DEFAULT weights; a file saved
    by noisefix -> the ImageSpec saved with it; no weights -> only the model's fixed size, if it has one."""
    min_size = _meta_min_size(name) if torchvision_arch else None
    if source is not None and source[0] == "file" and file_spec(source[1]) is not None:
        spec = file_spec(source[1])
        return InputHint(size=tuple(spec["size"]), channels=int(spec["channels"]), min_size=min_size, spec=spec,
                         mean=tuple(spec["mean"]) if spec.get("mean") else None,
                         std=tuple(spec["std"]) if spec.get("std") else None)
    if not torchvision_arch:
        return InputHint()
    cls = _enum_class(name)
    if source is None:  # random init: only a model that needs one size (ViT, MaxViT, Swin) imposes it
        fixed = cls is not None and min_size is not None and min(min_size) >= 64
        return InputHint(size=min_size if fixed else None, min_size=min_size)
    enum = source[1] if source[0] == "enum" else (cls.DEFAULT if cls is not None else None)
    if enum is None:
        return InputHint(min_size=min_size)
    return InputHint(**_imagenet_hint(enum, min_size))


def _fit_report(state: dict, expected: dict) -> tuple[list[str], list[str], list[str], set[str]]:
    """(missing, unexpected, mis-shaped, head keys) of `state` against a model's state dict. Head keys differ
    only in their first dimension, which holds the same class count C in the file and K in the model."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    heads = {k for k in reshaped if state[k].dim() == expected[k].dim() >= 1
             and state[k].shape[1:] == expected[k].shape[1:]}
    if len({state[k].shape[0] for k in heads}) != 1 or len({expected[k].shape[0] for k in heads}) != 1:
        heads = set()
    return missing, unexpected, [k for k in reshaped if k not in heads], heads


def load_pretrained(model: nn.Module, state: dict, *, what: str, name: str) -> list[str]:
    """Load ``state`` into ``model``, keeping the model's own (fresh) classification head when the file's has
    another class count (1000 ImageNet classes -> K). Returns the head keys left as built; a RunError naming
    both shapes and the fix when the file is of another architecture."""
    expected = model.state_dict()
    missing, unexpected, reshaped, heads = _fit_report(state, expected)
    if missing or unexpected or reshaped:
        shapes = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(expected[k].shape)}" for k in reshaped]
        parts = [f"{label}: {shorten_names(keys, limit=4)}"
                 for label, keys in (("wrong shape", shapes), ("missing", missing), ("unexpected", unexpected)) if keys]
        raise RunError(f"{what} does not fit model {name!r} ({'; '.join(parts)}); pass the --model the file was "
                       "saved from, with the same image size and channels (or train without --weights)")
    model.load_state_dict({k: v for k, v in state.items() if k not in heads}, strict=False)
    return sorted(heads)


def spec_metadata(spec_dict: dict) -> dict[str, str]:
    """safetensors metadata entries that let a weights file carry its ImageSpec (see :func:`file_spec`)."""
    return {SPEC_KEY: json.dumps(spec_dict)}
