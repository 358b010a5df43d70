"""Seeded fuzz of the CLI over labels files, image bytes, recipes and run files (issue 17).

A plain seeded generator (no hypothesis) makes each case; it runs through the CLI in-process with a per-case
timeout (SIGALRM). Every case must end in exit code 0 or 1, an error must be exactly one `error:` line, and
no exception other than typer's exit may escape (a traceback); the data folder must hash the same afterwards.
`test_fuzz_sample` runs a fast sample in the default suite; `test_fuzz_thousand` (slow) runs 1,000 cases and
prints its counts (recorded in docs/data-safety.md):

    NOISEFIX_DATA=/work/shared/data .venv/bin/python -m pytest -q -m slow tests/test_fuzz.py -s
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.test_hostile import PROBE, TRAIN, invoke, make_digits_folder, tree_hashes

CASE_TIMEOUT = 60  # seconds per case; over it counts as a hang
KINDS = ("labels", "image", "recipe", "runfile")


def pick(rng, options):
    """One of `options` (any objects; numpy's rng.choice would turn them into an array)."""
    options = list(options)
    return options[int(rng.integers(0, len(options)))]


class Hang(Exception):
    pass


@dataclass
class Fuzz:
    root: Path
    data: Path
    run: Path
    recipe: dict


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory) -> Fuzz:
    root = tmp_path_factory.mktemp("fuzz")
    data = make_digits_folder(root / "data")
    run = root / "run"
    for args in (("train", data, "--out", run, *TRAIN), ("probe", "--run", run, *PROBE),
                 ("relabel", "--run", run)):
        assert invoke(*args).exit_code == 0
    recipe = {"name": "tiny", "dataset": "digits", "model": "mlp", "corruptions": [0.0], "seeds": 1,
              "train_subset": 60, "test_subset": 30, "train": {"epochs": 1, "device": "cpu"},
              "probe": {"layers": "x", "probes": ["ncm"], "folds": 3, "device": "cpu"},
              "retrain": {"epochs": 1, "device": "cpu", "baseline": False}}
    return Fuzz(root=root, data=data, run=run, recipe=recipe)


# ---------------------------------------------------------------- generators (one rng per case)

ODD_TEXT = ["", " ", "0", "-1", "1e309", "9" * 40, "nan", "[bold red]cat", "[/x]", "caf\u00e9", "\u2028", "\x00",
            "a,b", '"', "'", "\\", "../..", "/etc/passwd", "C:\\x", "~", "${HOME}", "\t", "\r", "\n", "\ufeff"]


def _text(rng) -> str:
    if rng.random() < 0.5:
        return str(pick(rng, ODD_TEXT))
    alphabet = "abc012,;\"' \t\n\r/.[]\\\u00e9\u4e2d\U0001f600-_"
    return "".join(pick(rng, alphabet) for _ in range(int(rng.integers(0, 12))))


def gen_labels(rng, fz: Fuzz, case_dir: Path) -> list:
    paths = [p.relative_to(fz.data).as_posix() for p in sorted((fz.data / "train").rglob("*.png"))]
    csv_format = rng.random() < 0.7
    rate = pick(rng, [0.0, 0.0, 0.01, 0.05, 0.2])  # how often a row is damaged: some files stay valid
    rows = []
    for p in paths:
        if rng.random() < 0.15:
            continue
        path = p if rng.random() >= rate else pick(rng, [f"./{p}", p + "x", f'"{p[:-5]}\n{p[-5:]}"', _text(rng),
                                                         p.replace("/", "\\"), f"train/../{p}", p.upper()])
        label = p.split("/")[1] if rng.random() >= 2 * rate else pick(rng, ["0", "1", "2", _text(rng)])
        sep = "," if csv_format else " "
        extra = sep + _text(rng) if rng.random() < 0.05 else ""
        rows.append(f"{path}{sep}{label}{extra}")
    header = ["path,label"] if csv_format and rng.random() < 0.9 else []
    if csv_format and rng.random() < 0.1:
        header = [pick(rng, ["path,label,clean_label", "Path, Label", "label,path", "path;label"])]
    eol = pick(rng, ["\n", "\r\n", "\r"])
    text = eol.join(header + rows) + (eol if rng.random() < 0.8 else "")
    raw = ("\ufeff" if rng.random() < 0.05 else "").encode() + text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        k = int(rng.integers(0, len(raw) + 1))
        raw = raw[:k] + bytes(rng.integers(0, 256, 3, dtype=np.uint8)) + raw[k:]
    labels = case_dir / ("labels.csv" if csv_format else "labels.txt")
    labels.write_bytes(raw)
    return ["train", fz.data, "--labels", labels, "--out", case_dir / "out", *TRAIN]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _image_bytes(rng, fz: Fuzz) -> bytes:
    src = Image.open(fz.data / "train" / "0" / "000.png")
    kind = pick(rng, ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "random", "huge-png", "16bit", "rgba"])
    if kind == "random":
        return bytes(rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8))
    if kind == "huge-png":  # a valid header claiming W x H, no pixel data
        w, h = (pick(rng, [1, 9, 30_000, 100_000, 2**31 - 1]) for _ in range(2))
        ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")
    buf = io.BytesIO()
    if kind == "16bit":
        Image.fromarray(np.asarray(src, np.uint16) * 257).save(buf, "PNG")
    elif kind == "rgba":
        src.convert("RGBA").resize((int(rng.integers(1, 40)), int(rng.integers(1, 40)))).save(buf, "PNG")
    else:
        src.convert("RGB" if kind == "JPEG" else "L").save(buf, kind)
    data = bytearray(buf.getvalue())
    how = pick(rng, ["intact", "truncate", "flip", "flip"])
    if how == "truncate":
        data = data[: int(rng.integers(0, len(data)))]
    elif how == "flip":
        for i in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[i] = int(rng.integers(0, 256))
    return bytes(data)


