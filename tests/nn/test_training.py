import numpy as np
import pytest
import torch

from noisefix.config import TrainConfig
from noisefix.data.builtin import export_dataset, load_builtin
from noisefix.data.folders import load_data
from noisefix.data.images import ImageSource
from noisefix.errors import ConfigError
from noisefix.nn.device import resolve_device, seed_everything
from noisefix.nn.models import build_model
from noisefix.nn.training import EvalSet, evaluate, train_model


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    return export_dataset(load_builtin("digits"), tmp_path_factory.mktemp("d") / "digits", corrupt=0.0, seed=0)


def test_short_real_training_run_on_digits_learns(digits_folder):
    splits = load_data(digits_folder)
    src, test = ImageSource(splits.train), ImageSource(splits.test)
    model = build_model("mlp", in_shape=src.shape, num_classes=10)
    cfg = TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=4)
    saved = []
    history = train_model(model, src, splits.train.targets, cfg,
                          eval_sets={"test": EvalSet(test, splits.test.targets)},
                          save=lambda epoch, m: saved.append(epoch))
    assert [h.epoch for h in history] == [1, 2, 3, 4]
    assert history[-1].loss < history[0].loss
    assert history[-1].eval_acc["test"] > 0.8
    assert saved == [0, 4]  # initial weights always, then the last epoch


def test_stops_at_target_accuracy_and_saves_requested_epochs(tiny_folder):
    splits = load_data(tiny_folder)
    src = ImageSource(splits.train)
    model = build_model("mlp", in_shape=src.shape, num_classes=3)
    cfg = TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=200, target_acc=1.0,
                                save_epochs=(1, 2), batch_size=8)
    saved = []
    history = train_model(model, src, splits.train.targets, cfg, save=lambda e, m: saved.append(e))
    assert history[-1].train_acc == 1.0 and len(history) < 200
    assert saved[:3] == [0, 1, 2] and saved[-1] == history[-1].epoch


def test_training_is_reproducible_with_a_seed(tiny_folder):
    splits = load_data(tiny_folder)
    src = ImageSource(splits.train)

    def run(seed):
        seed_everything(seed)
        model = build_model("mlp", in_shape=src.shape, num_classes=3)
        torch.rand(5)  # global RNG use between build and training must not matter
        train_model(model, src, splits.train.targets, TrainConfig.for_model("mlp", epochs=2, seed=seed, batch_size=8))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_clean_label_accuracy_and_evaluate(tiny_folder):
    splits = load_data(tiny_folder)
    src = ImageSource(splits.train)
    model = build_model("mlp", in_shape=src.shape, num_classes=3)
    flipped = (splits.train.targets + 1) % 3
    cfg = TrainConfig.for_model("mlp", optimizer="adam", epochs=30, batch_size=8)
    history = train_model(model, src, flipped, cfg, clean_labels=splits.train.targets)
    assert history[-1].train_acc > 0.9 and history[-1].train_clean_acc < 0.2
    acc = evaluate(model, EvalSet(src, flipped, indices=np.arange(5)), device=torch.device("cpu"))
    assert 0.0 <= acc <= 1.0


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
