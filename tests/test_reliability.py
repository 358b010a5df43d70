"""Reliability and security promises (docs/data-safety.md), one test per promise.

Every test here fails when the handling it checks is removed. Runs are tiny (8x8 digits, an MLP, one epoch,
two cheap probes on two layers) so the whole file stays well under a minute on a busy 2-core CPU.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import noisefix
from noisefix.cli import app
from noisefix.config import (
    ProbeConfig,
    RelabelConfig,
    TrainConfig,
    load_recipe,
    load_yaml,
)
from noisefix.data.folders import DataSplits, LabeledImages, load_data
from noisefix.data.images import ImageSource
from noisefix.errors import ConfigError, DataError, RunError
from noisefix.io import atomic
from noisefix.io.atomic import load_tensors, read_csv, read_json, save_tensors
from noisefix.nn.models import build_model, load_weights
from noisefix.stages import train as train_stage
from noisefix.stages.probe import run_probe
from noisefix.stages.relabel import run_relabel
from noisefix.stages.runs import open_run
from noisefix.stages.train import check_images, run_train
from noisefix.ui.reporter import NullReporter

FAST = dict(optimizer="sgd", lr=0.05, epochs=1, batch_size=16, holdout=0.2, device="cpu")
PROBE = ProbeConfig(layers="x,relu1", probes=("masc", "ncm"), folds=3, device="cpu")
CHEAP_PROBE = ProbeConfig(layers="x", probes=("ncm",), folds=3, device="cpu")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (symlinks by target), plus every folder; the data's full state."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    """Half-written things a crash could leave: `.partial` folders, temp files, `.old-` folders."""
    return [p.as_posix() for p in Path(root).rglob("*")
            if p.name.endswith(".partial") or ".tmp-" in p.name or ".old-" in p.name]


def break_images(data: Path) -> set[str]:
    """A truncated PNG and a text file named .jpg in the training split; returns their sample ids."""
    victim = sorted((data / "train" / "1").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    (data / "train" / "2" / "fake.jpg").write_text("this is not a JPEG")
    return {f"train/1/{victim.name}", "train/2/fake.jpg"}


def write_labels(data: Path, name: str = "noisy.csv", flips: int = 3) -> Path:
    """A labels file for the training split with `flips` labels moved to the next class."""
    rows = []
    for k, p in enumerate(sorted((data / "train").rglob("*.png"))):
        c = int(p.parent.name)
        rows.append(f"{p.relative_to(data).as_posix()},{(c + 1) % 3 if k % 10 < flips and k < 30 else c}")
    path = data / name
    path.write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- bad images through the CLI


def test_cli_bad_images_fail_naming_them_and_write_nothing(tiny_folder, tmp_path):
    bad = break_images(tiny_folder)
    out = tmp_path / "run"
    result = invoke("train", tiny_folder, "--out", out, "--epochs", "1", "--device", "cpu")
    assert result.exit_code == 1
    text = result.output.strip()
    assert len(text.splitlines()) == 1
    assert text.startswith("error:") and "2 bad image(s)" in text and "--on-bad-image skip" in text
    assert all(p in text for p in bad)
    assert not out.exists() and not leftovers(tmp_path)


def test_cli_bad_images_skipped_and_listed(tiny_folder, tmp_path):
    bad = break_images(tiny_folder)
    out = tmp_path / "run"
    result = invoke("train", tiny_folder, "--out", out, "--epochs", "1", "--device", "cpu",
                    "--on-bad-image", "skip")
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", "")
    assert "skipping 2 bad image(s)" in text and all(p in text for p in bad)
    assert {r["path"] for r in read_csv(out / "skipped_images.csv")} == bad
    assert not bad & {r["path"] for r in read_csv(out / "labels.csv")}


def test_cli_error_is_one_line_even_when_long(tmp_path):
    result = invoke("train", tmp_path / ("a-long-folder-name-" * 6), "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- hostile labels files


def _labels_case(root: Path, outside: Path, case: str) -> bytes:
    good = "train/0/000.png,0\ntrain/1/000.png,1\n"
    if case == "parent_traversal":
        return f"path,label\n{good}../../etc/passwd,0\n".encode()
    if case == "absolute":
        return f"path,label\n{good}{root / 'train' / '2' / '000.png'},2\n".encode()
    if case == "symlink_out":
        (root / "train" / "2" / "link.png").symlink_to(outside)
        return f"path,label\n{good}train/2/link.png,2\n".encode()
    if case == "symlinked_folder_out":
        (root / "train" / "2" / "sub").symlink_to(outside.parent, target_is_directory=True)
        return f"path,label\n{good}train/2/sub/{outside.name},2\n".encode()
    if case == "duplicate":
        return f"path,label\n{good}train/2/000.png,2\ntrain/./0/000.png,0\n".encode()
    if case == "unknown_path":
        return f"path,label\n{good}train/2/nope.png,2\n".encode()
    if case == "unknown_class":
        return f"path,label\n{good}train/2/000.png,zebra\n".encode()
    if case == "index_out_of_range":
        return f"path,label\n{good}train/2/000.png,3\n".encode()
    if case == "non_utf8":
        return b"path,label\n" + good.encode() + b"train/2/\xff\xfe.png,2\n"
    if case == "nul_byte":
        return b"train/0/000.png 0\ntrain/1/000.png 1\ntrain/2/000.png\0 2\n"
    if case == "huge_field":
        return f"path,label\n{good}train/2/{'x' * 200_000}.png,2\n".encode()
    if case == "wrong_columns":
        return f"path,label\n{good}train/2/000.png,2,2\n".encode()
    raise AssertionError(case)


LABEL_CASES = ["parent_traversal", "absolute", "symlink_out", "symlinked_folder_out", "duplicate", "unknown_path",
               "unknown_class", "index_out_of_range", "non_utf8", "nul_byte", "huge_field", "wrong_columns"]


@pytest.mark.parametrize("case", LABEL_CASES)
def test_hostile_labels_file_is_one_line_data_error_naming_file_and_line(case, tiny_folder, tmp_path):
    outside = tmp_path / "elsewhere" / "secret.png"
    outside.parent.mkdir()
    shutil.copy(tiny_folder / "train" / "0" / "001.png", outside)
    labels = tmp_path / f"{case}.csv"
    labels.write_bytes(_labels_case(tiny_folder, outside, case))
    with pytest.raises(DataError) as err:
        load_data(tiny_folder, labels)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 600, msg
    line = 5 if case == "duplicate" else (3 if case == "nul_byte" else 4)
    assert f"{labels}:{line}:" in msg, msg


def test_symlink_out_of_the_root_is_refused_without_labels_file(tiny_folder, tmp_path):
    outside = tmp_path / "secret.png"
    shutil.copy(tiny_folder / "train" / "0" / "001.png", outside)
    (tiny_folder / "train" / "2" / "link.png").symlink_to(outside)
    with pytest.raises(DataError, match="outside"):
        load_data(tiny_folder)


def test_huge_integer_label_is_refused_quickly(tmp_path):
    """Integer labels name classes "0".."max"; a typo like 99999999999 must not build 1e11 class names."""
    root = tmp_path / "flat"
    (root / "all").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(root / "all" / f"{i}.png")
    labels = tmp_path / "l.txt"
    labels.write_text("all/0.png 0\nall/1.png 99999999999\n")
    with pytest.raises(DataError, match=r"l\.txt:2: class index 99999999999 is over the limit"):
        load_data(root, labels)
    labels.write_text("all/0.png 0\nall/1.png " + "9" * 5000 + "\n")  # int() refuses > 4300 digits
    with pytest.raises(DataError, match=r"l\.txt:2:"):
        load_data(root, labels)


# ---------------------------------------------------------------- a full pipeline, twice


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The same train -> probe -> relabel run twice (same seeds) on one tiny folder holding its labels file;
    the data folder's hashes before and after."""
    from sklearn.datasets import load_digits

    base = tmp_path_factory.mktemp("pipe")
    data = base / "data"
    d = load_digits()
    for split, lo, hi in (("train", 0, 12), ("test", 12, 16)):
        for c in range(3):
            (data / split / str(c)).mkdir(parents=True)
            for j, i in enumerate(np.flatnonzero(d.target == c)[lo:hi]):
                Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).save(
                    data / split / str(c) / f"{j:03d}.png")
    labels = write_labels(data)
    before = tree_hashes(data)
    runs = []
    for name in ("a", "b"):
        out = base / name
        run_train(data, TrainConfig.for_model("mlp", **FAST), labels_file=labels, out=out)
        loaded = open_run(out)
        probe = run_probe(loaded, PROBE)
        relabel = run_relabel(loaded, RelabelConfig())
        runs.append((out, probe, relabel))
    return {"data": data, "labels": labels, "before": before, "after": tree_hashes(data), "runs": runs,
            "base": base}


