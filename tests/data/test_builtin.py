"""Tests for noisefix.datasets: IDX parsing, source search, digits, and export round trips."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import noisefix.data.builtin as datasets
from noisefix.data.builtin import ArrayDataset, export_dataset, load_builtin, read_idx
from noisefix.data.folders import load_data
from noisefix.data.images import ImageSource
from noisefix.errors import ConfigError, DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def _fake_idx_dir(folder: Path, *, gz: bool, n=(12, 6)) -> tuple[np.ndarray, ...]:
    """Write the four IDX files of a tiny fake MNIST into ``folder``; return (x_train, y_train, x_test, y_test)."""
    rng = np.random.default_rng(0)
    arrays = []
    for size in n:
        arrays += [rng.integers(0, 256, (size, 5, 4), dtype=np.uint8), np.arange(size, dtype=np.uint8) % 10]
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX_NAMES, arrays):
        data = _idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return tuple(arrays)


@pytest.fixture
def no_standard_places(tmp_path, monkeypatch):
    """Hide ~/.cache/noisefix, ./data and $NOISEFIX_DATA so only what a test sets up is found."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NOISEFIX_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------- sources


def test_real_mnist(noisefix_data):
    ds = load_builtin("mnist", download=False)
    assert ds.name == "mnist" and ds.classes == [str(i) for i in range(10)]
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert ds.x_train.max() == 255 and ds.x_train.flags.writeable


def test_fashion_mnist_names():
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    ds = load_builtin("fashion-mnist", download=False)
    assert ds.classes[0] == "0_T-shirt_top" and ds.classes[9] == "9_Ankle_boot"
    assert ds.classes == sorted(ds.classes) and ds.x_test.shape == (10000, 28, 28)


@pytest.mark.parametrize("gz, sub", [(True, ""), (False, "MNIST/raw"), (True, "mnist")])
def test_idx_search_and_parse(tmp_path, no_standard_places, gz, sub):
    expected = _fake_idx_dir(tmp_path / "root" / sub, gz=gz)
    ds = load_builtin("mnist", data_root=tmp_path / "root", download=False)
    for got, want in zip((ds.x_train, ds.y_train, ds.x_test, ds.y_test), expected):
        np.testing.assert_array_equal(got, want)
    assert ds.x_train.shape == (12, 5, 4)


def test_data_root_comes_before_environment(tmp_path, no_standard_places, monkeypatch):
    _fake_idx_dir(tmp_path / "env" / "FashionMNIST" / "raw", gz=True, n=(3, 2))
    monkeypatch.setenv("NOISEFIX_DATA", str(tmp_path / "env"))
    assert len(load_builtin("fashion-mnist", download=False).x_train) == 3
    _fake_idx_dir(tmp_path / "mine", gz=True, n=(4, 2))
    assert len(load_builtin("fashion-mnist", data_root=tmp_path / "mine", download=False).x_train) == 4


def test_not_found_lists_places(tmp_path, no_standard_places):
    with pytest.raises(DataError, match=r"mnist not found \(looked in: .*nowhere.*nowhere/MNIST/raw.*cache"):
        load_builtin("mnist", data_root=tmp_path / "nowhere", download=False)
    with pytest.raises(DataError, match=r"cifar10 not found"):
        load_builtin("cifar10", download=False)


def test_failed_download_becomes_data_error(tmp_path, no_standard_places, monkeypatch):
    def offline(name, dest):
        raise OSError("network unreachable")

    monkeypatch.setattr(datasets, "_download", offline)
    with pytest.raises(DataError, match=r"looked in: .*download failed \(OSError: network unreachable\)"):
        load_builtin("mnist")


