import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisefix.errors import ConfigError, ProbeError
from noisefix.nn.extract import (
    ActivationExtractor,
    LayerInfo,
    apply_pooling,
    forward_values,
    graph_nodes,
    list_layers,
    parse_pool,
    plan_pooling,
    resolve_layers,
)
from noisefix.nn.models import PAPER_MODELS, build_model


def test_mlp_activations_equal_a_manual_forward():
    torch.manual_seed(0)
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    x = torch.rand(5, 1, 8, 8)
    out = ActivationExtractor(model, ["x", "relu1", "fc2", "relu2", "fc5"])(x)
    flat = x.reshape(5, 64)
    h1 = torch.relu(flat @ model.fc1.weight.T + model.fc1.bias)
    z2 = h1 @ model.fc2.weight.T + model.fc2.bias
    assert list(out) == ["x", "relu1", "fc2", "relu2", "fc5"]
    assert torch.equal(out["x"], flat)
    torch.testing.assert_close(out["relu1"], h1)
    torch.testing.assert_close(out["fc2"], z2)
    torch.testing.assert_close(out["relu2"], torch.relu(z2))
    with torch.no_grad():
        torch.testing.assert_close(out["fc5"], model(x))
    for act in out.values():
        assert act.dtype == torch.float32 and act.is_contiguous() and not act.requires_grad


def test_logits_come_from_the_same_forward_pass():
    torch.manual_seed(0)
    model = build_model("mlp_small", in_shape=(1, 8, 8), num_classes=3).eval()
    x = torch.rand(5, 1, 8, 8)
    acts, logits = ActivationExtractor(model, ["relu1"], logits=True).with_logits(x)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
    assert list(acts) == ["relu1"] and acts["relu1"].shape == (5, 256)
    assert ActivationExtractor(model, ["relu1"]).with_logits(x)[1] is None  # not asked for: the caller runs the model


def test_in_place_ops_do_not_overwrite_requested_nodes():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(inplace=True), nn.Linear(6, 2))
    x = torch.randn(8, 1, 3, 4)
    out = ActivationExtractor(model, ["1", "2"])(x)
    with torch.no_grad():
        linear = model[1](x.reshape(8, 12))
    assert (linear < 0).any()
    torch.testing.assert_close(out["1"], linear)
    torch.testing.assert_close(out["2"], torch.relu(linear))
    assert model[2].inplace  # the user's model is left as it was


def test_eval_mode_batchnorm_makes_images_independent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.train()
    extractor = ActivationExtractor(model, ["1", "4"])
    x = torch.rand(6, 1, 8, 8)
    batch = extractor(x)
    alone = extractor(x[:1])
    torch.testing.assert_close(batch["1"][:1], alone["1"])
    torch.testing.assert_close(batch["4"][:1], alone["4"])
    with torch.no_grad():
        torch.testing.assert_close(batch["4"], model.eval()(x))


def test_pooling_shapes_and_values():
    model = build_model("cnn", in_shape=(1, 28, 28), num_classes=3)
    x = torch.rand(3, 1, 28, 28)
    extractor = ActivationExtractor(model, ["x", "block1.pool", "relu1"], pools={"x": 4, "block1.pool": 2})
    out = extractor(x)
    raw = extractor.raw(x)
    assert raw["block1.pool"].shape == (3, 16, 14, 14)
    assert out["x"].shape == (3, 16)
    assert out["block1.pool"].shape == (3, 16 * 2 * 2)
    assert out["relu1"].shape == (3, 250)
    torch.testing.assert_close(out["x"], F.adaptive_avg_pool2d(x, 4).reshape(3, 16))
    torch.testing.assert_close(out["block1.pool"], F.adaptive_avg_pool2d(raw["block1.pool"], 2).reshape(3, 64))


def test_module_name_selects_its_last_node():
    model = build_model("resnet18", in_shape=(3, 8, 8), num_classes=3)
    out = ActivationExtractor(model, ["layer1", "layer1.1.relu_1", "layer1.1.bn2"])(torch.rand(2, 3, 8, 8))
    torch.testing.assert_close(out["layer1"], out["layer1.1.relu_1"])
    assert (out["layer1.1.bn2"] < 0).any()


