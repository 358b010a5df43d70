"""noisefix.data.labels_file: labels files written the way load_data reads them back; bad requests refused."""

import numpy as np
import pytest

from noisefix.data.folders import load_data
from noisefix.data.labels_file import write_labels_file
from noisefix.errors import ConfigError, DataError


@pytest.mark.parametrize("fmt, clean", [("csv", [2, 0]), ("csv", None), ("lines", None)])
def test_write_labels_file_round_trip(tiny_folder, fmt, clean):
    dest = tiny_folder.parent / f"out.{fmt}"
    paths = ["train/2/000.png", "train/0/003.png"]
    write_labels_file(dest, paths=paths, labels=np.array([1, 2]), classes=["0", "1", "2"], fmt=fmt, clean=clean)
    splits = load_data(tiny_folder, dest)
    t, got_fmt = splits.train, splits.labels_format
    assert got_fmt == fmt
    assert t.paths == sorted(paths)
    np.testing.assert_array_equal(t.targets, [2, 1])
    if clean is None:
        assert t.clean_targets is None
    else:
        np.testing.assert_array_equal(t.clean_targets, [0, 2])
    assert not list(tiny_folder.parent.glob("*.tmp-*"))


def test_write_labels_file_rejects_bad_requests(tmp_path):
    kw = dict(paths=["a.png"], labels=[0], classes=["x y", "z"])
    with pytest.raises(ConfigError, match="no clean_label"):
        write_labels_file(tmp_path / "f", fmt="lines", clean=[0], **kw)
    with pytest.raises(ConfigError, match="unknown labels format 'tsv'"):
        write_labels_file(tmp_path / "f", fmt="tsv", **kw)
    with pytest.raises(DataError, match="whitespace"):
        write_labels_file(tmp_path / "f", fmt="lines", **kw)
    with pytest.raises(DataError, match="one label per path"):
        write_labels_file(tmp_path / "f", fmt="csv", paths=["a", "b"], labels=[0], classes=["x", "z"])
