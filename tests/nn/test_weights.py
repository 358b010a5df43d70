"""Pretrained backbones: torchvision weights from the hub cache or a file, head replacement, bad weights."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from noisefix.errors import ConfigError, RunError
from noisefix.nn import weights as nw
from noisefix.nn.extract import ActivationExtractor, list_layers
from noisefix.nn.models import build_model, default_layers


@pytest.fixture
def imagenet_resnet18(tmp_path):
    """A torchvision resnet18 state dict with its 1000-class ImageNet head (random weights), saved as .pth."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    return path, state


def test_imagenet_file_loads_with_the_head_replaced(imagenet_resnet18):
    path, state = imagenet_resnet18
    model = build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, weights=path).eval()
    assert model.variant == "torchvision"
    assert model.conv1.kernel_size == (7, 7) and model.fc.weight.shape == (3, 512)
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(model.bn1.running_var, state["bn1.running_var"])
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert default_layers(model) == ["x", "layer1", "layer2", "layer3", "layer4", "flatten", "fc"]
    dims = {i.name: i.dim for i in list_layers(model, (3, 32, 32))}
    assert dims["flatten"] == 512 and dims["fc"] == 3
    rebuilt = build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, variant="torchvision")
    assert rebuilt.conv1.kernel_size == (7, 7)  # the variant alone rebuilds the same network for a checkpoint


def test_paper_resnet18_file_keeps_the_paper_variant(tmp_path):
    paper = build_model("resnet18", in_shape=(1, 28, 28), num_classes=10)
    assert paper.variant == "paper" and paper.conv1.kernel_size == (3, 3)
    path = tmp_path / "paper.safetensors"
    save_file(paper.state_dict(), str(path))
    again = build_model("resnet18", in_shape=(1, 28, 28), num_classes=4, weights=path)
    assert again.variant == "paper" and torch.equal(again.conv1.weight, paper.conv1.weight)
    assert again.fc.weight.shape == (4, 512)


def test_weights_of_another_architecture_are_one_line_naming_shapes(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(RunError) as err:
        build_model("resnet18", in_shape=(3, 64, 64), num_classes=3, weights=path)
    text = str(err.value)
    assert "\n" not in text and "does not fit model 'resnet18'" in text
    assert "layer1.0.conv1.weight (64, 64, 1, 1) in the file vs (64, 64, 3, 3)" in text
    assert "pass the --model the file was saved from" in text


def test_grayscale_images_with_rgb_weights_are_refused(imagenet_resnet18):
    with pytest.raises(ConfigError, match=r"expect 3-channel images .* --channels 3"):
        build_model("resnet18", in_shape=(1, 32, 32), num_classes=3, weights=imagenet_resnet18[0])


def test_enum_names_come_from_the_hub_cache(hub, imagenet_resnet18):
    with pytest.raises(RunError) as err:
        build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, weights="DEFAULT")
    text = str(err.value)
    assert "\n" not in text and str(hub / "checkpoints" / "resnet18-f37072fd.pth") in text
    assert "Name or service not known" in text and "--weights PATH" in text
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(imagenet_resnet18[1], hub / "checkpoints" / "resnet18-f37072fd.pth")
    for name in ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        model = build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, weights=name)
        assert model.variant == "torchvision"
        assert torch.equal(model.layer1[0].conv1.weight, imagenet_resnet18[1]["layer1.0.conv1.weight"])
    with pytest.raises(ConfigError, match=r"neither a file nor a weights name of resnet18; use one of DEFAULT, "
                                          r"IMAGENET1K_V1"):
        build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, weights="IMAGENET1K_V9")
    with pytest.raises(ConfigError, match="model 'mlp' has no torchvision weights"):
        build_model("mlp", in_shape=(1, 8, 8), num_classes=3, weights="DEFAULT")
    with pytest.raises(RunError, match="does not exist"):
        build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, weights="missing/file.pth")


def test_input_hints():
    source = nw.resolve_weights("resnet50", "IMAGENET1K_V2")
    hint = nw.weights_input("resnet50", source, torchvision_arch=True)
    assert hint.size == (224, 224) and hint.channels == 3 and hint.mean == (0.485, 0.456, 0.406)
    assert nw.weights_input("vit_b_16", None, torchvision_arch=True).size == (224, 224)  # a fixed-size model
    assert nw.weights_input("resnet50", None, torchvision_arch=True).size is None  # any size works
    assert nw.weights_input("mlp", None, torchvision_arch=False) == nw.InputHint()


def test_saved_spec_travels_with_safetensors_weights(tmp_path):
    model = build_model("cnn", in_shape=(1, 16, 16), num_classes=3)
    spec = {"size": [16, 16], "channels": 1, "normalization": "dataset", "mean": [0.2], "std": [0.3]}
    path = tmp_path / "cnn.safetensors"
    save_file(model.state_dict(), str(path), metadata=nw.spec_metadata(spec))
    hint = nw.weights_input("cnn", ("file", path), torchvision_arch=False)
    assert hint.size == (16, 16) and hint.channels == 1 and hint.mean == (0.2,) and hint.spec == spec


@pytest.mark.parametrize("name, size, match", [
    ("alexnet", 32, "at least 63x63 pixels.* --image-size 63"),
    ("vit_b_16", 112, "at least 224x224"),
    ("cnn", 4, "at least 8x8 pixels.* --image-size 8"),
])
def test_image_size_below_what_the_model_accepts(name, size, match):
    variant = "torchvision" if name == "alexnet" else None
    with pytest.raises(ConfigError, match=match) as err:
        build_model(name, in_shape=(3, size, size), num_classes=3, variant=variant)
    assert "\n" not in str(err.value)


def test_checkpoint_dicts_and_ddp_prefixes_are_unwrapped(tmp_path):
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = build_model("mlp", in_shape=(1, 8, 8), num_classes=3, weights=path)
    assert torch.equal(loaded.fc3.weight, model.fc3.weight)


def test_pretrained_features_extract(imagenet_resnet18):
    model = build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, weights=imagenet_resnet18[0])
    out = ActivationExtractor(model, default_layers(model))(torch.rand(4, 3, 32, 32))
    assert out["flatten"].shape == (4, 512) and out["layer4"].shape == (4, 512)
