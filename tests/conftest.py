"""Shared fixtures: tiny real image folders made of scikit-learn's 8x8 digits, and the shared MNIST files."""

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (1797, 8, 8) images scaled from 0..16 to 0..255, and int64 (1797,) labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


@pytest.fixture
def make_image_folder(tmp_path):
    """Factory writing a real PNG image folder of 8x8 digits; returns its root.

    ``layout="split"`` writes ``root/train/<c>/NNN.png`` and ``root/<test_dir>/<c>/NNN.png``; ``"flat"``
    writes ``root/<c>/NNN.png`` only. Class folders are "0".."K-1" holding the first images of that digit
    (train ones first, then test ones); ``rgb=True`` writes 3-channel copies.
    """

    def make(
        name: str = "data",
        *,
        layout: str = "split",
        num_classes: int = 3,
        train_per_class: int = 10,
        test_per_class: int = 4,
        rgb: bool = False,
        test_dir: str = "test",
    ) -> Path:
        images, labels = _digits()
        root = tmp_path / name
        splits = {"train": (0, train_per_class), test_dir: (train_per_class, train_per_class + test_per_class)}
        if layout == "flat":
            splits = {"": (0, train_per_class)}
        for split, (lo, hi) in splits.items():
            for c in range(num_classes):
                folder = root / split / str(c)
                folder.mkdir(parents=True)
                for j, i in enumerate(np.flatnonzero(labels == c)[lo:hi]):
                    img = Image.fromarray(images[i])
                    (img.convert("RGB") if rgb else img).save(folder / f"{j:03d}.png")
        return root

    return make


@pytest.fixture
def tiny_folder(make_image_folder) -> Path:
    """Split layout: DATA/train/{0,1,2}/ with 10 images each and DATA/test/{0,1,2}/ with 4 each."""
    return make_image_folder()


@pytest.fixture
def tiny_flat_folder(make_image_folder) -> Path:
    """Flat layout: DATA/{0,1,2}/ with 10 images each, no test split."""
    return make_image_folder("flat", layout="flat")


@pytest.fixture
def noisefix_data(monkeypatch) -> Path:
    """Point $NOISEFIX_DATA at the shared data folder (MNIST IDX files in mnist/); skip when it is absent."""
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST files not found under {SHARED_DATA}")
    monkeypatch.setenv("NOISEFIX_DATA", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture
def tiny_run(make_image_folder, tmp_path):
    """A reopened 3-epoch MLP run (Adam) on 3 digit classes x 15 training images, 20 % of them held out."""
    from noisefix.config import TrainConfig
    from noisefix.stages.runs import open_run
    from noisefix.stages.train import run_train

    data = make_image_folder(train_per_class=15)
    out = tmp_path / "run"
    run_train(data, TrainConfig.for_model("mlp", optimizer="adam", lr=1e-3, epochs=3, batch_size=8, holdout=0.2),
              out=out)
    return open_run(out)
