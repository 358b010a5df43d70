"""A catalogue of hostile and broken inputs (issue 17), each tried through the CLI as a user would.

Every case is a row of CASES: how to build the input (a function of the per-case `Env`), the expected exit
code and a fragment of the expected message. For every case the test also checks: no traceback (no exception
escapes but typer's exit), an error is exactly one `error:` line on stderr, the data folders hash the same
before and after, and no half-written leftover (`.partial`, `.tmp-`, `.old-`) is left anywhere under the
case's folder. Runs are tiny (8x8 digits, 3 classes, one epoch, the ncm probe on the input layer).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from filelock import FileLock
from PIL import Image
from typer.testing import CliRunner

from noisefix.cli import app
from noisefix.data.folders import load_data
from noisefix.data.labels_file import write_labels_file
from noisefix.io.atomic import save_tensors
from noisefix.io.lock import lock_owner, lock_path

runner = CliRunner()
CPU = ("--device", "cpu")
TRAIN = ("--epochs", "1", *CPU)
PROBE = ("--layers", "x", "--probes", "ncm", "--folds", "3", *CPU)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, plus every folder: the data's full state."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    return [p.as_posix() for p in Path(root).rglob("*")
            if p.name.endswith(".partial") or ".tmp-" in p.name or ".old-" in p.name]


def make_digits_folder(root: Path, *, classes: int = 3, train: int = 10, test: int = 4) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)
    for split, (lo, hi) in (("train", (0, train)), ("test", (train, train + test))):
        for c in range(classes):
            folder = root / split / str(c)
            folder.mkdir(parents=True)
            for j, i in enumerate(np.flatnonzero(d.target == c)[lo:hi]):
                Image.fromarray(images[i]).save(folder / f"{j:03d}.png")
    return root


@dataclass
class Base:
    data: Path
    run: Path  # trained, probed and relabeled


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("hostile-base")
    data = make_digits_folder(root / "data")
    run = root / "run"
    for args in (("train", data, "--out", run, *TRAIN), ("probe", "--run", run, *PROBE),
                 ("relabel", "--run", run)):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    return Base(data=data, run=run)


@dataclass
class Env:
    """What a case builds its input with: a private folder, copies of the base data and run, held locks."""

    tmp: Path
    base: Base
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack
    datas: list[Path] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.base.data

    def run(self) -> Path:
        """A copy of the base run (trained, probed, relabeled) under the case's folder."""
        dst = self.tmp / "run"
        if not dst.exists():
            shutil.copytree(self.base.run, dst)
        return dst

    def new_data(self, name: str = "data") -> Path:
        """A private copy of the base data (hashed like the base data)."""
        dst = self.tmp / name
        shutil.copytree(self.base.data, dst)
        self.datas.append(dst)
        return dst

    def hold_lock(self, folder: Path) -> None:
        """Hold `folder`'s writer lock as another process would, for the rest of the case."""
        lock = FileLock(str(lock_path(lock_owner(folder))), timeout=0)
        lock.acquire()
        self.stack.callback(lock.release)

    def labels(self, rows: list[str], name: str = "labels.csv", header: str | None = "path,label") -> Path:
        path = self.tmp / name
        path.write_text("".join(f"{line}\n" for line in ([header] if header else []) + rows), encoding="utf-8")
        return path

    def recipe(self, **over) -> Path:
        doc = {"name": "tiny", "dataset": "digits", "model": "mlp", "corruptions": [0.0], "seeds": 1,
               "train_subset": 60, "test_subset": 30, "train": {"epochs": 1, "device": "cpu"},
               "probe": {"layers": "x", "probes": ["ncm"], "folds": 3, "device": "cpu"},
               "retrain": {"epochs": 1, "device": "cpu", "baseline": False}}
        doc.update(over)
        path = self.tmp / "recipe.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    def fail_os(self, func: str, code: int, under: Path) -> None:
        """Make os.<func> fail with errno `code` for paths under `under` (a full disk, a read-only folder)."""
        real = getattr(os, func)

        def fake(path, *args, **kwargs):
            if str(path).startswith(str(under)):
                raise OSError(code, os.strerror(code), str(path))
            return real(path, *args, **kwargs)

        self.monkeypatch.setattr(os, func, fake)