def test_user_data_is_never_modified(pipeline):
    assert pipeline["after"] == pipeline["before"]
    assert len(pipeline["before"]) > 40  # the images, their folders and the labels file were all hashed
    out, _, relabel = pipeline["runs"][0]
    assert relabel.cleaned.parent == out / "relabel"  # cleaned labels go to the run, never over the input


def test_same_seed_same_labels_weights_and_scores(pipeline):
    (a, pa, ra), (b, pb, rb) = pipeline["runs"]
    assert (a / "labels.csv").read_bytes() == (b / "labels.csv").read_bytes()
    assert (a / "relabel" / "labels.csv").read_bytes() == (b / "relabel" / "labels.csv").read_bytes()
    assert ra.cleaned.read_bytes() == rb.cleaned.read_bytes()
    for name in ("model.safetensors", "checkpoints/epoch_0000.safetensors"):
        ta, tb = load_tensors(a / name), load_tensors(b / name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    ja, jb = read_json(a / "probe" / "scores.json"), read_json(b / "probe" / "scores.json")
    assert ja["rows"] == jb["rows"] and len(ja["rows"]) == 4
    oa, ob = load_tensors(a / "probe" / "oof.safetensors"), load_tensors(b / "probe" / "oof.safetensors")
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


# ---------------------------------------------------------------- interruptions and overwrites


def _crash_in_save_file(monkeypatch, *, when: str, exc: BaseException):
    """Make safetensors' writer write half a file named like `when`, then raise `exc` (Ctrl-C or a crash)."""
    real = atomic.save_file

    def fake(tensors, filename, metadata=None):
        if when in Path(filename).name:
            Path(filename).write_bytes(b"half a tensor file")
            raise exc
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(atomic, "save_file", fake)


def test_interrupted_train_keeps_previous_run_and_leaves_nothing_half_written(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=out)
    before = tree_hashes(out)
    with monkeypatch.context() as m:
        _crash_in_save_file(m, when="model.safetensors", exc=KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_train(tiny_folder, TrainConfig.for_model("mlp", **{**FAST, "seed": 5}), out=out, force=True)
        with pytest.raises(KeyboardInterrupt):  # and a first run interrupted leaves no folder at all
            run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=tmp_path / "fresh")
    assert tree_hashes(out) == before
    assert not (tmp_path / "fresh").exists() and not leftovers(tmp_path)
    run_train(tiny_folder, TrainConfig.for_model("mlp", **{**FAST, "seed": 5}), out=out, force=True)
    assert tree_hashes(out)["model.safetensors"] != before["model.safetensors"]
    assert not leftovers(tmp_path)


def test_interrupted_probe_keeps_previous_outputs(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=out)
    loaded = open_run(out)
    run_probe(loaded, CHEAP_PROBE)
    before = tree_hashes(out / "probe")
    with monkeypatch.context() as m:
        _crash_in_save_file(m, when="oof.safetensors", exc=RuntimeError("disk full"))
        with pytest.raises(RuntimeError, match="disk full"):
            run_probe(loaded, ProbeConfig(layers="relu1", probes=("ncm",), folds=3, device="cpu"), force=True)
    assert tree_hashes(out / "probe") == before and not leftovers(tmp_path)
    result = run_probe(loaded, ProbeConfig(layers="relu1", probes=("ncm",), folds=3, device="cpu"), force=True)
    assert [(r["layer"], r["probe"]) for r in result.rows] == [("relu1", "ncm")]
    assert not leftovers(tmp_path)


def test_run_dir_never_silently_overwritten(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), out=out)
    before = tree_hashes(out)
    result = invoke("train", tiny_folder, "--out", out, "--epochs", "1", "--device", "cpu")
    assert result.exit_code == 1 and "--force" in result.output.replace("\n", "")
    assert tree_hashes(out) == before
    # with --force, the old run stays whole until the new one is complete
    seen = []
    real = save_tensors

    def watching(path, tensors, metadata=None):
        seen.append(tree_hashes(out) == before)
        return real(path, tensors, metadata)

    monkeypatch.setattr(train_stage, "save_tensors", watching)   # where the train stage looks it up
    run_train(tiny_folder, TrainConfig.for_model("mlp", **{**FAST, "seed": 9}), out=out, force=True)
    assert len(seen) >= 3 and all(seen)
    assert tree_hashes(out)["model.safetensors"] != before["model.safetensors"]
    # stage outputs too: probe and relabel refuse to replace their results without force
    loaded = open_run(out)
    run_probe(loaded, CHEAP_PROBE)
    run_relabel(loaded, RelabelConfig())
    with pytest.raises(RunError, match="--force"):
        run_probe(loaded, CHEAP_PROBE)
    with pytest.raises(RunError, match="--force"):
        run_relabel(loaded, RelabelConfig())


