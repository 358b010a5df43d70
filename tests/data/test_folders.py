"""Tests for noisefix.data: layouts, labels files, errors, fingerprints and batched image access."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from noisefix.data.folders import fingerprint, load_data
from noisefix.data.images import ImageSource, scan_images, to_float
from noisefix.errors import ConfigError, DataError


def _snapshot(root):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- layouts


def test_split_layout(tiny_folder):
    before = _snapshot(tiny_folder)
    splits = load_data(tiny_folder)
    train, test = splits.train, splits.test
    assert splits.labels_format is None
    assert train.classes == ["0", "1", "2"] and train.class_to_idx == {"0": 0, "1": 1, "2": 2}
    assert len(train) == 30 and len(test) == 12
    assert train.paths == sorted(train.paths) and train.paths[0] == "train/0/000.png"
    assert test.paths[-1] == "test/2/003.png"
    assert train.targets.dtype == np.int64
    np.testing.assert_array_equal(train.targets, np.repeat([0, 1, 2], 10))
    np.testing.assert_array_equal(test.targets, np.repeat([0, 1, 2], 4))
    assert train.clean_targets is None
    assert train.root == tiny_folder.resolve()
    assert _snapshot(tiny_folder) == before  # loading never touches the data


def test_val_folder_is_the_test_split(make_image_folder):
    splits = load_data(make_image_folder(test_dir="val"))
    assert splits.test.paths[0] == "val/0/000.png" and len(splits.test) == 12


def test_flat_layout_and_extensions(tiny_flat_folder):
    Image.open(tiny_flat_folder / "1" / "000.png").save(tiny_flat_folder / "1" / "extra.JPEG")
    (tiny_flat_folder / "1" / "notes.txt").write_text("not an image")
    (tiny_flat_folder / "1" / ".hidden.png").write_bytes(b"junk")
    splits = load_data(tiny_flat_folder)
    assert splits.test is None
    assert len(splits.train) == 31 and "1/extra.JPEG" in splits.train.paths
    assert splits.train.paths[0] == "0/000.png"


def test_test_classes_are_aligned_by_name(make_image_folder):
    """Integer labels give classes "0".."10" in numeric order; the test folders sort as "0", "1", "10", ..."""
    root = make_image_folder(num_classes=10, train_per_class=1, test_per_class=1)
    shutil.copytree(root / "test" / "9", root / "test" / "10")
    (root / "train" / "all").mkdir()
    for c in range(10):
        (root / "train" / str(c) / "000.png").rename(root / "train" / "all" / f"{c}.png")
        (root / "train" / str(c)).rmdir()
    rows = [f"train/all/{c}.png,{c}" for c in range(9)] + ["train/all/9.png,10"]
    labels = _write(root.parent / "l.csv", "path,label\n" + "\n".join(rows) + "\n")
    splits = load_data(root, labels)
    assert splits.train.classes == [str(i) for i in range(11)]
    assert splits.train.targets[splits.train.paths.index("train/all/9.png")] == 10
    test = splits.test
    assert test.classes == splits.train.classes
    for path, target in zip(test.paths, test.targets):
        assert path.split("/")[1] == test.classes[target]
    assert test.targets[test.paths.index("test/10/000.png")] == 10


# ---------------------------------------------------------------- labels files


def test_csv_with_names_overrides_and_defines_the_training_set(tiny_folder):
    labels = _write(
        tiny_folder / "noisy.csv",
        "path,label,clean_label\ntrain/2/001.png,0,2\ntrain/0/000.png,1,0\n./train/1/005.png,1,1\n",
    )
    splits = load_data(tiny_folder, labels)
    t = splits.train
    assert splits.labels_format == "csv"
    assert t.paths == ["train/0/000.png", "train/1/005.png", "train/2/001.png"]
    np.testing.assert_array_equal(t.targets, [1, 1, 0])
    np.testing.assert_array_equal(t.clean_targets, [0, 1, 2])
    assert len(splits.test) == 12


def test_csv_with_indices_and_named_class_folders(make_image_folder):
    root = make_image_folder(layout="flat")
    for c, name in enumerate(["cat", "dog", "emu"]):
        (root / str(c)).rename(root / name)
    labels = _write(root / "l.csv", "path,label\ncat/000.png,2\ndog/001.png,dog\nemu/002.png,0\n")
    t = load_data(root, labels).train
    assert t.classes == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(t.targets, [2, 1, 0])


def test_lines_format_without_class_folders(tmp_path, tiny_flat_folder):
    """Clothing1M style: images under one folder that is not a class, integer labels in 'path label' lines."""
    root = tmp_path / "c1m"
    shutil.copytree(tiny_flat_folder / "0", root / "images" / "a")
    labels = _write(tmp_path / "noisy_label_kv.txt", "images/a/000.png 3\n\nimages/a/001.png   0\n")
    splits = load_data(root, labels)
    assert splits.labels_format == "lines" and splits.test is None
    assert splits.train.classes == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(splits.train.targets, [3, 0])


def test_classes_from_label_names(tmp_path, tiny_flat_folder):
    shutil.copytree(tiny_flat_folder / "0", tmp_path / "d" / "imgs" / "0")
    labels = _write(tmp_path / "l.csv", "path,label\nimgs/0/000.png,zebra\nimgs/0/001.png,ant\n")
    t = load_data(tmp_path / "d", labels).train
    assert t.classes == ["ant", "zebra"]
    np.testing.assert_array_equal(t.targets, [1, 0])


# ---------------------------------------------------------------- bad labels files


@pytest.mark.parametrize(
    "content, match",
    [
        ("path,label\ntrain/0/000.png,0\ntrain/0/000.png,1\n", r"l\.csv:3: duplicate path .* line 2"),
        ("path,label\ntrain/0/999.png,0\n", r"l\.csv:2: image 'train/0/999.png' not found"),
        ("path,label\n../data/train/0/000.png,0\n", "leaves the data folder"),
        ("path,label\n/etc/hostname,0\n", "absolute path '/etc/hostname'"),
        ("path,label\nC:/data/x.png,0\n", "absolute path 'C:/data/x.png'"),
        ("path,label\nd:x.png,0\n", "absolute path 'd:x.png'"),
        ("path,label\n./,0\n", r"l\.csv:2: empty path"),
        ("path,label\ntrain/0/000.png,horse\n", r"l\.csv:2: unknown class 'horse'.*\[0, 3\)"),
        ("path,label\ntrain/0/000.png,3\n", "unknown class '3'"),
        ("path,label,clean_label\ntrain/0/000.png,0,1\ntrain/0/001.png,0,\n", r"l\.csv:3: clean_label is missing"),
        ("", "is empty"),
        ("\n  \n", "is empty"),
        ("path,label\n", "no rows"),
        ("train/0/000.png,0\n", "needs the header"),
        ("path,labels\ntrain/0/000.png,0\n", "header 'path,labels'"),
        ("path,label\ntrain/0/000.png,0,1\n", r"l\.csv:2: 3 fields"),
        ("path,label\ntest/0/000.png,0\n", "in the test split"),
        ("train/0/000.png\n", r"l\.csv:1: expected 'path label'"),
    ],
)
def test_bad_labels_file(tiny_folder, content, match):
    labels = _write(tiny_folder.parent / "l.csv", content)
    with pytest.raises(DataError, match=match):
        load_data(tiny_folder, labels)


def test_labels_file_missing_and_not_utf8(tiny_folder):
    with pytest.raises(DataError, match="labels file .*nope.csv not found"):
        load_data(tiny_folder, tiny_folder / "nope.csv")
    bad = tiny_folder.parent / "latin1.csv"
    bad.write_bytes("path,label\ntrain/0/000.png,0\ntrain/0/caf\xe9.png,0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv:3: not valid UTF-8"):
        load_data(tiny_folder, bad)


def test_labels_file_symlink_out_of_root(tiny_folder, tmp_path):
    outside = tmp_path / "outside.png"
    shutil.copy(tiny_folder / "train" / "0" / "000.png", outside)
    (tiny_folder / "train" / "0" / "link.png").symlink_to(outside)
    labels = _write(tmp_path / "l.csv", "path,label\ntrain/0/link.png,0\n")
    with pytest.raises(DataError, match="symlink .*outside"):
        load_data(tiny_folder, labels)


# ---------------------------------------------------------------- bad folders


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder .*missing not found"):
        load_data(tmp_path / "missing")


def test_no_images(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        load_data(tmp_path / "d")


def test_empty_class_folder(tiny_folder):
    (tiny_folder / "train" / "9").mkdir()
    with pytest.raises(DataError, match="class folder .*9 has no images"):
        load_data(tiny_folder)


def test_single_class(make_image_folder):
    with pytest.raises(DataError, match="at least 2"):
        load_data(make_image_folder(layout="flat", num_classes=1))


def test_test_classes_differ(tiny_folder):
    shutil.rmtree(tiny_folder / "test" / "2")
    with pytest.raises(DataError, match=r"test classes differ .*only in train: \['2'\]"):
        load_data(tiny_folder)


def test_symlinked_folder_out_of_root(tiny_folder, tmp_path):
    shutil.copytree(tiny_folder / "train" / "1", tmp_path / "elsewhere")
    (tiny_folder / "train" / "3").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="outside"):
        load_data(tiny_folder)


def test_symlinks_inside_root_are_followed(tiny_folder):
    os.symlink(tiny_folder / "train" / "0" / "000.png", tiny_folder / "train" / "1" / "alias.png")
    assert "train/1/alias.png" in load_data(tiny_folder).train.paths


def test_undecodable_and_mis_sized_images(tiny_flat_folder):
    (tiny_flat_folder / "2" / "broken.png").write_bytes(b"not a png")
    src = ImageSource(load_data(tiny_flat_folder).train, max_memory_bytes=0)  # lazy: fails when read
    with pytest.raises(DataError, match=r"cannot read image 2/broken.png \(cannot decode"):
        list(src.batches(8))
    with pytest.raises(DataError, match=r"cannot read image 2/broken.png \(cannot decode"):
        ImageSource(load_data(tiny_flat_folder).train)
    (tiny_flat_folder / "2" / "broken.png").unlink()
    Image.new("L", (9, 8)).save(tiny_flat_folder / "2" / "wide.png")  # another size: resized, not refused
    split = load_data(tiny_flat_folder).train
    assert ImageSource(split).shape == (1, 8, 8) and scan_images(split) == []
    assert scan_images(split, same_size=True) == [("2/wide.png", "size 9x8 differs from the usual 8x8")]


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_sensitive(tiny_folder):
    fp = fingerprint(load_data(tiny_folder))
    assert fp == fingerprint(load_data(tiny_folder)) and len(fp) == 64
    labels = _write(tiny_folder.parent / "l.csv", "path,label\ntrain/0/000.png,0\ntrain/1/000.png,1\n")
    relabeled = _write(tiny_folder.parent / "m.csv", "path,label\ntrain/0/000.png,2\ntrain/1/000.png,1\n")
    assert fingerprint(load_data(tiny_folder, labels)) != fingerprint(load_data(tiny_folder, relabeled))
    Image.new("L", (8, 8), 255).save(tiny_folder / "test" / "0" / "000.png")  # different size on disk
    assert fingerprint(load_data(tiny_folder)) != fp


# ---------------------------------------------------------------- ImageSource


def test_image_source_pixels_and_batches(tiny_folder):
    split = load_data(tiny_folder).train
    src = ImageSource(split)
    assert src.in_memory and src.shape == (1, 8, 8) and len(src) == 30
    x, idx = next(src.batches(7))
    assert x.dtype == torch.uint8 and x.shape == (7, 1, 8, 8)
    assert idx.dtype == torch.int64 and idx.tolist() == list(range(7))
    expected = np.asarray(Image.open(tiny_folder / split.paths[3]))
    np.testing.assert_array_equal(x[3, 0].numpy(), expected)
    sizes = [len(b) for b, _ in src.batches(7)]
    assert sizes == [7, 7, 7, 7, 2]
    subset = [i for _, i in src.batches(4, indices=[5, 1, 29])]
    assert torch.cat(subset).tolist() == [5, 1, 29]
    f = to_float(x)
    assert f.dtype == torch.float32 and f.shape == x.shape and 0.0 <= f.min() and f.max() <= 1.0
    assert torch.equal(f * 255, x.float())


def test_in_memory_and_lazy_give_identical_batches(tiny_folder):
    split = load_data(tiny_folder).train
    eager, lazy = ImageSource(split), ImageSource(split, max_memory_bytes=0, workers=2)
    assert eager.in_memory and not lazy.in_memory
    a = list(eager.batches(8, shuffle=True, seed=3))
    b = list(lazy.batches(8, shuffle=True, seed=3))
    c = list(eager.batches(8, shuffle=True, seed=4))
    assert len(a) == len(b) == 4
    for (xa, ia), (xb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ia, ib)
    assert sorted(torch.cat([i for _, i in a]).tolist()) == list(range(30))
    assert not torch.equal(torch.cat([i for _, i in a]), torch.cat([i for _, i in c]))


def test_rgb_images_give_three_channels(make_image_folder):
    src = ImageSource(load_data(make_image_folder(rgb=True)).test)
    x, _ = next(src.batches(12))
    assert src.shape == (3, 8, 8) and x.shape == (12, 3, 8, 8)
    assert torch.equal(x[:, 0], x[:, 2])


def test_bad_batch_requests(tiny_folder):
    src = ImageSource(load_data(tiny_folder).test)
    with pytest.raises(ConfigError, match="batch_size=0"):
        next(src.batches(0))
    with pytest.raises(ConfigError, match="indices"):
        next(src.batches(4, indices=[0, 12]))


# ---------------------------------------------------------------- classes file and index labels


def _named_folder(tiny_folder):
    """Rename the class folders 0/1/2 to zero/one/two (sorted: one, two, zero)."""
    for split in ("train", "test"):
        for old, new in (("0", "zero"), ("1", "one"), ("2", "two")):
            (tiny_folder / split / old).rename(tiny_folder / split / new)
    return tiny_folder


def _index_labels(root, noise=0):
    """A 'path label' file labelling each training image with its folder's digit (zero=0, one=1, two=2)."""
    digit = {"zero": 0, "one": 1, "two": 2}
    rows = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.png"))
    lines = [f"{r} {(digit[r.split('/')[1]] + (1 if i < noise else 0)) % 3}" for i, r in enumerate(rows)]
    return _write(root.parent / "labels.txt", "\n".join(lines) + "\n")