def train_rows(data: Path) -> list[str]:
    return [f"{p.relative_to(data).as_posix()},{p.parent.name}" for p in sorted((data / "train").rglob("*.png"))]


def edit_json(path: Path, change: Callable[[dict], object], *, replace: bool = False) -> None:
    """Change a JSON file in place with `change(doc)`; with `replace`, its result becomes the file."""
    doc = json.loads(path.read_text())
    new = change(doc)
    path.write_text(json.dumps(new if replace else doc))


def _weights_from_other_run(env: Env) -> list:
    run = env.run()
    from safetensors.torch import load_file

    save_tensors(run / "model.safetensors", load_file(str(run / "model.safetensors")), {"run_id": "0" * 32})
    return ["probe", "--run", run, *PROBE, "--force"]


def _lying_header(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)


def _bad_image(env: Env, name: str) -> Path:
    data = env.new_data()
    (data / "train" / "0" / name).parent.mkdir(parents=True, exist_ok=True)
    (data / "train" / "0" / name).write_text("not an image")
    return data


def _bomb(env: Env) -> list:
    data = env.new_data()
    Image.new("1", (10_000, 9_000)).save(data / "train" / "0" / "big.png")  # 90 M pixels: over Pillow's limit
    return ["train", data, "--out", env.tmp / "out", *TRAIN]


def _non_utf8_name(env: Env) -> list:
    data = env.new_data()
    png = (data / "train" / "0" / "000.png").read_bytes()
    with open(os.fsencode(data / "train" / "0") + b"/caf\xe9.png", "wb") as fh:
        fh.write(png)
    return ["train", data, "--out", env.tmp / "out", *TRAIN]


def _newline_name_round_trip(env: Env) -> list:
    data = env.new_data()
    shutil.copy(data / "train" / "1" / "000.png", data / "train" / "1" / "a\nb.png")
    train = load_data(data).train
    labels = env.tmp / "cleaned_labels.csv"
    write_labels_file(labels, paths=train.paths, labels=train.targets, classes=train.classes, fmt="csv")
    return ["train", data, "--labels", labels, "--out", env.tmp / "out", *TRAIN]


def _newline_joined(env: Env) -> list:
    rows = [r for r in train_rows(env.data) if not r.startswith("train/0/000.png")]
    return ["train", env.data, "--labels", env.labels(rows + ['"train/0/00\n0.png",0']), "--out", env.tmp / "out",
            *TRAIN]


def _remove_split(env: Env) -> list:
    run = env.run()
    lines = (run / "labels.csv").read_text().splitlines()
    (run / "labels.csv").write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
    return ["probe", "--run", run, *PROBE, "--force"]


def _edit_label(env: Env) -> list:
    run = env.run()
    text = (run / "labels.csv").read_text()
    (run / "labels.csv").write_text(text.replace("train/0/000.png,0,", "train/0/000.png,1,"))
    return ["probe", "--run", run, *PROBE, "--force"]


def _stale_partial(env: Env) -> list:
    out = env.tmp / "out"
    (env.tmp / "out.partial").mkdir()
    (env.tmp / "out.partial" / "model.safetensors").write_text("from a killed run")
    (env.tmp / ".out.old-99999").mkdir()
    (env.tmp / "outside.txt").write_text("not a leftover of out: kept")
    return ["train", env.data, "--out", out, *TRAIN]


def _stale_probe_partial(env: Env) -> list:
    run = env.run()
    (run / "probe.partial").mkdir()
    (run / "probe.partial" / "scores.json").write_text("{}")
    return ["probe", "--run", run, *PROBE, "--force"]