def test_unknown_name():
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'; choose one of digits"):
        load_builtin("svhn")


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "not an IDX file"),
        (_idx_bytes(np.zeros((3, 2)))[:-1], r"has 17 bytes, its header \(3, 2\) needs 18"),
    ],
)
def test_bad_idx(tmp_path, data, match):
    (tmp_path / "f").write_bytes(data)
    with pytest.raises(DataError, match=match):
        read_idx(tmp_path / "f")
    (tmp_path / "g.gz").write_bytes(data)  # not gzip at all
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "g.gz")


def test_digits():
    ds = load_builtin("digits")
    assert ds.x_train.shape == (1198, 8, 8) and ds.x_test.shape == (599, 8, 8)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255 and ds.x_train.min() == 0
    counts = np.bincount(ds.y_test) / np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(counts - 1 / 3) < 0.02)  # stratified
    again = load_builtin("digits")
    np.testing.assert_array_equal(ds.y_train, again.y_train)
    np.testing.assert_array_equal(ds.x_test, again.x_test)


# ---------------------------------------------------------------- export


def _tiny_rgb() -> ArrayDataset:
    rng = np.random.default_rng(5)
    names = ["00_apple", "01_bear", "02_cloud"]
    y = np.arange(30) % 3
    return ArrayDataset("rgb", rng.integers(0, 256, (30, 4, 6, 3), dtype=np.uint8), y,
                        rng.integers(0, 256, (9, 4, 6, 3), dtype=np.uint8), np.arange(9) % 3, names)  # fmt: skip


def test_export_round_trip_with_noise(tmp_path):
    ds = load_builtin("digits")
    dest = export_dataset(ds, tmp_path / "out", corrupt=0.5, seed=3, train_subset=100, test_subset=50)
    assert dest == tmp_path / "out"
    assert sorted(p.name for p in dest.iterdir()) == ["noisy_labels.csv", "test", "train"]
    assert not list(tmp_path.glob("out.*"))
    splits = load_data(dest, dest / "noisy_labels.csv")
    train, test = splits.train, splits.test
    assert len(train) == 100 and len(test) == 50 and train.classes == ds.classes
    src_index = np.array([int(Path(p).stem) for p in train.paths])
    np.testing.assert_array_equal(train.clean_targets, ds.y_train[src_index])
    changed = train.targets != train.clean_targets
    assert 0.2 < changed.mean() < 0.7  # p (K-1)/K = 0.45
    np.testing.assert_array_equal(np.bincount(train.clean_targets, minlength=10), np.full(10, 10))  # stratified
    x, idx = next(ImageSource(train).batches(100))
    np.testing.assert_array_equal(x[:, 0].numpy(), ds.x_train[src_index[idx.numpy()]])
    test_index = np.array([int(Path(p).stem) for p in test.paths])
    np.testing.assert_array_equal(test.targets, ds.y_test[test_index])
    with open(dest / "noisy_labels.csv", encoding="utf-8") as f:
        assert f.readline() == "path,label,clean_label\n"
        assert f.readline().startswith("train/0/")
    again = export_dataset(ds, tmp_path / "again", corrupt=0.5, seed=3, train_subset=100, test_subset=50)
    assert (again / "noisy_labels.csv").read_text() == (dest / "noisy_labels.csv").read_text()
    other = export_dataset(ds, tmp_path / "other", corrupt=0.5, seed=4, train_subset=100, test_subset=50)
    assert (other / "noisy_labels.csv").read_text() != (dest / "noisy_labels.csv").read_text()


def test_export_rgb_without_noise_and_with_zero_noise(tmp_path):
    ds = _tiny_rgb()
    dest = export_dataset(ds, tmp_path / "rgb")
    assert not (dest / "noisy_labels.csv").exists()
    splits = load_data(dest)
    assert splits.train.classes == ds.classes and splits.train.paths[0] == "train/00_apple/00000.png"
    src = ImageSource(splits.train)
    x, idx = next(src.batches(30))
    assert src.shape == (3, 4, 6)
    order = [int(Path(splits.train.paths[i]).stem) for i in idx]
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), ds.x_train[order])
    zero = export_dataset(ds, tmp_path / "zero", corrupt=0.0, noise="pairflip")
    t = load_data(zero, zero / "noisy_labels.csv").train
    np.testing.assert_array_equal(t.targets, t.clean_targets)