# ---------------------------------------------------------------- later stages check the data


def test_later_stage_refuses_changed_data_or_classes(tiny_folder, tmp_path):
    labels = write_labels(tiny_folder, flips=0)
    out = tmp_path / "run"
    run_train(tiny_folder, TrainConfig.for_model("mlp", **FAST), labels_file=labels, out=out)
    open_run(out)  # unchanged data is accepted
    original = labels.read_text()
    labels.write_text(original.replace("train/0/000.png,0", "train/0/000.png,1"))  # one label changed
    with pytest.raises(RunError, match="fingerprint mismatch"):
        open_run(out)
    result = invoke("probe", "--run", out, "--layers", "x", "--probes", "ncm", "--device", "cpu")
    assert result.exit_code == 1 and result.output.startswith("error:") and "differs" in result.output
    labels.write_text(original)
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)
    for split in ("train", "test"):
        shutil.copytree(other / split / "2", other / split / "3")  # a class the run never saw
    rows = [f"train/3/{p.name},3" for p in sorted((other / "train" / "3").iterdir())]
    (other / "noisy.csv").write_text(original + "\n".join(rows) + "\n")
    with pytest.raises(RunError, match="classes"):
        open_run(out, data_root=other)


# ---------------------------------------------------------------- untrusted files


def test_yaml_with_python_tag_is_refused(tmp_path):
    pwned = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"name: !!python/object/apply:os.mkdir ['{pwned}']\ndataset: digits\nmodel: mlp\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_recipe(recipe)
    with pytest.raises(ConfigError):
        load_yaml(recipe)
    assert not pwned.exists()


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


