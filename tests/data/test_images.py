import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from noisefix.data import images
from noisefix.data.folders import load_data
from noisefix.data.images import ImageSource, check_skip_fraction, infer_spec, scan_images
from noisefix.data.transforms import ImageSpec, decode_pixels, fit_to, load_image, parse_channels, parse_size
from noisefix.errors import ConfigError, DataError


@pytest.fixture
def no_hang():
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("timed out: a FIFO was opened"))
    signal.alarm(20)
    yield
    signal.alarm(0)


def test_mixed_folder_loads_and_batches(mixed_folder):
    splits = load_data(mixed_folder)
    assert splits.train.classes == ["bird", "cat", "dog"] and len(splits.train) == 24
    assert scan_images(splits.train) == [] and scan_images(splits.test) == []
    spec = infer_spec(splits.train)
    assert spec.channels == 3 and spec.normalization == "dataset" and 24 <= min(spec.size) <= max(spec.size) <= 48
    src = ImageSource(splits.train, spec)
    x, idx = next(src.batches(24))
    assert x.dtype == torch.uint8 and x.shape == (24, 3, *spec.size) and idx.tolist() == list(range(24))
    f = src.to_input(x)
    assert f.dtype == torch.float32 and abs(float(f.mean())) < 0.3  # normalized by the sampled statistics
    means = [x[splits.train.targets == c].float().mean((0, 2, 3)) for c in range(3)]
    for c, m in enumerate(means):  # bird is red, cat green, dog blue (gray images dilute but keep the order)
        assert int(m.argmax()) == c, (c, m)
    test = ImageSource(splits.test, spec)  # the test split follows the training split's spec
    assert next(test.batches(9))[0].shape == (9, 3, *spec.size)


@pytest.mark.parametrize("kind", ["gray.png", "gray16.png", "la.png", "palette.png"])
def test_grayscale_kinds_decode_to_one_channel(tmp_path, write_image, kind):
    path = tmp_path / kind
    write_image(path, kind, (30, 20), (128, 128, 128), np.random.default_rng(0))
    arr = decode_pixels(path)
    if kind == "palette.png":  # an adaptive palette of a gray image is gray: one channel
        assert arr.shape in ((20, 30), (20, 30, 3))
    else:
        assert arr.shape == (20, 30) and arr.dtype == np.uint8
    assert decode_pixels(path, 3).shape == (20, 30, 3)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode.startswith("I;16")
    assert decode_pixels(tmp_path / "a.png").tolist() == [[0, 1, 128, 255]]


