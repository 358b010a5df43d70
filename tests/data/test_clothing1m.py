"""Clothing1M as it ships: the list files read in place, the splits, the known clean labels, one-line errors."""

import numpy as np
import pytest

from noisefix.data.clothing1m import load_clothing1m
from noisefix.data.folders import load_data
from noisefix.data.labels_file import write_labels_file
from noisefix.errors import ConfigError, DataError


def _kv(path):
    return dict(line.split() for line in path.read_text().splitlines())


def test_splits_classes_and_known_clean(clothing1m):
    splits = load_data(clothing1m)
    train, test = splits.train, splits.test
    names = (clothing1m / "category_names_eng.txt").read_text().splitlines()
    assert train.classes == names and test.classes == names and "Down Coat" in names
    keys = (clothing1m / "noisy_train_key_list.txt").read_text().split()
    test_keys = (clothing1m / "clean_test_key_list.txt").read_text().split()
    assert train.paths == sorted(set(keys) - set(test_keys)) and len(train) == 36
    assert test.paths == sorted(test_keys)
    noisy, clean = _kv(clothing1m / "noisy_label_kv.txt"), _kv(clothing1m / "clean_label_kv.txt")
    assert train.targets.tolist() == [int(noisy[p]) for p in train.paths]
    assert test.targets.tolist() == [int(clean[p]) for p in test.paths]
    assert train.known_clean.tolist() == [int(clean.get(p, -1)) for p in train.paths]
    assert (train.known_clean >= 0).sum() == 18 and train.clean_targets is None
    assert splits.labels_format == "csv"  # class names hold spaces
    assert len(splits.warnings) == 1 and "1 images of clean_test_key_list.txt left out" in splits.warnings[0]
    files = {p.relative_to(clothing1m).as_posix() for p in (clothing1m / "images").rglob("*.jpg")}
    assert len(files - set(train.paths) - set(test.paths)) == 4  # clean val/train and two in no list


def test_labels_file_replaces_the_training_rows(clothing1m, tmp_path):
    train = load_data(clothing1m).train
    labels = tmp_path / "cleaned.csv"
    write_labels_file(labels, paths=train.paths[:30], labels=np.zeros(30, dtype=np.int64) + (np.arange(30) % 2),
                      classes=train.classes, fmt="csv")
    splits = load_data(clothing1m, labels)
    assert splits.train.paths == train.paths[:30] and splits.train.classes == train.classes
    assert splits.train.known_clean.tolist() == train.known_clean[:30].tolist() and len(splits.test) == 8
    leak = tmp_path / "leak.csv"
    leak.write_text(f"path,label\n{splits.test.paths[0]},Shirt\n{train.paths[0]},T-Shirt\n")
    with pytest.raises(DataError, match="is in clean_test_key_list.txt"):
        load_data(clothing1m, leak)


def test_classes_file_is_refused(clothing1m, tmp_path):
    with pytest.raises(ConfigError, match="category_names_eng.txt; drop --classes"):
        load_clothing1m(clothing1m, classes_file=tmp_path / "c.txt")


@pytest.mark.parametrize("name, content", [
    ("noisy_train_key_list.txt", "one image path per line"), ("clean_test_key_list.txt", "one image path per line"),
    ("noisy_label_kv.txt", "'path label' lines"), ("clean_label_kv.txt", "'path label' lines"),
    ("category_names_eng.txt", "the 14 class names"),
])
def test_missing_file_named_with_its_content(clothing1m, name, content):
    (clothing1m / name).unlink()  # without the names file the folder is still recognised by noisy_label_kv.txt
    with pytest.raises(DataError) as err:
        load_data(clothing1m)
    assert "\n" not in str(err.value) and f"{clothing1m / name} not found; it should hold {content}" in str(err.value)


@pytest.mark.parametrize("name, text, match", [
    ("noisy_label_kv.txt", "images/0/00/1000.jpg\n", r"noisy_label_kv.txt:1: expected 'path label' lines"),
    ("noisy_label_kv.txt", "images/0/00/1000.jpg 14\n", r"in \[0, 14\), got"),
    ("clean_label_kv.txt", "images/0/00/1000.jpg 1\nimages/0/00/1000.jpg 2\n", r"clean_label_kv.txt:2: .* twice"),
    ("noisy_train_key_list.txt", "images/0/00/1000.jpg 1\n", r"noisy_train_key_list.txt:1: expected one image path"),
    ("noisy_train_key_list.txt", "images/9/99/9.jpg\n", r"noisy_train_key_list.txt:1: 'images/9/99/9.jpg' has no "
                                                          r"label in .*noisy_label_kv.txt"),
    ("clean_test_key_list.txt", "\n\n", r"clean_test_key_list.txt is empty; it should hold one image path"),
    ("category_names_eng.txt", "T-Shirt\n", r"lists 1 class"),
])
def test_bad_list_files_give_one_line_errors(clothing1m, name, text, match):
    (clothing1m / name).write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_data(clothing1m)
    assert "\n" not in str(err.value)


def test_listed_image_missing_on_disk(clothing1m):
    (clothing1m / "images/0/00/1000.jpg").unlink()
    with pytest.raises(DataError, match=r"noisy_train_key_list.txt:1: image 'images/0/00/1000.jpg' not found"):
        load_data(clothing1m)
