"""Model registry: the paper's four architectures plus any torchvision classifier by name.

Every model maps float images (B, C, H, W) -- x/255, normalized as the run's ImageSpec says (data/transforms.py)
-- to logits (B, K). Every model is traceable by ``torchvision.models.feature_extraction`` (torch.fx), and
submodules are named so that FX node names read well (``fc1``, ``relu1``, ``block2.pool``, ...).
ReLUs are never in-place, so a requested node's activations are not overwritten by a later op.

The paper's variants (Ketha & Ramaswamy, arXiv 2501.14687) and the small MLP live in nn/paper_models.py.

``resnet18`` and ``alexnet`` are also torchvision names. Without weights they are the paper's variants; with
``weights`` the architecture follows the weights: a torchvision weights name (DEFAULT, IMAGENET1K_V1) or a
file of torchvision's architecture (resnet18 with a 7x7 stem conv, alexnet with ``features.*`` keys) gives
torchvision's model (ImageNet stem), a file of the paper's variant (a 3x3 stem, ``conv1.*`` keys) the paper's.
``model.variant`` records which ("paper" or "torchvision"); pass it back to rebuild the same network.

With weights the file's (or torchvision's 1000-class) classification head is replaced by a fresh one for K
classes when the class counts differ; everything else must match exactly (noisefix/nn/weights.py).

A model's default probe layers are stored as its ``probe_layers`` attribute (see :func:`default_layers`):
for torchvision backbones the stage outputs and the pooled features, see :func:`backbone_layers`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

from noisefix.errors import ConfigError, RunError, shorten_names
from noisefix.nn import weights as nw
from noisefix.nn.paper_models import PAPER_BUILDERS, PAPER_MODELS

VARIANTS = ("paper", "torchvision")


# Containers whose children are a backbone's blocks, tried in this order (resnet's layer1..4 come first).
_TRUNKS = ("features", "layers", "trunk_output", "encoder.layers")


# torchvision families whose first Conv2d (in module order) is the first op applied to the image.
_ADAPTABLE_FAMILIES = ("resnet", "resnext", "wide_resnet", "vgg", "alexnet", "mobilenet")


# Modules whose output repeats their input in eval mode: never worth probing.
TRIVIAL_MODULES = (
    nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


def needs_rgb(name: str) -> bool:
    """True for a torchvision architecture whose first layer noisefix cannot adapt to 1 channel."""
    return name not in PAPER_BUILDERS and not name.startswith(_ADAPTABLE_FAMILIES)


def _adapt_first_conv(model: nn.Module, name: str, channels: int) -> None:
    """Replace the first Conv2d of a torchvision model by one taking ``channels`` input channels."""
    if not name.startswith(_ADAPTABLE_FAMILIES):
        raise ConfigError(
            f"model {name!r} expects 3-channel images and noisefix cannot adapt it to {channels} channel(s); "
            f"convert the images to RGB or use one of {', '.join(PAPER_MODELS)} or a "
            f"{'/'.join(_ADAPTABLE_FAMILIES)} model"
        )
    for qualname, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                channels,
                module.out_channels,
                kernel_size=module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=1,
                bias=module.bias is not None,
            )
            model.set_submodule(qualname, new)
            return


def _check_torchvision_name(name: str) -> None:
    available = nw.torchvision_names()
    if name not in available:
        raise ConfigError(
            f"unknown model {name!r}; choose one of {', '.join(PAPER_MODELS)} (paper variants), mlp_small "
            f"or a torchvision classifier: {', '.join(available)}"
        )


def choose_variant(name: str, source, state: dict | None = None) -> str:
    """"paper" or "torchvision" for model ``name`` with weights ``source`` (see the module docstring)."""
    if name not in PAPER_BUILDERS:
        return "torchvision"
    if source is None or name not in nw.torchvision_names():
        return "paper"
    if source[0] == "enum" or state is None:
        return "torchvision"
    if name == "resnet18":
        conv = state.get("conv1.weight")
        return "paper" if conv is not None and conv.dim() == 4 and tuple(conv.shape[-2:]) == (3, 3) else "torchvision"
    return "paper" if "conv1.weight" in state else "torchvision"  # alexnet: SmallAlexNet names its convs conv1..5


def _check_min_size(name: str, in_shape: tuple[int, int, int]) -> None:
    low = nw.weights_input(name, None, torchvision_arch=True).min_size
    if low is not None and (in_shape[1] < low[0] or in_shape[2] < low[1]):
        raise ConfigError(f"model {name!r} needs images of at least {low[0]}x{low[1]} pixels, got "
                          f"{in_shape[1]}x{in_shape[2]}; pass --image-size {max(low)} or larger")


def _torchvision_model(name: str, in_shape: tuple[int, int, int], num_classes: int,
                       state: dict | None) -> nn.Module:
    _check_torchvision_name(name)
    _check_min_size(name, in_shape)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    found = nw.first_conv(model)
    if state is not None and found is not None and f"{found[0]}.weight" in state:
        wants = state[f"{found[0]}.weight"].shape[1]
        if wants != in_shape[0]:
            raise ConfigError(f"the weights expect {wants}-channel images but the images have {in_shape[0]}; "
                              f"pass --channels {wants} (grayscale images are repeated to 3 channels)")
    if in_shape[0] != 3:
        _adapt_first_conv(model, name, in_shape[0])
    return model


def _read_weights(name: str, source, download: bool) -> tuple[dict | None, str]:
    if source is None:
        return None, ""
    kind, value = source
    if kind == "enum":
        return nw.enum_state_dict(name, value, download=download), f"torchvision weights {value}"
    return nw.read_state_dict(value), f"weights file {str(value)!r}"


def build_model(
    name: str,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    weights: str | Path | None = None,
    variant: str | None = None,
    download: bool = True,
) -> nn.Module:
    """Build model ``name`` for images of shape ``in_shape`` = (C, H, W) and ``num_classes`` = K classes.

    ``name`` is one of :data:`PAPER_MODELS` or any torchvision classifier name (a non-3-channel ``in_shape``
    adapts the first conv of randomly initialized resnet/vgg/alexnet/mobilenet families). ``weights``: None
    (random), a torchvision weights name (DEFAULT, IMAGENET1K_V1, ...) resolved from the torch hub cache
    (downloaded only when ``download`` and there is internet), or a state-dict file; the head is replaced for
    K classes. ``variant`` (paper | torchvision) overrides the choice for resnet18/alexnet (module docstring).
    Returns a module mapping (B, C, H, W) floats to logits (B, K), with ``variant`` and ``probe_layers`` set.
    """
    in_shape = _check_in_shape(in_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}; check the class folders")
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    source = nw.resolve_weights(name, weights)
    if source is not None and source[0] == "enum" and name in PAPER_BUILDERS and variant == "paper":
        raise ConfigError(f"torchvision weights {source[1]} are for torchvision's {name}, not the paper variant")
    state, what = _read_weights(name, source, download)
    variant = variant or choose_variant(name, source, state)
    if variant == "paper" and name in PAPER_BUILDERS:
        model = PAPER_BUILDERS[name](in_shape, num_classes)
    else:
        variant = "torchvision"
        model = _torchvision_model(name, in_shape, num_classes, state)
        model.probe_layers = tuple(backbone_layers(model, in_shape, name=name))
    if state is not None:
        nw.load_pretrained(model, state, what=what, name=name)
    model.variant = variant
    return model


def _check_in_shape(in_shape) -> tuple[int, int, int]:
    shape = tuple(in_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ConfigError(f"in_shape must be three positive integers (C, H, W), got {in_shape!r}")
    return shape


def default_layers(model: nn.Module) -> list[str]:
    """Layers probed by default, in forward order, the input ``"x"`` first.

    Models from :func:`build_model` list theirs in ``model.probe_layers``; any other model gets ``"x"`` plus
    its top-level children that run in the eval-mode forward pass, except Dropout/Identity/Flatten (which
    repeat their input). A child's name selects the last node of that module (torchvision feature extraction).
    """
    explicit = getattr(model, "probe_layers", None)
    if explicit is not None:
        return list(explicit)
    nodes = get_graph_node_names(model, suppress_diff_warning=True)[1]
    return ["x"] + [
        name
        for name, child in model.named_children()
        if not isinstance(child, TRIVIAL_MODULES) and any(n == name or n.startswith(name + ".") for n in nodes)
    ]


def _trunk(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of a backbone's blocks: resnet's layer1..N, else the children of the first
    container in ``_TRUNKS`` that exists, else the model's own children."""
    stages = [(n, m) for n, m in model.named_children() if re.fullmatch(r"layer[0-9]+", n)]
    if stages:
        return stages
    for path in _TRUNKS:
        try:
            container = model.get_submodule(path)
        except AttributeError:
            continue
        children = list(container.named_children())
        if len(children) >= 2:
            return [(f"{path}.{n}", m) for n, m in children]
    return [(n, m) for n, m in model.named_children() if not isinstance(m, TRIVIAL_MODULES)]


