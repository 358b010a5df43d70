"""Model registry: the paper's four architectures plus any torchvision classifier by name.

Every model maps float images (B, C, H, W) -- x/255, normalized as the run's ImageSpec says (data/transforms.py)
-- to logits (B, K). Every model is traceable by ``torchvision.models.feature_extraction`` (torch.fx), and
submodules are named so that FX node names read well (``fc1``, ``relu1``, ``block2.pool``, ...).
ReLUs are never in-place, so a requested node's activations are not overwritten by a later op.

Paper variants (Ketha & Ramaswamy, arXiv 2501.14687, their appendix architectures):
    mlp       Flatten -> C*H*W -> 128 -> 512 -> 2048 -> 2048 -> K, ReLU after each hidden Linear.
    cnn       3 x [conv3x3-ReLU-conv3x3-ReLU-maxpool2] with 16/32/64 channels -> FC 250 x 3 (ReLU) -> K.
    alexnet   small-image AlexNet (5 conv 3x3, pools after conv1/2/5) -> FC 4096 -> 4096 -> K.
    resnet18  torchvision resnet18 with a 3x3 stride-1 stem conv for inputs under 64 px, keeping the max-pool.

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
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

from noisefix.errors import ConfigError, RunError, shorten_names
from noisefix.nn import weights as nw

PAPER_MODELS = ("mlp", "cnn", "alexnet", "resnet18")


VARIANTS = ("paper", "torchvision")


# Containers whose children are a backbone's blocks, tried in this order (resnet's layer1..4 come first).
_TRUNKS = ("features", "layers", "trunk_output", "encoder.layers")


# torchvision families whose first Conv2d (in module order) is the first op applied to the image.
_ADAPTABLE_FAMILIES = ("resnet", "resnext", "wide_resnet", "vgg", "alexnet", "mobilenet")


# Smallest side the cnn and alexnet accept: three 2x2 max-pools need 8 pixels.
_MIN_SIDE = 8


# Modules whose output repeats their input in eval mode: never worth probing.
TRIVIAL_MODULES = (
    nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


class MLP(nn.Module):
    """The paper's MLP: C*H*W -> 128 -> 512 -> 2048 -> 2048 -> K, ReLU after each hidden layer.

    Node names: ``flatten, fc1, relu1, fc2, relu2, fc3, relu3, fc4, relu4, fc5`` (fc5 = logits).
    """

    probe_layers = ("x", "relu1", "relu2", "relu3", "relu4", "fc5")
    hidden = (128, 512, 2048, 2048)

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = in_shape
        self.flatten = nn.Flatten()
        widths = (c * h * w, *self.hidden)
        for i in range(len(self.hidden)):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))
            setattr(self, f"relu{i + 1}", nn.ReLU())
        self.fc5 = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)  # (B, C*H*W)
        x = self.relu1(self.fc1(x))  # (B, 128)
        x = self.relu2(self.fc2(x))  # (B, 512)
        x = self.relu3(self.fc3(x))  # (B, 2048)
        x = self.relu4(self.fc4(x))  # (B, 2048)
        return self.fc5(x)  # (B, K)


class SmallMLP(nn.Module):
    """A small MLP for fast cleaning of small images: C*H*W -> 256 -> 256 -> K, ReLU after each hidden layer.

    Not a paper model: `clean`'s default for images of at most 32x32x3 values (docs/cleaning.md: it trains in
    about a second per epoch on 60,000 MNIST images on 2 CPU cores, and its early checkpoints already decode
    the true labels). Node names: ``flatten, fc1, relu1, fc2, relu2, fc3`` (fc3 = logits).
    """

    probe_layers = ("x", "relu1", "relu2", "fc3")

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 256):
        super().__init__()
        c, h, w = in_shape
        self.flatten = nn.Flatten()
        self.fc1, self.relu1 = nn.Linear(c * h * w, width), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(width, width), nn.ReLU()
        self.fc3 = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))  # (B, 256)
        x = self.relu2(self.fc2(x))  # (B, 256)
        return self.fc3(x)  # (B, K)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """conv3x3-ReLU-conv3x3-ReLU-maxpool2, padding 1: (B, c_in, H, W) -> (B, c_out, H//2, W//2)."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(c_in, c_out, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(c_out, c_out, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


class CNN(nn.Module):
    """The paper's CNN: 3 blocks of [conv-ReLU-conv-ReLU-maxpool] (16/32/64 ch) -> FC 250 x 3 -> K.

    Node names: ``block{1,2,3}.{conv1,relu1,conv2,relu2,pool}``, ``flatten``, ``fc1, relu1, fc2,
    relu2, fc3, relu3, fc4`` (fc4 = logits). Block outputs: (64, H//8, W//8) after block 3.
    """

    probe_layers = ("x", "block1.pool", "block2.pool", "block3.pool", "relu1", "relu2", "relu3", "fc4")

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = in_shape
        _require_side(in_shape, "cnn")
        self.block1 = _conv_block(c, 16)
        self.block2 = _conv_block(16, 32)
        self.block3 = _conv_block(32, 64)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * (h // 8) * (w // 8), 250)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(250, 250)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(250, 250)
        self.relu3 = nn.ReLU()
        self.fc4 = nn.Linear(250, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))  # (B, 64, H//8, W//8)
        x = self.flatten(x)  # (B, 64*(H//8)*(W//8))
        x = self.relu1(self.fc1(x))  # (B, 250)
        x = self.relu2(self.fc2(x))  # (B, 250)
        x = self.relu3(self.fc3(x))  # (B, 250)
        return self.fc4(x)  # (B, K)


class SmallAlexNet(nn.Module):
    """Small-image AlexNet (CIFAR-100 at 32 px, Tiny ImageNet at 64 px), as trained in the paper.

    Exact choice: conv1 64, conv2 192, conv3 384, conv4 256, conv5 256 channels, all 3x3 kernels with
    stride 1 and padding 1, each followed by ReLU; 2x2 stride-2 max-pools after conv1, conv2 and conv5,
    so the last map is (256, H//8, W//8) (4x4 at 32 px, 8x8 at 64 px, 1x1 at 8 px); then
    fc6: 256*(H//8)*(W//8) -> 4096, fc7: 4096 -> 4096 (ReLU each), fc8: 4096 -> K. No dropout and no
    normalization layers: the paper trains to memorize the noisy labels.

    Node names: ``conv1, relu1, pool1, conv2, relu2, pool2, conv3, relu3, conv4, relu4, conv5, relu5,
    pool5, flatten, fc6, relu6, fc7, relu7, fc8``.
    """

    probe_layers = ("x", "pool1", "pool2", "relu3", "relu4", "pool5", "relu6", "relu7", "fc8")
    channels = (64, 192, 384, 256, 256)
    pooled = (1, 2, 5)

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = in_shape
        _require_side(in_shape, "alexnet")
        widths = (c, *self.channels)
        for i in range(1, 6):
            setattr(self, f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], 3, padding=1))
            setattr(self, f"relu{i}", nn.ReLU())
            if i in self.pooled:
                setattr(self, f"pool{i}", nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.fc6 = nn.Linear(256 * (h // 8) * (w // 8), 4096)
        self.relu6 = nn.ReLU()
        self.fc7 = nn.Linear(4096, 4096)
        self.relu7 = nn.ReLU()
        self.fc8 = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))  # (B, 64, H//2, W//2)
        x = self.pool2(self.relu2(self.conv2(x)))  # (B, 192, H//4, W//4)
        x = self.relu3(self.conv3(x))  # (B, 384, H//4, W//4)
        x = self.relu4(self.conv4(x))  # (B, 256, H//4, W//4)
        x = self.pool5(self.relu5(self.conv5(x)))  # (B, 256, H//8, W//8)
        x = self.flatten(x)  # (B, 256*(H//8)*(W//8))
        x = self.relu6(self.fc6(x))  # (B, 4096)
        x = self.relu7(self.fc7(x))  # (B, 4096)
        return self.fc8(x)  # (B, K)


def _require_side(in_shape: tuple[int, int, int], name: str) -> None:
    if min(in_shape[1:]) < _MIN_SIDE:
        raise ConfigError(
            f"model {name!r} needs images of at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got in_shape={in_shape}; "
            f"pass --image-size {_MIN_SIDE} or larger, or choose --model mlp"
        )


def _paper_resnet18(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """torchvision resnet18; under 64 px a 3x3 stride-1 stem conv (max-pool kept); C input channels."""
    c, h, w = in_shape
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if min(h, w) < 64:
        model.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif c != 3:
        model.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
    for module in model.modules():  # in-place ReLUs would overwrite the bn/add nodes a probe asks for
        if isinstance(module, nn.ReLU):
            module.inplace = False
    model.probe_layers = ("x", "maxpool", "layer1", "layer2", "layer3", "layer4", "flatten", "fc")
    return model


#: Models built here (the paper's four and the small MLP); any other name is a torchvision classifier.
_PAPER_BUILDERS = {"mlp": MLP, "cnn": CNN, "alexnet": SmallAlexNet, "resnet18": _paper_resnet18, "mlp_small": SmallMLP}


def needs_rgb(name: str) -> bool:
    """True for a torchvision architecture whose first layer noisefix cannot adapt to 1 channel."""
    return name not in _PAPER_BUILDERS and not name.startswith(_ADAPTABLE_FAMILIES)


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
    if name not in _PAPER_BUILDERS:
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
    if source is not None and source[0] == "enum" and name in _PAPER_BUILDERS and variant == "paper":
        raise ConfigError(f"torchvision weights {source[1]} are for torchvision's {name}, not the paper variant")
    state, what = _read_weights(name, source, download)
    variant = variant or choose_variant(name, source, state)
    if variant == "paper" and name in _PAPER_BUILDERS:
        model = _PAPER_BUILDERS[name](in_shape, num_classes)
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