def test_autocast_request_is_ignored_on_cpu():
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    out = ActivationExtractor(model, ["relu1"], autocast_dtype=torch.bfloat16)(torch.rand(2, 1, 8, 8))
    assert out["relu1"].dtype == torch.float32


def test_unknown_layer_lists_valid_names():
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(ProbeError, match=r"unknown layer 'relu9'.*x, flatten, fc1, relu1"):
        resolve_layers(model, "relu1, relu9")
    with pytest.raises(ProbeError, match="unknown layer 'conv1'"):
        ActivationExtractor(model, ["conv1"])
    with pytest.raises(ProbeError, match="names no layer"):
        resolve_layers(model, " , ")


def test_long_valid_name_lists_are_shortened():
    model = build_model("resnet18", in_shape=(3, 8, 8), num_classes=3)
    with pytest.raises(ProbeError, match=r"\(\+\d+ more\)") as info:
        resolve_layers(model, "nope")
    assert len(str(info.value)) < 1200


def test_resolve_names_keeps_order_and_drops_duplicates():
    model = build_model("cnn", in_shape=(1, 8, 8), num_classes=3)
    assert resolve_layers(model, "relu2, x,block1.pool,relu2") == ["relu2", "x", "block1.pool"]
    default = ["x", "block1.pool", "block2.pool", "block3.pool", "relu1", "relu2", "relu3", "fc4"]
    assert resolve_layers(model, "default") == default


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_all_layers_of_paper_models(name):
    model = build_model(name, in_shape=(1, 8, 8), num_classes=3)
    layers = resolve_layers(model, "all")
    assert layers[0] == "x" and "flatten" not in layers
    assert set(layers) - {"x"} <= set(graph_nodes(model))
    infos = list_layers(model, (1, 8, 8), layers)
    assert [i.name for i in infos] == layers
    assert infos[-1].shape == (3,)


def test_all_skips_parameters_and_list_layers_rejects_them():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x.flatten(1) * self.scale)

    model = Scaled()
    assert resolve_layers(model, "all") == ["x", "mul", "fc"]
    with pytest.raises(ProbeError, match="'scale' does not produce one tensor per image"):
        list_layers(model, (1, 2, 2), ["scale"])


def test_list_layers_shapes_and_dims():
    model = build_model("cnn", in_shape=(1, 28, 28), num_classes=10)
    infos = {i.name: i for i in list_layers(model, (1, 28, 28))}
    assert infos["x"] == LayerInfo("x", (1, 28, 28), 784)
    assert infos["block3.pool"] == LayerInfo("block3.pool", (64, 3, 3), 576)
    assert infos["relu1"] == LayerInfo("relu1", (250,), 250)
    pooled = {i.name: i for i in list_layers(model, (1, 28, 28), ["block1.pool", "fc4"], pools={"block1.pool": 2})}
    assert pooled["block1.pool"] == LayerInfo("block1.pool", (16, 14, 14), 64)
    assert pooled["fc4"].dim == 10
    applied, pools = apply_pooling(list_layers(model, (1, 28, 28), ["block1.pool", "fc4"]), "avg:2")
    assert pools == {"block1.pool": 2, "fc4": None}
    assert applied == list(pooled.values())                 # the same dims as a pooled forward pass


def test_conv_activations_are_channel_first_in_channels_last_layout():
    torch.manual_seed(0)
    model = build_model("cnn", in_shape=(1, 12, 12), num_classes=3).eval()
    x = torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        pool1 = model.block1(x)                                  # (4, 16, 6, 6), the usual layout
        logits = model(x)
    out, got_logits = ActivationExtractor(model, ["x", "block1.pool"], logits=True).with_logits(x)
    assert model.block1.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out["x"], x.reshape(4, -1))
    torch.testing.assert_close(out["block1.pool"], pool1.reshape(4, -1))  # (C, H, W) order kept
    torch.testing.assert_close(got_logits, logits)
    assert all(a.is_contiguous() for a in out.values())
    plain = ActivationExtractor(model, ["block1.pool"], layout="contiguous")(x)  # the weights back in NCHW
    assert model.block1.conv1.weight.is_contiguous()
    torch.testing.assert_close(plain["block1.pool"], pool1.reshape(4, -1))
    resnet = build_model("resnet18", in_shape=(3, 32, 32), num_classes=3, download=False).eval()
    ActivationExtractor(resnet, ["layer1"])(torch.rand(2, 3, 32, 32))    # wide convs on small images: contiguous
    assert resnet.conv1.weight.is_contiguous()
    with pytest.raises(ConfigError, match="layout must be one of auto, channels_last, contiguous"):
        ActivationExtractor(model, ["x"], layout="nhwc")