def gen_image(rng, fz: Fuzz, case_dir: Path) -> list:
    data = case_dir / "data"
    shutil.copytree(fz.data, data)
    name = pick(rng, ["x.png", "x.jpg", "photo[edit].jpg", "[/x].png", "a b.gif", "caf\u00e9.webp", "n\nl.png",
                       ".hidden.png", "x.PNG", "x.tiff", "x.bmp"])
    folder = data / pick(rng, ["train", "test"]) / str(rng.integers(0, 3))
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(_image_bytes(rng, fz))
    mode = ["--on-bad-image", "skip"] if rng.random() < 0.5 else []
    return ["train", data, "--out", case_dir / "out", *TRAIN, *mode]


RECIPE_VALUES = [0, 1, -1, 2.5, float("inf"), float("nan"), True, None, "", "mlp", "../../x", "[bold]x", [], [1, 2],
                 ["mlp"], {}, {"a": 1}, 10**30, "inf", "1e3", [0.5, 2], {"epochs": 0.5}]


def gen_recipe(rng, fz: Fuzz, case_dir: Path) -> list:
    doc = json.loads(json.dumps(fz.recipe))
    for _ in range(int(rng.integers(1, 4))):
        keys = list(doc) + ["train.epochs", "train.lr", "train.seed", "probe.folds", "probe.probes", "probe.layers",
                            "quick.epochs", "expected.masc_best", "unknown_key", "retrain.patience", "noise"]
        key = str(pick(rng, keys))
        value = RECIPE_VALUES[int(rng.integers(0, len(RECIPE_VALUES)))]
        if "." in key:
            section, sub = key.split(".")
            if not isinstance(doc.get(section), dict):
                doc[section] = {}
            doc[section][sub] = value
        elif rng.random() < 0.15:
            doc.pop(key, None)
        else:
            doc[key] = value
    recipe = case_dir / "recipe.yaml"
    text = yaml.safe_dump(doc, allow_unicode=True)
    if rng.random() < 0.1:  # broken YAML
        text = text[: int(rng.integers(0, len(text) + 1))] + pick(rng, ["\n  - [", ": :", "\t", "!!python/object:os.system"])
    recipe.write_text(text, encoding="utf-8")
    out = case_dir / "repro"
    out.mkdir()
    (out / "report.md").write_text("# kept\n")  # a valid recipe is refused here (no --force): parsing only
    return ["reproduce", recipe, "--out", out]


RUN_FILES = {"manifest.json": "layers", "model.json": "layers", "model.safetensors": "layers",
             "labels.csv": "layers", "config.yaml": "retrain", "probe/scores.json": "relabel",
             "probe/oof.safetensors": "relabel", "skipped_images.csv": "layers"}


def _mutate_json(rng, doc):
    if isinstance(doc, dict) and doc:
        key = pick(rng, list(doc))
        how = pick(rng, ["drop", "value", "deep"])
        if how == "drop":
            doc.pop(key)
        elif how == "deep" and isinstance(doc[key], (dict, list)) and doc[key]:
            doc[key] = _mutate_json(rng, doc[key])
        else:
            doc[key] = RECIPE_VALUES[int(rng.integers(0, len(RECIPE_VALUES)))]
        return doc
    if isinstance(doc, list) and doc:
        i = int(rng.integers(0, len(doc)))
        doc[i] = _mutate_json(rng, doc[i]) if rng.random() < 0.5 else RECIPE_VALUES[int(rng.integers(0, len(RECIPE_VALUES)))]
        return doc
    return RECIPE_VALUES[int(rng.integers(0, len(RECIPE_VALUES)))]


