"""Model registry: the paper's four architectures plus any torchvision classifier by name.

Every model takes float images in [0, 1] of shape (B, C, H, W) (no normalization inside) and returns
logits (B, K). Every model is traceable by ``torchvision.models.feature_extraction`` (torch.fx), and
submodules are named so that FX node names read well (``fc1``, ``relu1``, ``block2.pool``, ...).
ReLUs are never in-place, so a requested node's activations are not overwritten by a later op.

Paper variants (Ketha & Ramaswamy, arXiv 2501.14687, section 6 of DESIGN.md):
    mlp       Flatten -> C*H*W -> 128 -> 512 -> 2048 -> 2048 -> K, ReLU after each hidden Linear.
    cnn       3 x [conv3x3-ReLU-conv3x3-ReLU-maxpool2] with 16/32/64 channels -> FC 250 x 3 (ReLU) -> K.
    alexnet   small-image AlexNet (5 conv 3x3, pools after conv1/2/5) -> FC 4096 -> 4096 -> K.
    resnet18  torchvision resnet18 with a 3x3 stride-1 stem conv for inputs under 64 px, keeping the max-pool.

A model's default probe layers are stored as its ``probe_layers`` attribute (see :func:`default_layers`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

from noisefix.errors import ConfigError, RunError, shorten_names

PAPER_MODELS = ("mlp", "cnn", "alexnet", "resnet18")


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
            "resize the images or choose --model mlp"
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


_PAPER_BUILDERS = {"mlp": MLP, "cnn": CNN, "alexnet": SmallAlexNet, "resnet18": _paper_resnet18}


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


def _torchvision_model(name: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ConfigError(
            f"unknown model {name!r}; choose one of {', '.join(PAPER_MODELS)} (paper variants) "
            f"or a torchvision classifier: {', '.join(available)}"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_shape[0] != 3:
        _adapt_first_conv(model, name, in_shape[0])
    return model


def build_model(
    name: str,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build model ``name`` for images of shape ``in_shape`` = (C, H, W) and ``num_classes`` = K classes.

    ``name`` is one of :data:`PAPER_MODELS` or any torchvision classifier name (built with random
    weights; a non-3-channel ``in_shape`` adapts the first conv for resnet/vgg/alexnet/mobilenet
    families). ``weights`` is a local ``.safetensors``/``.pt``/``.pth`` state dict; nothing is downloaded.
    Returns a module mapping (B, C, H, W) floats in [0, 1] to logits (B, K).
    """
    in_shape = _check_in_shape(in_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}; check the class folders")
    if name in _PAPER_BUILDERS:
        model = _PAPER_BUILDERS[name](in_shape, num_classes)
    else:
        model = _torchvision_model(name, in_shape, num_classes)
    if weights is not None:
        load_weights(model, weights)
    return model


def _check_in_shape(in_shape) -> tuple[int, int, int]:
    shape = tuple(in_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ConfigError(f"in_shape must be three positive integers (C, H, W), got {in_shape!r}")
    return shape


def default_layers(model: nn.Module) -> list[str]:
    """Layers probed by default, in forward order, the input ``"x"`` first.

    Paper models list theirs in ``model.probe_layers``; any other model gets ``"x"`` plus its top-level
    children that run in the eval-mode forward pass, except Dropout/Identity/Flatten (which repeat
    their input). A child's name selects the last node of that module (torchvision feature extraction).
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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RunError(f"weights file {str(path)!r} does not exist; check the path or train a model first")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if suffix not in (".pt", ".pth"):
        raise ConfigError(f"weights file {str(path)!r} must end in .safetensors, .pt or .pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError depending on the content
        raise RunError(
            f"weights file {str(path)!r} cannot be loaded safely ({type(exc).__name__}); "
            "save model.state_dict() with torch.save or use safetensors"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"weights file {str(path)!r} does not hold a state_dict of tensors; save model.state_dict()")
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``path`` (.safetensors, or .pt/.pth via ``torch.load(weights_only=True)``).

    Keys and shapes must match ``model.state_dict()`` exactly; otherwise a RunError names the
    missing, unexpected or mis-shaped keys.
    """
    path = Path(path)
    state = _read_state_dict(path)
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