def test_forward_values_count_every_intermediate_map():
    model = build_model("cnn", in_shape=(1, 28, 28), num_classes=10)
    # x, then per block conv1, relu1, conv2, relu2 at full size and the pool at half size; then 3 x (fc, relu), fc4
    blocks = sum(4 * c * s * s + c * (s // 2) ** 2 for c, s in ((16, 28), (32, 14), (64, 7)))
    assert forward_values(model, (1, 28, 28)) == 784 + blocks + 6 * 250 + 10
    assert model.training                                         # the mode is restored
    mlp = build_model("mlp_small", in_shape=(1, 28, 28), num_classes=10)
    assert forward_values(mlp, (1, 28, 28)) == 784 + 4 * 256 + 10


def test_list_layers_reports_a_wrong_input_shape():
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(ConfigError, match=r"cannot run on images of shape \(1, 28, 28\)"):
        list_layers(model, (1, 28, 28))


@pytest.mark.parametrize("spec, expected", [("none", None), ("auto", "auto"), ("avg:4", 4), (" AVG:1 ", 1)])
def test_parse_pool(spec, expected):
    assert parse_pool(spec) == expected


@pytest.mark.parametrize("spec", ["avg", "avg:0", "max:2", "avg:-1", "4"])
def test_parse_pool_rejects_bad_specs(spec):
    with pytest.raises(ConfigError, match="bad pool spec"):
        parse_pool(spec)


def test_plan_pooling():
    infos = [
        LayerInfo("big", (64, 32, 32), 65536),
        LayerInfo("small", (16, 4, 4), 256),
        LayerInfo("wide", (8, 2, 64), 1024),
        LayerInfo("flat", (40000,), 40000),
    ]
    assert plan_pooling(infos, None) == dict.fromkeys(["big", "small", "wide", "flat"])
    assert plan_pooling(infos, "auto") == {"big": 16, "small": None, "wide": None, "flat": None}
    assert plan_pooling(infos, "auto", max_dim=512) == {"big": 2, "small": None, "wide": 2, "flat": None}
    assert plan_pooling(infos, 4) == {"big": 4, "small": None, "wide": 4, "flat": None}
    with pytest.raises(ConfigError, match="bad pool value"):
        plan_pooling(infos, 0)


def test_activation_cache_reads_back_rows_classes_and_blocks(tmp_path):
    from noisefix.probes.rows import ActivationCache

    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((50, 6)).astype(np.float32))
    y = rng.integers(0, 3, 50)
    cache = ActivationCache(tmp_path / "c", 6, 50, rows_per_shard=7)
    order = rng.permutation(50)                                              # rows arrive in any order
    for i in range(0, 50, 9):
        ids = order[i:i + 9]
        cache.append(X[ids], ids, y[ids])
    with pytest.raises(ProbeError, match="never written"):
        ActivationCache(tmp_path / "d", 6, 5).close()
    cache.close()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [f"shard-{i:05d}.safetensors" for i in range(8)]
    for idx in ([3, 49, 0, 17, 17], np.flatnonzero(y == 1), np.arange(50)):
        assert torch.equal(cache.take(idx), X[idx])
    view = cache.subset(np.arange(10, 40))
    assert len(view) == 30 and torch.equal(view.take([0, 29]), X[[10, 39]])
    seen = np.zeros(30, dtype=int)
    for pos, rows in view.blocks(np.arange(30)):
        assert len(rows) <= 7 and torch.equal(rows, X[10 + pos])
        seen[pos] += 1
    assert (seen == 1).all()
    np.testing.assert_array_equal(view.score(np.arange(30), lambda x: x[:, :2].numpy(), 2), X[10:40, :2].numpy())
