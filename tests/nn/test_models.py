import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from noisefix.errors import ConfigError, RunError
from noisefix.nn.extract import graph_nodes, resolve_layers
from noisefix.nn.models import PAPER_MODELS, build_model, default_layers, load_weights

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("in_shape", SHAPES)
@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_models_give_logits(name, in_shape):
    model = build_model(name, in_shape=in_shape, num_classes=7).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, *in_shape))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_resnet18_stem_depends_on_image_size():
    small = build_model("resnet18", in_shape=(1, 32, 32), num_classes=10)
    assert small.conv1.in_channels == 1
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.maxpool, nn.MaxPool2d)
    large = build_model("resnet18", in_shape=(3, 64, 64), num_classes=10).eval()
    assert (large.conv1.kernel_size, large.conv1.stride) == ((7, 7), (2, 2))
    with torch.no_grad():
        assert large(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_mlp_parameter_count_on_mnist():
    model = build_model("mlp", in_shape=(1, 28, 28), num_classes=10)
    widths = [784, 128, 512, 2048, 2048, 10]
    expected = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    assert sum(p.numel() for p in model.parameters()) == expected == 5_433_994


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_default_layers_are_graph_nodes_in_forward_order(name):
    model = build_model(name, in_shape=(1, 8, 8), num_classes=3)
    layers = default_layers(model)
    nodes = graph_nodes(model)
    assert layers[0] == "x"
    # each default layer is a node, or a module whose last node is returned (resnet's layer1..layer4)
    positions = [
        nodes.index(n) if n in nodes else max(i for i, m in enumerate(nodes) if m.startswith(n + "."))
        for n in layers
    ]
    assert positions == sorted(positions)
    assert resolve_layers(model, ",".join(layers)) == layers
    if name != "resnet18":
        assert set(layers) <= set(nodes)


def test_torchvision_model_by_name_with_adapted_channels():
    model = build_model("mobilenet_v3_small", in_shape=(1, 32, 32), num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    assert default_layers(model) == ["x", "features.0", "features.1", "features.3", "features.8", "features.12",
                                     "classifier.1", "classifier.3"]  # stage outputs, pooled features, logits
    assert resolve_layers(model, "default") == default_layers(model)


def test_torchvision_model_that_cannot_be_adapted():
    with pytest.raises(ConfigError, match="squeezenet1_1.*3-channel"):
        build_model("squeezenet1_1", in_shape=(1, 32, 32), num_classes=5)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet19'.*mlp.*resnet18.*vgg11"):
        build_model("resnet19", in_shape=(3, 32, 32), num_classes=10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="cnn", in_shape=(1, 4, 4), num_classes=3), "at least 8x8"),
        (dict(name="mlp", in_shape=(28, 28), num_classes=3), "in_shape"),
        (dict(name="mlp", in_shape=(1, 8, 8), num_classes=1), "num_classes"),
    ],
)
def test_bad_build_options(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=match):
        build_model(name, **kwargs)


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_weights_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn", in_shape=(1, 8, 8), num_classes=3)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = build_model("cnn", in_shape=(1, 8, 8), num_classes=3, weights=path)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(_outputs(model, x), _outputs(loaded, x))


def test_weights_from_a_pt_state_dict(tmp_path):
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    other = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    load_weights(other, path)
    assert torch.equal(other.fc5.weight, model.fc5.weight)


def test_pickled_model_is_refused(tmp_path):
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    path = tmp_path / "model.pth"
    torch.save(model, path)
    with pytest.raises(RunError, match="cannot be loaded safely"):
        load_weights(model, path)


def test_weight_mismatch_names_the_keys(tmp_path):
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    state = model.state_dict()
    del state["fc1.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(RunError, match=r"missing: fc1\.bias; unexpected: extra\.weight"):
        load_weights(model, path)
    save_file(model.state_dict(), str(path))
    with pytest.raises(RunError, match=r"wrong shape: fc5\.weight \(3, 2048\) vs \(4, 2048\)"):
        load_weights(build_model("mlp", in_shape=(1, 8, 8), num_classes=4), path)  # a run's checkpoint: exact
    other = build_model("mlp", in_shape=(1, 8, 8), num_classes=4, weights=path)  # pretrained: head replaced
    assert torch.equal(other.fc4.weight, model.fc4.weight) and other.fc5.weight.shape == (4, 2048)


def test_weights_file_problems(tmp_path):
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(RunError, match="does not exist"):
        load_weights(model, tmp_path / "nope.safetensors")
    path = tmp_path / "model.bin"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\.safetensors, \.pt or \.pth"):
        load_weights(model, path)