def test_alpha_is_composited_on_white_and_cmyk_becomes_rgb(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = decode_pixels(tmp_path / "a.png")
    assert arr[0, 0].tolist() == [200, 0, 0] and arr[3, 0].tolist() == [255, 255, 255]
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # pure red in CMYK
    red = decode_pixels(tmp_path / "c.jpg")
    assert red.shape == (5, 5, 3) and red[2, 2, 0] > 200 and red[2, 2, 1:].max() < 60


def test_exif_orientation_is_applied(tmp_path):
    shown = np.zeros((10, 20, 3), np.uint8)  # 20 wide, 10 high; red in the top-left corner
    shown[:3, :3, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "r.png", exif=exif)
    with Image.open(tmp_path / "r.png") as img:
        assert img.size == (10, 20)  # stored upright-rotated
    arr = decode_pixels(tmp_path / "r.png")
    assert arr.shape == (10, 20, 3) and arr[0, 0, 0] == 255 and arr[-1, -1, 0] == 0


def test_resize_covers_then_crops_the_centre():
    t = torch.zeros(1, 20, 40, dtype=torch.uint8)
    t[:, :, 10:30] = 255  # a white centre band between black sides
    out = fit_to(t, (10, 10))
    assert out.shape == (1, 10, 10) and out.float().mean() > 240  # 20x40 -> 10x20 -> its centre 10x10
    assert fit_to(t, (20, 40)) is t  # the right size is left untouched
    assert fit_to(torch.zeros(3, 7, 5, dtype=torch.uint8), (16, 16)).shape == (3, 16, 16)


def test_uniform_folder_keeps_its_pixels(tiny_folder):
    split = load_data(tiny_folder).train
    spec = infer_spec(split, normalize=False)
    assert spec == ImageSpec(size=(8, 8), channels=1)
    x, _ = next(ImageSource(split, spec).batches(30))
    for i in (0, 17):
        np.testing.assert_array_equal(x[i, 0].numpy(), np.asarray(Image.open(tiny_folder / split.paths[i])))
    assert torch.equal(spec.to_input(x), x.float() / 255)  # no normalization: raw [0, 1] pixels


def test_a_changed_file_decodes_anew_except_inside_files_unchanged(tiny_folder, monkeypatch):
    split = load_data(tiny_folder).train
    spec = infer_spec(split, normalize=False)
    first = tiny_folder / split.paths[0]
    before = next(ImageSource(split, spec).batches(1))[0][0, 0].clone()
    Image.fromarray(255 - before.numpy()).save(first)             # same size, new pixels and mtime
    os.utime(first, ns=(os.stat(first).st_atime_ns, os.stat(first).st_mtime_ns + 10**9))
    after = next(ImageSource(split, spec).batches(1))[0][0, 0]
    assert torch.equal(after, 255 - before)                        # outside: the file is stat'ed again
    stats = []
    monkeypatch.setattr(images, "_files_key", lambda s, _key=images._files_key: stats.append(1) or _key(s))
    with images.files_unchanged():
        ImageSource(split, spec), ImageSource(load_data(tiny_folder).train, spec)  # a fresh load, same paths
        with images.files_unchanged():                             # nested: the same session
            ImageSource(split, spec)
    assert len(stats) == 1 and images._UNCHANGED is None
    ImageSource(split, spec)
    assert len(stats) == 2


def test_spec_choices(tiny_folder):
    split = load_data(tiny_folder).train
    spec = infer_spec(split, size=16, channels=3)
    assert spec.shape == (3, 16, 16) and spec.normalization == "dataset" and len(spec.mean) == 3
    assert spec.mean[0] == spec.mean[1] == spec.mean[2]  # grayscale repeated into 3 channels
    x, _ = next(ImageSource(split, spec).batches(4))
    assert x.shape == (4, 3, 16, 16) and torch.equal(x[:, 0], x[:, 2])
    pretrained = infer_spec(split, default_size=(32, 32), channels=3, mean=(0.485, 0.456, 0.406),
                            std=(0.229, 0.224, 0.225))
    assert pretrained.size == (32, 32) and pretrained.normalization == "weights"
    assert ImageSpec.from_dict(pretrained.to_dict()) == pretrained
    assert ImageSpec.from_in_shape((1, 28, 28)) == ImageSpec(size=(28, 28), channels=1)
    assert parse_size("224") == (224, 224) and parse_size("32x48") == (32, 48) and parse_size(None) is None
    assert parse_channels("auto") is None and parse_channels(3) == 3
    with pytest.raises(ConfigError, match="image size"):
        parse_size("0")
    with pytest.raises(ConfigError, match="channels must be auto, 1 or 3"):
        parse_channels("2")


def test_dataset_statistics_normalize_the_input(tiny_folder):
    split = load_data(tiny_folder).train
    spec = infer_spec(split)
    x, _ = next(ImageSource(split, spec).batches(30))
    f = spec.to_input(x)
    assert abs(float(f.mean())) < 1e-3 and abs(float(f.std()) - 1) < 0.02


def test_streaming_through_workers_equals_the_cache(tiny_folder, monkeypatch):
    monkeypatch.setattr(images, "MIN_WORKER_PASS", 0)  # use the worker processes even for 30 images
    split = load_data(tiny_folder).train
    cached, streamed = ImageSource(split), ImageSource(split, max_memory_bytes=0, workers=2)
    assert cached.in_memory and not streamed.in_memory
    for (xa, ia), (xb, ib) in zip(cached.batches(7, shuffle=True, seed=1), streamed.batches(7, shuffle=True, seed=1)):
        assert torch.equal(xa, xb) and torch.equal(ia, ib)
    (tiny_folder / split.paths[4]).write_bytes(b"broken")
    with pytest.raises(DataError, match=r"cannot read image train/0/004.png") as err:
        list(streamed.batches(8))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="workers"):
        ImageSource(split, workers=-1)


def test_fifo_is_bad_not_a_hang(tiny_flat_folder, tmp_path, no_hang):
    os.mkfifo(tiny_flat_folder / "1" / "x.png")
    split = load_data(tiny_flat_folder).train
    assert "1/x.png" in split.paths
    assert scan_images(split) == [("1/x.png", "not a regular file (FIFO)")]
    with pytest.raises(DataError, match=r"1/x.png \(not a regular file"):
        ImageSource(split)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n0/000.png,0\n1/x.png,1\n")
    with pytest.raises(DataError, match="not a regular file"):
        load_data(tiny_flat_folder, labels)


def test_majority_size_is_the_reference(tiny_flat_folder):
    Image.new("L", (9, 9)).save(tiny_flat_folder / "0" / "!first.png")  # sorts first
    split = load_data(tiny_flat_folder).train
    assert split.paths[0] == "0/!first.png"
    assert scan_images(split, same_size=True) == [("0/!first.png", "size 9x9 differs from the usual 8x8")]
    assert scan_images(split) == []
    assert infer_spec(split, normalize=False).size == (8, 8)


def test_skipping_too_many_is_refused():
    check_skip_fraction(10, 100)
    with pytest.raises(DataError, match=r"11 of 100 images \(11%\) are bad, over the 10%"):
        check_skip_fraction(11, 100)


def test_load_image_follows_the_spec(tmp_path, write_image):
    write_image(tmp_path / "a.jpg", "exif.jpg", (40, 30), (10, 200, 10), np.random.default_rng(1))
    x = load_image(tmp_path / "a.jpg", ImageSpec(size=(24, 24), channels=1))
    assert x.shape == (1, 24, 24) and x.dtype == torch.uint8
