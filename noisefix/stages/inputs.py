"""The ImageSpec of a new run: what the model and its weights expect, the user's options, then the data.

Used by `train` (and `clean`) and by `probe` without a prior run; later stages read the spec back from the
run's model.json (``run_spec``), so probe, relabel and retrain feed the network exactly what it was fed.
"""

from __future__ import annotations

from pathlib import Path

from noisefix.config import ImageConfig
from noisefix.data.folders import LabeledImages
from noisefix.data.images import infer_spec
from noisefix.data.transforms import ImageSpec, parse_channels, parse_size
from noisefix.nn import weights as nw
from noisefix.nn.models import PAPER_MODELS, choose_variant, needs_rgb


def weights_variant(model: str, weights: str | Path | None) -> tuple[object, str]:
    """(resolved weights source, "paper" | "torchvision") for ``--model`` and ``--weights``."""
    source = nw.resolve_weights(model, weights)
    state = None
    if source is not None and source[0] == "file" and model in PAPER_MODELS and model in nw.torchvision_names():
        state = nw.read_state_dict(source[1], mmap=True)  # resnet18 / alexnet: the file says which variant
    return source, choose_variant(model, source, state)


def image_spec_for(train: LabeledImages, model: str, weights: str | Path | None,
                   image: ImageConfig) -> ImageSpec:
    """The spec for training or probing ``model`` (with ``weights``) on ``train``.

    Size: ``--image-size``, else the weights' (or a fixed-size model's) size, else the data's median.
    Channels: ``--channels``, else what the weights' first layer takes, else 3 for a torchvision model that
    cannot take 1, else the data's majority. Normalization: the weights' own (torchvision's mean/std, or the
    spec saved with noisefix weights), else per-dataset statistics (``image.normalize``), else none.
    """
    source, variant = weights_variant(model, weights)
    hint = nw.weights_input(model, source, torchvision_arch=variant == "torchvision")
    channels = parse_channels(image.channels)
    if channels is None:
        channels = hint.channels or (3 if variant == "torchvision" and needs_rgb(model) else None)
    normalize = image.normalize and not (hint.spec is not None and hint.spec.get("mean") is None)
    return infer_spec(train, size=parse_size(image.image_size), channels=channels, default_size=hint.size,
                      mean=hint.mean, std=hint.std, normalize=normalize)


def run_spec(model_info: dict) -> ImageSpec:
    """The spec a run was made with (model.json "image"); runs made before specs: raw pixels of in_shape."""
    if model_info.get("image"):
        return ImageSpec.from_dict(model_info["image"])
    return ImageSpec.from_in_shape(model_info["in_shape"])
