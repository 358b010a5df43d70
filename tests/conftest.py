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


MIXED_CLASSES = ("bird", "cat", "dog")
MIXED_KINDS = ("rgb.jpg", "gray.png", "gray16.png", "rgba.png", "palette.png", "cmyk.jpg", "exif.jpg", "la.png")


def write_mixed_image(path: Path, kind: str, size: tuple[int, int], tint: tuple[int, int, int], rng) -> None:
    """One image of `kind` (see MIXED_KINDS), `size` = (W, H) as stored, coloured by `tint` plus noise."""
    w, h = size
    rgb = np.clip(np.asarray(tint, np.int64) + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    if kind == "rgb.jpg":
        img.save(path, quality=90)
    elif kind == "gray.png":
        img.convert("L").save(path)
    elif kind == "gray16.png":
        Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257).save(path)  # 16-bit grayscale PNG
    elif kind == "rgba.png":
        rgba = img.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.full((h, w), 255, np.uint8)))
        rgba.save(path)
    elif kind == "palette.png":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path)
    elif kind == "cmyk.jpg":
        img.convert("CMYK").save(path, quality=90)
    elif kind == "exif.jpg":  # stored rotated, with the EXIF orientation that turns it back
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=90)
    elif kind == "la.png":
        img.convert("LA").save(path)


def make_mixed_folder(root: Path, *, train_per_class: int = 8, test_per_class: int = 3, seed: int = 0) -> Path:
    """DATA/{train,test}/{bird,cat,dog}/ of JPEG and PNG images of 24-48 px sides in every mode of MIXED_KINDS
    (EXIF-rotated, 16-bit, RGBA, palette, CMYK included); each class has its own tint."""
    rng = np.random.default_rng(seed)
    tints = {"bird": (200, 60, 60), "cat": (60, 200, 60), "dog": (60, 60, 200)}
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in MIXED_CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True)
            for j in range(n):
                kind = MIXED_KINDS[j % len(MIXED_KINDS)]
                size = (int(rng.integers(24, 49)), int(rng.integers(24, 49)))
                write_mixed_image(folder / f"{j:03d}-{kind}", kind, size, tints[c], rng)
    return root


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Split layout, classes bird/cat/dog, 8 train + 3 test images each, of mixed sizes, modes and formats."""
    return make_mixed_folder(tmp_path / "mixed")


@pytest.fixture
def write_image():
    """The writer of one image of a kind in MIXED_KINDS: write_image(path, kind, (W, H), tint, rng)."""
    return write_mixed_image


CLOTHING1M_NAMES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
                    "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear")


def make_clothing1m(root: Path) -> Path:
    """A miniature Clothing1M as it ships: 48 JPEGs of digits 0..2 (classes T-Shirt, Shirt, Knitwear), mixed
    sizes, under images/<a>/<bb>/<id>.jpg, and every list file. Images 0..35 are the noisy training list (every
    sixth noisy label is wrong) plus image 36 of the clean test list (as a leak to drop); 0..17 also have a clean
    label; 36..43 are the clean test list, 44 clean val, 45 clean train; 46, 47 are in no list."""
    x, y = _digits()
    picks = np.concatenate([np.flatnonzero(y == c)[:16] for c in range(3)])
    picks = picks[np.random.default_rng(0).permutation(len(picks))]
    rels = []
    for i, j in enumerate(picks):
        rel = f"images/{i % 3}/{i % 10:02d}/{1000 + i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        size = ((24, 20), (32, 32), (20, 28))[i % 3]
        Image.fromarray(x[j]).convert("RGB").resize(size).save(root / rel, quality=95)
        rels.append(rel)
    true = y[picks]
    noisy = np.where(np.arange(len(picks)) % 6 == 0, (true + 1) % 3, true)

    def write(name, idx, labels=None):
        lines = [rels[i] if labels is None else f"{rels[i]} {labels[i]}" for i in idx]
        (root / name).write_text("".join(f"{line}\n" for line in lines))

    write("noisy_label_kv.txt", list(range(37)) + [44, 45], noisy)
    write("clean_label_kv.txt", list(range(18)) + list(range(36, 46)), true)
    write("noisy_train_key_list.txt", range(37))
    write("clean_test_key_list.txt", range(36, 44))
    write("clean_val_key_list.txt", [44])
    write("clean_train_key_list.txt", [45])
    (root / "category_names_eng.txt").write_text("\n".join(CLOTHING1M_NAMES) + "\n")
    return root


@pytest.fixture
def clothing1m(tmp_path) -> Path:
    """A miniature Clothing1M folder (see make_clothing1m)."""
    return make_clothing1m(tmp_path / "clothing1m")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path, with downloads failing as they do without internet."""
    import torch

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(url, dst, *args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    yield tmp_path / "hub"
    torch.hub.set_dir(old)