def _mutate_bytes(rng, raw: bytes) -> bytes:
    data = bytearray(raw)
    how = pick(rng, ["truncate", "flip", "garbage", "empty"])
    if how == "truncate":
        return bytes(data[: int(rng.integers(0, max(1, len(data))))])
    if how == "garbage":
        return bytes(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8))
    if how == "empty":
        return b""
    for i in rng.integers(0, max(1, len(data)), int(rng.integers(1, 16))):
        if data:
            data[i] = int(rng.integers(0, 256))
    return bytes(data)


def gen_runfile(rng, fz: Fuzz, case_dir: Path) -> list:
    run = case_dir / "run"
    shutil.copytree(fz.run, run)
    name = str(pick(rng, list(RUN_FILES)))
    path = run / name
    if name.endswith(".json") and rng.random() < 0.7:
        path.write_text(json.dumps(_mutate_json(rng, json.loads(path.read_text())), default=str))
    elif name.endswith(".safetensors") and rng.random() < 0.4:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path))
        key = pick(rng, list(tensors))
        t = tensors[key]
        tensors[key] = pick(rng, [torch.zeros(1), torch.full(tuple(t.shape), float("nan")), torch.zeros(0),
                                  torch.nan_to_num(t.double()).round().to(torch.int64), t.float() + 1])
        if rng.random() < 0.3:
            tensors.pop(key)
        save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata={"run_id": str(pick(rng, ["", "x"]))})
    elif name == "config.yaml" and rng.random() < 0.6:
        doc = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump(_mutate_json(rng, doc)))
    else:
        path.write_bytes(_mutate_bytes(rng, path.read_bytes() if path.exists() else b"path,reason\n"))
    stage = RUN_FILES[name]
    if stage == "layers":
        return ["layers", "--run", run] if rng.random() < 0.7 else ["probe", "--run", run, *PROBE, "--force"]
    if stage == "relabel":
        return ["relabel", "--run", run, "--force"]
    return ["retrain", "--run", run, "--epochs", "1", "--no-baseline", "--device", "cpu", "--force"]


GENERATORS = {"labels": gen_labels, "image": gen_image, "recipe": gen_recipe, "runfile": gen_runfile}


# ---------------------------------------------------------------- running the cases


def _alarm(signum, frame):
    raise Hang()


def run_case(fz: Fuzz, index: int, root: Path) -> tuple[str, str]:
    """(kind, outcome): outcome is exit0, exit1, traceback:<type>, hang, bad-error-line or data-changed."""
    rng = np.random.default_rng([17, index])
    kind = KINDS[index % len(KINDS)]
    case_dir = root / f"case-{index:04d}"
    case_dir.mkdir()
    args = GENERATORS[kind](rng, fz, case_dir)
    private = case_dir / "data"  # an image case's own copy of the data
    before = tree_hashes(private) if private.is_dir() else None
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT)
    try:
        result = invoke(*args)
    except Hang:
        return kind, "hang"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if isinstance(result.exception, Hang):
        return kind, "hang"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return kind, f"traceback:{type(result.exception).__name__}:{str(result.exception)[:80]}"
    if result.exit_code == 1:
        err = result.stderr.strip()
        if not err.startswith("error:") or len(err.splitlines()) != 1:
            return kind, "bad-error-line"
    elif result.exit_code != 0:
        return kind, f"exit{result.exit_code}"
    if before is not None and tree_hashes(private) != before:
        return kind, "data-changed"
    shutil.rmtree(case_dir, ignore_errors=True)  # keep the disk small over 1,000 cases
    return kind, f"exit{result.exit_code}"


def run_fuzz(fz: Fuzz, root: Path, cases: range) -> Counter:
    before = tree_hashes(fz.data)
    counts: Counter = Counter()
    failures = []
    for i in cases:
        kind, outcome = run_case(fz, i, root)
        counts[(kind, outcome.split(":")[0])] += 1
        if outcome not in ("exit0", "exit1"):
            failures.append((i, kind, outcome))
    print(f"\nfuzz over {len(cases)} cases, counts (kind, outcome): {dict(sorted(counts.items()))}; "
          f"failures: {failures[:10]}")
    assert tree_hashes(fz.data) == before, "the data folder changed"
    assert not failures, failures[:10]
    return counts


def test_fuzz_sample(fuzz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    counts = run_fuzz(fuzz, tmp_path, range(50))
    assert sum(counts.values()) == 50


@pytest.mark.slow
def test_fuzz_thousand(fuzz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    counts = run_fuzz(fuzz, tmp_path, range(1000, 2000))
    assert sum(counts.values()) == 1000