@pytest.mark.parametrize("payload", ["pickled_object", "not_tensors"])
def test_pt_weights_with_non_tensor_objects_are_refused(payload, tmp_path):
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=3)
    pwned = tmp_path / "pwned"
    state = dict(model.state_dict())
    first = next(iter(state))
    state[first] = _Evil(pwned) if payload == "pickled_object" else "a string, not a tensor"
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    with pytest.raises(RunError, match="weights.pt"):
        load_weights(model, path)
    assert not pwned.exists()


def _unsafe_calls(tree: ast.AST) -> list[str]:
    """Calls that can run code from data: eval/exec, pickle loads, yaml.load without a safe loader,
    torch.load without weights_only=True."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute) else "")
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        kw = {k.arg: k.value for k in node.keywords}
        if isinstance(f, ast.Name) and name in ("eval", "exec", "__import__"):
            found.append(name)
        elif owner in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve") and name in (
                "load", "loads", "open", "Unpickler"):
            found.append(f"{owner}.{name}")
        elif name == "Unpickler":
            found.append(name)
        elif owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            if name.startswith(("unsafe", "full")) or not (
                    isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                found.append(f"yaml.{name}")
        elif owner == "torch" and name == "load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append("torch.load without weights_only=True")
        elif owner in ("np", "numpy") and name == "load":
            ap = kw.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True:
                found.append("np.load(allow_pickle=True)")
    return found


def test_no_module_runs_code_from_data():
    # the checker itself catches the patterns it is meant to catch ...
    bad = ("eval(x); exec(x); pickle.load(f); pickle.loads(b); yaml.load(t); yaml.load(t, Loader=yaml.Loader); "
           "torch.load(p); torch.load(p, weights_only=False); np.load(p, allow_pickle=True)")
    assert len(_unsafe_calls(ast.parse(bad))) == 9
    ok = "model.eval(); yaml.safe_load(t); yaml.load(t, Loader=yaml.SafeLoader); torch.load(p, weights_only=True)"
    assert _unsafe_calls(ast.parse(ok)) == []
    # ... and no module of the package contains one
    pkg = Path(noisefix.__file__).parent
    files = sorted(pkg.rglob("*.py"))
    assert len(files) > 10
    problems = {str(p.relative_to(pkg)): u for p in files if (u := _unsafe_calls(ast.parse(p.read_text())))}
    assert problems == {}
    text = "\n".join(p.read_text() for p in files)
    assert "import pickle" not in text and "from pickle" not in text


# ---------------------------------------------------------------- fuzzing


def _image_bytes(rng: np.random.Generator) -> dict[str, bytes]:
    arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = {}
    for fmt, ext in (("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("GIF", ".gif"), ("TIFF", ".tif"),
                     ("WEBP", ".webp")):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        out[ext] = buf.getvalue()
    return out


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
def test_fuzz_images_give_data_error_or_load(tmp_path):
    """Random bytes, truncations, byte flips and insertions in real image files of six formats."""
    rng = np.random.default_rng(1234)
    base = _image_bytes(rng)
    root = tmp_path / "fz"
    (root / "a").mkdir(parents=True)
    outcomes = {"ok": 0, "DataError": 0}
    for i in range(240):
        ext = list(base)[i % len(base)]
        data = bytearray(base[ext])
        kind = i // len(base) % 4
        if kind == 0:
            data = bytearray(rng.bytes(int(rng.integers(0, 400))))
        elif kind == 1:
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 2:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
        else:
            pos = int(rng.integers(len(data)))
            data[pos:pos] = rng.bytes(int(rng.integers(1, 64)))
        rel = f"a/{i:03d}{ext}"
        (root / rel).write_bytes(bytes(data))
        split = LabeledImages(root.resolve(), [rel], np.zeros(1, np.int64), ["a", "b"])
        try:
            check_images(DataSplits(split, None, None), "fail", NullReporter())
            assert ImageSource(split).shape[0] in (1, 3)
            outcomes["ok"] += 1
        except DataError as e:
            assert rel in str(e) and "\n" not in str(e)
            outcomes["DataError"] += 1
    assert outcomes["ok"] > 10 and outcomes["DataError"] > 100  # both paths were exercised


_TOKENS = ["train/0/000.png", "train/1/001.png", "train/2/002.png", "train/0/000.png", "../x.png", "/etc/passwd",
           "train/../train/0/000.png", "train/9/0.png", "", " ", "0", "1", "2", "-1", "3", "99999999999999999999",
           "1e9", "0x1", "٣", "猫", "\u202e", "\ufeff", "é", "\t", ",", '"', '""', "path", "label", "\x00", "\\",
           "C:\\x.png", "train/0/", "train", "nan", "None", "1.0", "9" * 5000]


def test_fuzz_labels_files_give_data_error_or_load(tiny_folder, tmp_path):
    rng = np.random.default_rng(99)
    loaded = 0
    for case in range(300):
        lines = []
        if rng.random() < 0.5:
            lines.append(rng.choice(["path,label", "path,label,clean_label", "path, label", "PATH,LABEL", "path"]))
        sep = "," if (lines and rng.random() < 0.9) else " "
        for _ in range(int(rng.integers(0, 8))):
            n = int(rng.choice([0, 1, 2, 2, 2, 3, 4]))
            lines.append(sep.join(str(rng.choice(_TOKENS)) for _ in range(n)))
        text = rng.choice(["\n", "\r\n", "\r"]).join(lines) + ("\n" if rng.random() < 0.5 else "")
        raw = text.encode("utf-8")
        if rng.random() < 0.1:
            pos = int(rng.integers(0, len(raw) + 1))
            raw = raw[:pos] + rng.bytes(3) + raw[pos:]
        labels = tmp_path / f"l{case}.csv"
        labels.write_bytes(raw)
        try:
            load_data(tiny_folder, labels)
            loaded += 1
        except DataError as e:
            assert "\n" not in str(e)
    assert loaded < 300


def test_run_directory_never_inside_the_data_folder(tiny_flat_folder, monkeypatch):
    monkeypatch.chdir(tiny_flat_folder)  # `noisefix train .` from inside the data would create DATA/runs/
    result = invoke("train", ".", "--epochs", "1")
    assert result.exit_code == 1 and "never writes into your data" in result.output
    assert not (tiny_flat_folder / "runs").exists()
    result = invoke("train", tiny_flat_folder, "--out", tiny_flat_folder, "--force", "--epochs", "1")
    assert result.exit_code == 1 and sorted(p.name for p in tiny_flat_folder.iterdir()) == ["0", "1", "2"]
