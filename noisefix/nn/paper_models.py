"""The paper's architectures (built here, not taken from torchvision) and the small MLP of `clean`.

Paper variants (Ketha & Ramaswamy, arXiv 2501.14687, their appendix architectures):
    mlp       Flatten -> C*H*W -> 128 -> 512 -> 2048 -> 2048 -> K, ReLU after each hidden Linear.
    cnn       3 x [conv3x3-ReLU-conv3x3-ReLU-maxpool2] with 16/32/64 channels -> FC 250 x 3 (ReLU) -> K.
    alexnet   small-image AlexNet (5 conv 3x3, pools after conv1/2/5) -> FC 4096 -> 4096 -> K.
    resnet18  torchvision resnet18 with a 3x3 stride-1 stem conv for inputs under 64 px, keeping the max-pool.
    mlp_small Flatten -> C*H*W -> 256 -> 256 -> K (clean's model for small images).

Every model maps float images (B, C, H, W) to logits (B, K), is traceable by torch.fx with readable node names
(``fc1``, ``relu1``, ``block2.pool``, ...) and keeps its ReLUs out of place; its default probe layers are its
``probe_layers`` attribute.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn

from noisefix.errors import ConfigError

PAPER_MODELS = ("mlp", "cnn", "alexnet", "resnet18")


# Smallest side the cnn and alexnet accept: three 2x2 max-pools need 8 pixels.
_MIN_SIDE = 8


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
        require_side(in_shape, "cnn")
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
        require_side(in_shape, "alexnet")
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


def require_side(in_shape: tuple[int, int, int], name: str) -> None:
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
PAPER_BUILDERS = {"mlp": MLP, "cnn": CNN, "alexnet": SmallAlexNet, "resnet18": _paper_resnet18, "mlp_small": SmallMLP}