def test_index_labels_against_sorted_folders_warn(tiny_folder):
    data = _named_folder(tiny_folder)
    splits = load_data(data, _index_labels(data))
    assert splits.train.classes == ["one", "two", "zero"]  # indices read as positions in the sorted names
    assert len(splits.warnings) == 1
    text = splits.warnings[0]
    assert "contradict the class folders" in text and "--classes FILE" in text and "\n" not in text


def test_classes_file_gives_the_index_order(tiny_folder):
    data = _named_folder(tiny_folder)
    classes = _write(data.parent / "classes.txt", "zero\none\n\ntwo\n")
    splits = load_data(data, _index_labels(data, noise=5), classes_file=classes)
    assert splits.train.classes == ["zero", "one", "two"] and splits.warnings == []
    folder = np.array([p.split("/")[1] for p in splits.train.paths])
    named = np.array(splits.train.classes)[splits.train.targets]
    assert (named != folder).sum() == 5  # the 5 noisy labels, nothing else
    assert splits.test.classes == ["zero", "one", "two"]
    assert (np.array(splits.test.classes)[splits.test.targets] == [p.split("/")[1] for p in splits.test.paths]).all()
    folders_only = load_data(data, classes_file=classes)  # class folders mapped onto the file's order
    assert folders_only.train.classes == ["zero", "one", "two"]
    assert (np.array(folders_only.train.classes)[folders_only.train.targets] ==
            [p.split("/")[1] for p in folders_only.train.paths]).all()