def _stale_export(env: Env) -> list:
    (env.tmp / "dest.tmp-99999" / "train").mkdir(parents=True)
    return ["data", "export", "digits", env.tmp / "dest", "--train-subset", "30", "--test-subset", "15"]


def _existing_report(env: Env) -> list:
    out = env.tmp / "repro"
    out.mkdir()
    (out / "report.md").write_text("# my report\n")
    return ["reproduce", env.recipe(), "--out", out]


def _locked(folder_of: Callable[[Env], Path], args_of: Callable[[Env, Path], list]) -> Callable[[Env], list]:
    def build(env: Env) -> list:
        folder = folder_of(env)
        env.hold_lock(folder)
        return args_of(env, folder)
    return build


@dataclass
class Case:
    id: str
    build: Callable[[Env], list]   # builds the input under env.tmp; returns the CLI arguments
    code: int                      # expected exit code
    fragment: str                  # expected in the output (stderr for errors), newlines removed
    check: Callable[[Env], bool] | None = None  # anything else that must hold afterwards


LOCKED = "another noisefix process is writing"
CASES = [
    # one writer per run / output folder; what a killed writer left is cleaned on the next run
    Case("lock-train", _locked(lambda e: e.tmp / "out", lambda e, f: ["train", e.data, "--out", f, *TRAIN]), 1, LOCKED,
         check=lambda e: not (e.tmp / "out").exists()),
    Case("lock-probe", _locked(lambda e: e.run() / "probe", lambda e, f: ["probe", "--run", e.run(), *PROBE, "--force"]),
         1, LOCKED),
    Case("lock-relabel", _locked(lambda e: e.run(), lambda e, f: ["relabel", "--run", f, "--force"]), 1, LOCKED),
    Case("lock-retrain", _locked(lambda e: e.run(), lambda e, f: ["retrain", "--run", f, "--epochs", "1", *CPU]),
         1, LOCKED),
    Case("lock-train-force-over-probed-run", _locked(lambda e: e.run(), lambda e, f: [
        "train", e.data, "--out", f, *TRAIN, "--force"]), 1, LOCKED, check=lambda e: (e.run() / "probe").is_dir()),
    Case("lock-export", _locked(lambda e: e.tmp / "dest", lambda e, f: ["data", "export", "digits", f]), 1, LOCKED),
    Case("lock-reproduce", _locked(lambda e: e.tmp / "repro", lambda e, f: ["reproduce", e.recipe(), "--out", f]),
         1, LOCKED),
    Case("stale-partial-cleaned", _stale_partial, 0, "trained 1 epochs",
         check=lambda e: (e.tmp / "outside.txt").exists() and not (e.tmp / ".out.old-99999").exists()),
    Case("stale-probe-partial-cleaned", _stale_probe_partial, 0, "probe results"),
    Case("stale-export-tmp-cleaned", _stale_export, 0, "wrote digits",
         check=lambda e: not (e.tmp / "dest.tmp-99999").exists()),
    # run identity: one run's manifest, model.json, weights and labels.csv belong together
    Case("weights-of-another-run", _weights_from_other_run, 1, "belongs to run"),
    Case("model-json-of-another-run", lambda e: (edit_json(e.run() / "model.json", lambda d: d.update(run_id="1" * 32)),
                                                 ["probe", "--run", e.run(), *PROBE, "--force"])[1], 1, "belongs to run"),
    Case("labels-split-column-removed", _remove_split, 1, "labels.csv was changed"),
    Case("labels-csv-edited", _edit_label, 1, "labels.csv was changed"),
    # damaged run files: one line naming the file, before anything is allocated
    Case("weights-truncated", lambda e: ((e.run() / "model.safetensors").write_bytes(
        (e.run() / "model.safetensors").read_bytes()[:100]), ["probe", "--run", e.run(), *PROBE, "--force"])[1],
        1, "model.safetensors is not a readable safetensors file"),
    Case("weights-garbage", lambda e: ((e.run() / "model.safetensors").write_bytes(os.urandom(4096)),
                                       ["probe", "--run", e.run(), *PROBE, "--force"])[1], 1, "model.safetensors"),
    Case("weights-lying-header", lambda e: (_lying_header(e.run() / "model.safetensors"),
                                            ["probe", "--run", e.run(), *PROBE, "--force"])[1], 1, "model.safetensors"),
    Case("train-weights-garbage", lambda e: ((e.tmp / "init.safetensors").write_bytes(b"\x10" + os.urandom(300)),
                                             ["train", e.data, "--out", e.tmp / "out", "--weights",
                                              e.tmp / "init.safetensors", *TRAIN])[1], 1, "init.safetensors"),
    Case("model-json-missing-key", lambda e: (edit_json(e.run() / "model.json", lambda d: d.pop("arch")),
                                              ["probe", "--run", e.run(), *PROBE, "--force"])[1], 1, "model.json lacks the key 'arch'"),
    Case("model-json-a-list", lambda e: (edit_json(e.run() / "model.json", lambda d: [d], replace=True),
                                         ["probe", "--run", e.run(), *PROBE, "--force"])[1], 1, "model.json holds a JSON list"),
    Case("model-json-huge-in-shape", lambda e: (edit_json(e.run() / "model.json", lambda d: d.update(in_shape=[1, 100000, 100000])),
                                                ["probe", "--run", e.run(), *PROBE, "--force"])[1], 1, "in_shape 1x100000x100000"),
    Case("manifest-missing-key", lambda e: (edit_json(e.run() / "manifest.json", lambda d: d.pop("data_fingerprint")),
                                            ["probe", "--run", e.run(), *PROBE, "--force"])[1], 1, "manifest.json lacks the key"),
    Case("config-yaml-without-train", lambda e: ((e.run() / "config.yaml").write_text("schema_version: 1\n"),
                                                 ["retrain", "--run", e.run(), "--epochs", "1", *CPU])[1], 1, "config.yaml has no 'train'"),
    Case("config-yaml-wrong-type", lambda e: ((e.run() / "config.yaml").write_text("train: {epochs: .inf}\n"),
                                              ["retrain", "--run", e.run(), *CPU])[1], 1, "epochs must be int"),
    Case("oof-wrong-keys", lambda e: (save_tensors(e.run() / "probe" / "oof.safetensors", {"x": torch.zeros(3)}),
                                      ["relabel", "--run", e.run(), "--force"])[1], 1, "oof.safetensors lacks"),
    Case("scores-json-garbage-rows", lambda e: (edit_json(e.run() / "probe" / "scores.json", lambda d: d.update(rows=[1])),
                                                ["relabel", "--run", e.run(), "--force"])[1], 1, "scores.json"),
    # the OS refusing a write: one line naming the file and the fix
    Case("enospc", lambda e: (e.fail_os("fsync", errno.ENOSPC, ""),
                              ["train", e.data, "--out", e.tmp / "out", *TRAIN])[1], 1, "No space left on device (ENOSPC)"),
    Case("erofs", lambda e: (e.fail_os("mkdir", errno.EROFS, str(e.tmp / "ro")),
                             ["train", e.data, "--out", e.tmp / "ro" / "out", *TRAIN])[1], 1, "read-only"),
    Case("eacces", lambda e: (e.fail_os("mkdir", errno.EACCES, str(e.tmp / "no")),
                              ["train", e.data, "--out", e.tmp / "no" / "out", *TRAIN])[1], 1, "(EACCES)"),
    # images: Pillow's decompression-bomb warning, names that are not UTF-8 or look like markup
    Case("decompression-bomb", _bomb, 1, "big.png"),
    Case("non-utf8-file-name", _non_utf8_name, 1, "not valid UTF-8"),
    Case("non-utf8-out", lambda e: ["train", e.data, "--out", str(e.tmp / "o") + "\udce9", *TRAIN], 0, "o\\udce9"),
    Case("markup-path-in-folder", lambda e: ["train", _bad_image(e, "[/x].png"), "--out", e.tmp / "out", *TRAIN],
         1, "train/0/[/x].png"),
    Case("markup-photo-edit", lambda e: ["train", _bad_image(e, "photo[edit].jpg"), "--out", e.tmp / "out", *TRAIN],
         1, "photo[edit].jpg"),
    Case("markup-photo-edit-skipped", lambda e: ["train", _bad_image(e, "photo[edit].jpg"), "--out", e.tmp / "out",
                                                 *TRAIN, "--on-bad-image", "skip"], 0, "photo[edit].jpg"),
    Case("newline-in-bad-image-name", lambda e: ["train", _bad_image(e, "n\nl.png"), "--out", e.tmp / "out", *TRAIN],
         1, "train/0/n\\nl.png"),
    Case("newline-in-skipped-image-name", lambda e: ["train", _bad_image(e, "n\nl.png"), "--out", e.tmp / "out",
                                                     *TRAIN, "--on-bad-image", "skip"], 0, "train/0/n\\nl.png"),
    Case("markup-out", lambda e: ["train", e.data, "--out", e.tmp / "o" / "weird[/x]run", *TRAIN], 0, "weird[/x]run"),
    Case("markup-class", lambda e: ["train", e.data, "--labels", e.labels(train_rows(e.data)[:-1] + [
        "train/2/009.png,[bold red]cat"]), "--out", e.tmp / "out", *TRAIN], 1, "'[bold red]cat'"),
    Case("markup-labels-path", lambda e: ["train", e.data, "--labels", e.labels(train_rows(e.data) + [
        "train/0/[/x].png,0"]), "--out", e.tmp / "out", *TRAIN], 1, "'train/0/[/x].png'"),
    # labels files
    Case("labels-newline-not-joined", _newline_joined, 1, "not found"),
    Case("labels-newline-round-trip", _newline_name_round_trip, 0, "trained 1 epochs"),
    Case("labels-one-class", lambda e: ["train", e.data, "--labels", e.labels(
        [r.rsplit(",", 1)[0] + ",0" for r in train_rows(e.data)]), "--out", e.tmp / "out", *TRAIN], 1, "at least 2"),
    Case("labels-one-class-lines", lambda e: ["train", e.data, "--labels", e.labels(
        [r.rsplit(",", 1)[0] + " 1" for r in train_rows(e.data)], name="l.txt", header=None),
        "--out", e.tmp / "out", *TRAIN], 1, "at least 2"),
    # writes where they must not go
    Case("cache-dir-inside-data", lambda e: ["probe", "--run", e.run(), *PROBE, "--force", "--cache-dir",
                                             e.data / "cache", "--cache", "always"], 1, "inside (or contain) the data"),
    Case("out-inside-data", lambda e: ["train", e.data, "--out", e.data / "run", *TRAIN], 1, "inside (or contain)"),
    # seeds and learning rates
    Case("seed-negative", lambda e: ["train", e.data, "--out", e.tmp / "out", *TRAIN, "--seed", "-1"], 1, "seed must be"),
    Case("seed-2**64", lambda e: ["train", e.data, "--out", e.tmp / "out", *TRAIN, "--seed", str(2**64)], 1, "seed must be"),
    Case("probe-seed-negative", lambda e: ["probe", "--run", e.run(), *PROBE, "--force", "--seed", "-1"], 1, "seed must be"),
    Case("retrain-seed-huge", lambda e: ["retrain", "--run", e.run(), *CPU, "--seed", str(2**64)], 1, "seed must be"),
    Case("export-seed-negative", lambda e: ["data", "export", "digits", e.tmp / "dest", "--seed", "-1"], 1, "seed must be"),
    Case("lr-inf", lambda e: ["train", e.data, "--out", e.tmp / "out", *TRAIN, "--lr", "inf"], 1, "learning rate"),
    Case("lr-nan", lambda e: ["train", e.data, "--out", e.tmp / "out", *TRAIN, "--lr", "nan"], 1, "learning rate"),
    Case("lr-1e30-diverges", lambda e: ["train", e.data, "--out", e.tmp / "out", "--epochs", "3", *CPU, "--lr", "1e30"],
         1, "training diverged", check=lambda e: not (e.tmp / "out").exists()),
    # recipes: types checked, not only keys; nothing written on a config error
    *[Case(f"recipe-{key}-{value!r}", lambda e, key=key, value=value: ["reproduce", e.recipe(**{key: value}),
                                                                         "--out", e.tmp / "repro"],
           1, fragment, check=lambda e: not (e.tmp / "repro").exists())
      for key, value, fragment in [
          ("train", 5, "train must be a mapping"), ("model", ["mlp"], "model must be a string"),
          ("seeds", 1.5, "seeds must be int"), ("train", {"epochs": float("inf")}, "epochs must be int"),
          ("name", [1, 2], "name must be str"), ("name", "../../x", "plain folder name"),
          ("model", 2.5, "model must be a string"), ("dataset", "inf", "unknown dataset"),
          ("train_subset", "mlp", "train_subset must be int"), ("corruptions", [0.0, 5], "corruption degrees"),
          ("probe", {"probes": "masc"}, "probes must be a list"), ("train", {"lr": -1}, "learning rate"),
          ("quick", {"epochs": True}, "epochs must be int"), ("expected", {"masc_best": {"x": 1}}, "expected"),
      ]],
    Case("reproduce-existing-report", _existing_report, 1, "--force",
         check=lambda e: (e.tmp / "repro" / "report.md").read_text() == "# my report\n"),
    Case("reproduce-runtime-error-leaves-no-out", lambda e: ["reproduce", e.recipe(train_subset=100000), "--out",
                                                             e.tmp / "repro"], 1, "train_subset",
         check=lambda e: not (e.tmp / "repro").exists()),
    Case("reproduce-bad-corruption-option", lambda e: ["reproduce", e.recipe(), "--out", e.tmp / "repro",
                                                       "--corruption", "5"], 1, "corruption degrees",
         check=lambda e: not (e.tmp / "repro").exists()),
]