def test_mnist_subset_export(tmp_path, noisefix_data):
    ds = load_builtin("mnist", download=False)
    dest = export_dataset(ds, tmp_path / "m", corrupt=0.2, train_subset=200, test_subset=100, seed=1)
    t = load_data(dest, dest / "noisy_labels.csv").train
    assert len(t) == 200 and t.paths[0].startswith("train/0/") and len(Path(t.paths[0]).stem) == 5
    with Image.open(dest / t.paths[0]) as img:
        assert img.mode == "L" and img.size == (28, 28)


def test_export_refuses_to_clobber(tmp_path):
    ds = _tiny_rgb()
    (tmp_path / "empty").mkdir()
    export_dataset(ds, tmp_path / "empty")  # an empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        export_dataset(ds, tmp_path / "file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not empty"):
        export_dataset(ds, tmp_path / "mine")
    with pytest.raises(DataError, match="not a noisefix export"):
        export_dataset(ds, tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_force_replaces_only_after_success(tmp_path, monkeypatch):
    ds = _tiny_rgb()
    dest = export_dataset(ds, tmp_path / "d", train_subset=9)
    assert len(load_data(dest).train) == 9

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(datasets, "_write_split", broken)
        with pytest.raises(OSError, match="disk full"):
            export_dataset(ds, dest, force=True)
    assert len(load_data(dest).train) == 9  # the old export is intact
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith(".lock")) == ["d"]  # no temporary folder left (the empty writer lock stays)
    export_dataset(ds, dest, force=True, corrupt=0.1)
    assert len(load_data(dest).train) == 30 and (dest / "noisy_labels.csv").is_file()
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith(".lock")) == ["d"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(corrupt=1.5), ConfigError, "outside"),
        (dict(corrupt=0.2, noise="asym"), ConfigError, "unknown noise type"),
        (dict(train_subset=0), ConfigError, r"train_subset=0 is invalid; give an integer in \[1, 30\]"),
        (dict(test_subset=10), ConfigError, "test_subset=10"),
    ],
)
def test_export_bad_options_write_nothing(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export_dataset(_tiny_rgb(), tmp_path / "x", **kwargs)
    assert os.listdir(tmp_path) == []


def test_export_bad_arrays(tmp_path):
    ds = _tiny_rgb()
    ds.x_train = ds.x_train.astype(np.float32)
    with pytest.raises(DataError, match="need uint8"):
        export_dataset(ds, tmp_path / "x")
    ds = _tiny_rgb()
    ds.y_test = ds.y_test + 1
    with pytest.raises(DataError, match=r"test labels must be .* in \[0, 3\)"):
        export_dataset(ds, tmp_path / "x")


def test_tiny_imagenet_from_its_standard_folder(tmp_path):
    from noisefix.data.builtin import load_builtin

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for j in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "train" / w / "images" / f"{w}_{j}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for j, w in enumerate(["n01", "n02", "n01"]):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / f"val_{j}.JPEG")
        lines.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    ds = load_builtin("tiny-imagenet", data_root=tmp_path, download=False)
    assert ds.x_train.shape == (6, 64, 64, 3) and ds.x_test.shape == (3, 64, 64, 3)
    assert ds.classes == ["0_n01", "1_n02"]  # sorted wnids, index-prefixed
    assert list(ds.y_test) == [0, 1, 0] and list(ds.y_train) == [0, 0, 0, 1, 1, 1]


def test_tiny_imagenet_missing_lists_places(tmp_path):
    from noisefix.data.builtin import load_builtin
    from noisefix.errors import DataError

    with pytest.raises(DataError, match="tiny-imagenet not found"):
        load_builtin("tiny-imagenet", data_root=tmp_path)
