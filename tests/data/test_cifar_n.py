"""CIFAR-N label files as they ship (a torch.save'd dict of numpy arrays) beside a miniature CIFAR-10 root."""

import csv
import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from typer.testing import CliRunner

from noisefix.cli import app
from noisefix.data.builtin import export_dataset, load_builtin
from noisefix.data.cifar_n import read_cifar_n
from noisefix.errors import ConfigError, DataError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """torchvision's cifar-10-batches-py with 5 x 6 training and 10 test images (pickles shaped like the real
    ones; their checksums are not the real ones', so torchvision's check is bypassed)."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name, n, offset):
        entry = {"batch_label": name, "labels": [(offset + i) % 10 for i in range(n)],
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry))

    for b in range(5):
        batch(f"data_batch_{b + 1}", 6, 6 * b)
    batch("test_batch", 10, 0)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": NAMES, "num_cases_per_batch": 6}))
    return tmp_path / "cifar"


def _human_file(path, clean, **extra):
    torch.save({"clean_label": np.asarray(clean), **extra}, path)
    return path


def test_human_labels_exported_beside_the_cifar_labels(cifar_root, tmp_path):
    ds = load_builtin("cifar10", data_root=cifar_root, download=False)
    assert ds.x_train.shape == (30, 32, 32, 3)
    worse = (ds.y_train + (np.arange(30) % 3 == 0)) % 10
    labels = _human_file(tmp_path / "CIFAR-10_human.pt", ds.y_train, worse_label=worse, aggre_label=ds.y_train,
                         random_label1=ds.y_train, random_label2=ds.y_train, random_label3=ds.y_train)
    assert read_cifar_n(labels, "cifar10", ds.y_train, 10).tolist() == worse.tolist()  # default: worse
    result = CliRunner().invoke(app, ["data", "export", "cifar10", str(tmp_path / "out"), "--data-root",
                                      str(cifar_root), "--cifar-n", str(labels)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "noisy_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    index = {int(r["path"].rsplit("/", 1)[1][:-4]): r for r in rows}  # NNNNN.png: the source index
    assert len(rows) == 30 and all(index[i]["label"] == ds.classes[worse[i]] for i in range(30))
    assert all(index[i]["clean_label"] == ds.classes[ds.y_train[i]] for i in range(30))
    with pytest.raises(ConfigError, match="either a corruption rate or the noisy labels"):
        export_dataset(ds, tmp_path / "both", corrupt=0.2, noisy_labels=worse)


def test_bad_label_files(cifar_root, tmp_path):
    y = np.arange(30) % 10
    with pytest.raises(DataError, match=r"CIFAR-N label file .* not found; give CIFAR-10_human.pt"):
        read_cifar_n(tmp_path / "none.pt", "cifar10", y, 10)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=r"is not a CIFAR-N label file .*torch.save'd dict of numpy label arrays"):
        read_cifar_n(tmp_path / "junk.pt", "cifar10", y, 10)
    only = _human_file(tmp_path / "only.pt", y, worse_label=y)
    with pytest.raises(DataError, match=r"has no 'aggre_label' \(it has: clean_label, worse_label\)"):
        read_cifar_n(only, "cifar10", y, 10, "aggre")
    with pytest.raises(ConfigError, match="unknown CIFAR-N label set 'worst'"):
        read_cifar_n(only, "cifar10", y, 10, "worst")
    short = _human_file(tmp_path / "short.pt", y, worse_label=y[:10])
    with pytest.raises(DataError, match=r"'worse_label' should be 30 integer labels in \[0, 10\)"):
        read_cifar_n(short, "cifar10", y, 10)
    other = _human_file(tmp_path / "other.pt", (y + 1) % 10, noisy_label=y)
    with pytest.raises(DataError, match=r"clean_label differs from the cifar100 training labels on 30 of 30"):
        read_cifar_n(other, "cifar100", y, 100)


def test_cifar_n_file_with_other_objects_is_refused(tmp_path):
    y = np.arange(30) % 10
    evil = tmp_path / "evil.pt"
    torch.save({"clean_label": y, "worse_label": y, "x": print}, evil)  # a callable: refused, never run
    with pytest.raises(DataError, match="is not a CIFAR-N label file"):
        read_cifar_n(evil, "cifar10", y, 10)


def test_file_saved_under_numpy_1_reads(tmp_path):
    """The released files were pickled under numpy 1, naming numpy.core.multiarray (numpy 2: numpy._core)."""
    import zipfile

    y = np.arange(30) % 10
    new = _human_file(tmp_path / "new.pt", y, worse_label=(y + 1) % 10)
    with zipfile.ZipFile(new) as z:
        items = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in items if n.endswith("data.pkl"))
    assert b"numpy._core" in items[pkl]
    items[pkl] = items[pkl].replace(b"numpy._core", b"numpy.core")
    with zipfile.ZipFile(tmp_path / "old.pt", "w") as z:
        for n, data in items.items():
            z.writestr(n, data)
    assert read_cifar_n(tmp_path / "old.pt", "cifar10", y, 10).tolist() == ((y + 1) % 10).tolist()