def test_catalogue_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, base: Base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ or reproduce/ folder would land in the case's folder
    with contextlib.ExitStack() as stack:
        env = Env(tmp=tmp_path, base=base, monkeypatch=monkeypatch, stack=stack)
        args = case.build(env)
        before = {d: tree_hashes(d) for d in [base.data, *env.datas]}
        result = invoke(*args)
    monkeypatch.undo()
    out = result.output.replace("\n", "")
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"traceback: {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert "Traceback" not in result.output
    assert result.exit_code == case.code, result.output
    if case.code == 1:
        err = result.stderr.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, result.stderr
        assert "warning" not in result.stderr.lower()
        assert case.fragment in err.replace("\n", ""), err
    else:
        assert case.fragment in out, result.output
    assert {d: tree_hashes(d) for d in before} == before, "a data folder changed"
    assert not leftovers(tmp_path), leftovers(tmp_path)
    if case.check is not None:
        assert case.check(env)


def test_two_train_processes_on_one_out_do_not_mix(base, tmp_path):
    """A real second process: while one `train` writes --out (stopped with SIGSTOP mid-training, holding the
    lock), another is refused at once; the first then completes one consistent run (its manifest, model.json
    and weights share one run id) that the later stages open."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"

    def cmd(epochs):
        return [sys.executable, "-m", "noisefix", "train", str(base.data), "--out", str(out), "--epochs", str(epochs),
                "--lr", "1e-6", *CPU]

    first = subprocess.Popen(cmd(5), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "out.partial" / "metrics.jsonl").exists() and time.time() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(cmd(1), capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and LOCKED in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    manifest = json.loads((out / "manifest.json").read_text())
    model = json.loads((out / "model.json").read_text())
    assert manifest["run_id"] == model["run_id"]
    assert invoke("layers", "--run", out).exit_code == 0
    assert not leftovers(tmp_path)