def test_noisy_index_labels_in_the_right_order_do_not_warn(make_image_folder):
    data = make_image_folder()  # folders 0/1/2: labels "0".."2" are class names, never indices
    for split in ("train", "test"):
        for old, new in (("0", "a"), ("1", "b"), ("2", "c")):
            (data / split / old).rename(data / split / new)
    rows = sorted(p.relative_to(data).as_posix() for p in (data / "train").rglob("*.png"))
    index = {"a": 0, "b": 1, "c": 2}
    labels = _write(data.parent / "l.txt", "".join(f"{r} {(index[r.split('/')[1]] + (i % 3 == 0)) % 3}\n"
                                                     for i, r in enumerate(rows)))  # a third of them wrong
    assert load_data(data, labels).warnings == []


@pytest.mark.parametrize("content, match", [
    ("a\na\nb\n", "listed twice"),
    ("only\n", "at least 2"),
])
def test_bad_classes_file(tiny_folder, content, match):
    with pytest.raises(DataError, match=match):
        load_data(tiny_folder, classes_file=_write(tiny_folder.parent / "c.txt", content))


def test_classes_file_must_name_the_folders(tiny_folder):
    with pytest.raises(DataError, match=r"folder classes differ .*only in the classes file: \['9'\]"):
        load_data(tiny_folder, classes_file=_write(tiny_folder.parent / "c.txt", "0\n1\n2\n9\n"))
    with pytest.raises(DataError, match="classes file .* not found"):
        load_data(tiny_folder, classes_file=tiny_folder.parent / "nope.txt")