def _block_shapes(model: nn.Module, blocks, in_shape, name: str) -> dict[str, tuple[int, ...]]:
    """Per-image output shape of each block that runs, from one eval-mode forward pass on a zero image."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(q: str):
        def hook(_module, _inputs, out) -> None:  # returns None: the output is left as it is
            if isinstance(out, torch.Tensor):
                shapes.setdefault(q, tuple(out.shape[1:]))
        return hook

    hooks = [m.register_forward_hook(record(q)) for q, m in blocks]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *in_shape))
    except Exception as exc:  # size asserts and shape errors differ by architecture
        first = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise ConfigError(f"model {name!r} cannot run on {in_shape[1]}x{in_shape[2]} images ({first}); pass an "
                          "--image-size the model accepts (its weights' size, e.g. 224)") from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def _pooled_node(model: nn.Module, nodes: list[str]) -> str | None:
    """The node the classification head (the last Linear) reads: the pooled features, walking back over
    Dropout/Identity nodes; None when the model has no Linear head."""
    head = next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    if head is None or head not in nodes:
        return None
    i = nodes.index(head) - 1
    while i > 0:
        try:
            module = model.get_submodule(nodes[i])
        except AttributeError:
            break
        if not isinstance(module, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)):
            break
        i -= 1
    return nodes[i] if i > 0 else None


def backbone_layers(model: nn.Module, in_shape: tuple[int, int, int], *, name: str = "model") -> list[str]:
    """Default probe layers of a torchvision backbone: ``"x"``, the stage outputs, the pooled features and
    the logits, in forward order.

    The blocks are resnet's ``layer1..N``, else the children of ``features`` / ``layers`` / ``trunk_output`` /
    ``encoder.layers``, else the top-level children. The stage outputs are resnet's layers as they are; for
    the others the last block at each spatial resolution (the last two dimensions of a 3-D output), and when
    that finds fewer than 3 (a ViT's equal-sized encoder layers) the blocks at each quarter of the depth.
    Raises ConfigError when the model cannot run on ``in_shape``.
    """
    blocks = _trunk(model)
    shapes = _block_shapes(model, blocks, in_shape, name)
    ran = [q for q, _ in blocks if q in shapes]
    if ran and re.fullmatch(r"layer[0-9]+", ran[0]):
        stages = ran
    else:
        res = [shapes[q][-2:] if len(shapes[q]) == 3 else shapes[q] for q in ran]
        stages = [q for i, q in enumerate(ran) if i == len(ran) - 1 or res[i + 1] != res[i]]
        if len(stages) < 3 and len(ran) >= 4:
            stages = list(dict.fromkeys(ran[max(0, round(len(ran) * f) - 1)] for f in (0.25, 0.5, 0.75, 1.0)))
    nodes = get_graph_node_names(model, suppress_diff_warning=True)[1]

    def position(layer: str) -> int:  # a module name stands for its last node
        return nodes.index(layer) if layer in nodes else max(
            (i for i, n in enumerate(nodes) if n.startswith(layer + ".")), default=len(nodes))

    pooled = _pooled_node(model, nodes)
    if pooled is not None:  # blocks from the pooled features on (avgpool, the head) are not stages
        stages = [q for q in stages if position(q) < position(pooled)]
    tail = [n for n in (pooled, nodes[-1]) if n is not None]
    return ["x", *sorted(dict.fromkeys([*stages, *tail]), key=position)]


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``path`` (.safetensors, or .pt/.pth via ``torch.load(weights_only=True)``).

    Keys and shapes must match ``model.state_dict()`` exactly (a run's own checkpoints); otherwise a RunError
    names the missing, unexpected or mis-shaped keys. Pretrained weights go through ``build_model(weights=)``.
    """
    path = Path(path)
    state = nw.read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or reshaped:
        parts = [
            f"{label}: {shorten_names(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
            if keys
        ]
        raise RunError(
            f"weights file {str(path)!r} does not fit this model ({'; '.join(parts)}); "
            "build the model with the same name, in_shape and num_classes it was trained with"
        )
    model.load_state_dict(state)
