"""The run directory: every file name of a run (`RunDir`) and of its stage folders (`ProbeDir`,
`RelabelDir`, `RetrainDir`), of a reproduction (`ReproduceDir`), the run manifest, finding the newest run,
and the keys under which per-image probe scores are stored (`score_key` / `parse_score_key`).

Run directory:
    manifest.json        versions, argv, seeds, data root and fingerprint
    config.yaml          the resolved training config
    model.json           arch, input shape, classes, saved checkpoints, best epoch
    model.safetensors    final weights
    checkpoints/         epoch_0000.safetensors (initial weights, always), other saved epochs, best.safetensors
    metrics.jsonl        one line per epoch
    labels.csv           path,label,split[,clean_label]: the labels the model was trained on
    skipped_images.csv   images left out as unreadable (only with --on-bad-image skip)
    probe/               scores.csv, scores.json, oof.safetensors, layers.png[, dynamics.png]
    relabel/             labels.csv (ranked issues), cleaned_labels.csv|txt, summary.json[, review.html, review.png]
    retrain/             metrics.json, metrics.jsonl[, baseline_metrics.jsonl], model.safetensors"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np
import torch

from noisefix import __version__
from noisefix.errors import RunError
from noisefix.io.atomic import is_partial, read_json, safetensors_reason

RUNS_DIR = Path("runs")


def environment() -> dict[str, str]:
    import torchvision

    return {
        "noisefix": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


class _Name:
    """A file or folder below a directory dataclass's `path`, read like a property: `RunDir(p).manifest`."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    @overload
    def __get__(self, obj: None, owner: type) -> "_Name": ...

    @overload
    def __get__(self, obj: object, owner: type) -> Path: ...

    def __get__(self, obj, owner):
        return self if obj is None else obj.path.joinpath(*self.parts)


CHECKPOINTS = "checkpoints"        # a run's saved weights
EPOCH_LOG = "metrics.jsonl"        # one JSON line per epoch: a run's training, each retrain fit
WEIGHTS = "model.safetensors"      # final weights: of the run, of the retrained model
LABELS = "labels.csv"              # a run's labels; relabel's ranked issue list
CLEANED_LABELS = {"csv": "cleaned_labels.csv", "lines": "cleaned_labels.txt"}  # by the input's labels format


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (see the module docstring for the layout)."""

    path: Path

    manifest = _Name("manifest.json")
    config = _Name("config.yaml")
    model_json = _Name("model.json")
    weights = _Name(WEIGHTS)
    checkpoints = _Name(CHECKPOINTS)
    best_checkpoint = _Name(CHECKPOINTS, "best.safetensors")  # label-only early stop (model.json best_by)
    metrics = _Name(EPOCH_LOG)
    labels = _Name(LABELS)
    skipped = _Name("skipped_images.csv")  # images left out as unreadable (--on-bad-image skip)
    probe = _Name("probe")
    probe_clean = _Name("probe_clean")     # probes fitted on the clean labels (reproduce's true-label MASC)
    probe_cache = _Name("probe-cache")     # default parent of probe's on-disk activation caches
    relabel = _Name("relabel")
    retrain = _Name("retrain")

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:04d}.safetensors"

    def require(self) -> "RunDir":
        """Raise a clear RunError unless this is a complete training run."""
        if not self.path.is_dir():
            raise RunError(f"run directory not found: {self.path}; train one first with `noisefix train DATA`")
        for needed in (self.manifest, self.model_json, self.weights):
            if not needed.exists():
                raise RunError(f"{self.path} is not a complete run (missing {needed.name}); re-run `noisefix train`")
        return self


@dataclass(frozen=True)
class ProbeDir:
    """Files of a probe folder (RUN/probe, RUN/probe_clean, or the staged folder they are written in)."""

    path: Path

    scores_json = _Name("scores.json")     # the summary: rows, picks, model accuracies, layers, config
    scores_csv = _Name("scores.csv")
    oof = _Name("oof.safetensors")         # per-image scores under `score_key(...)` keys, plus folds and labels
    layers_png = _Name("layers.png")
    dynamics_png = _Name("dynamics.png")   # scores over the probed checkpoints (when several have epochs)


@dataclass(frozen=True)
class RelabelDir:
    """Files of RUN/relabel (or the staged folder it is written in)."""

    path: Path

    issues = _Name(LABELS)                 # every training image, most suspicious first
    summary = _Name("summary.json")
    review_html = _Name("review.html")     # gallery of the most suspicious images (ui/review.py)
    review_png = _Name("review.png")       # contact sheet of the first of them

    def cleaned(self, labels_format: str | None) -> Path:
        """The cleaned labels file, in the format of the labels it was made from (csv when from folders)."""
        return self.path / CLEANED_LABELS[labels_format or "csv"]


@dataclass(frozen=True)
class RetrainDir:
    """Files of RUN/retrain (or the staged folder it is written in)."""

    path: Path

    metrics = _Name("metrics.json")        # test accuracies before and after cleaning, the baseline, the gains
    log = _Name(EPOCH_LOG)
    baseline_log = _Name("baseline_metrics.jsonl")
    weights = _Name(WEIGHTS)


@dataclass(frozen=True)
class ReproduceDir:
    """Files of a `noisefix reproduce` output folder: the exported data, noisy labels, runs and the report."""

    path: Path

    data = _Name("data")
    report_md = _Name("report.md")
    report_json = _Name("report.json")
    report_png = _Name("report.png")

    def labels(self, name: str) -> Path:
        return self.path / "labels" / f"{name}.csv"

    def run(self, name: str) -> Path:
        return self.path / "runs" / name


class ScoreKey(NamedTuple):
    """What one entry of oof.safetensors (or of scores.json `n_components`) holds scores of."""

    checkpoint: str
    layer: str
    probe: str
    part: str | None = None  # oof (every training image) or test; None in n_components keys


def score_key(checkpoint: str, layer: str, probe: str, part: str | None = None) -> str:
    """"final|relu1|masc|oof": the key of one checkpoint x layer x probe's scores (without `part`: its
    n_components entry in scores.json)."""
    return "|".join((checkpoint, layer, probe) + ((part,) if part is not None else ()))


def parse_score_key(key: str) -> ScoreKey:
    """The inverse of `score_key`."""
    parts = key.split("|")
    if len(parts) not in (3, 4):
        raise RunError(f"{key!r} is not a probe score key (checkpoint|layer|probe[|part]); was it written by probe?")
    return ScoreKey(*parts)


def make_manifest(*, argv: list[str], seed: int, data_root: Path, labels_file: Path | None,
                  fingerprint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = {
        "run_id": uuid.uuid4().hex,  # also in model.json and the weights' metadata: one run's files belong together
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": environment(),
        "argv": list(argv),
        "seed": seed,
        "data_root": str(Path(data_root).resolve()),
        "labels_file": str(Path(labels_file).resolve()) if labels_file else None,
        "data_fingerprint": fingerprint,
    }
    manifest.update(extra or {})
    return manifest


def find_latest_run(*, runs_dir: Path = RUNS_DIR, data_root: Path | None = None, model: str | None = None,
                    stage: str | None = None) -> Path:
    """The newest complete run under `runs_dir`, for the same data (and model) when given.

    `stage` ("probe", "relabel") restricts to runs where that stage has written its outputs.
    """
    runs_dir = Path(runs_dir)
    candidates = []
    if runs_dir.is_dir():
        for manifest in runs_dir.glob("*/manifest.json"):
            run = manifest.parent
            if is_partial(run):
                continue
            try:
                info = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if data_root is not None and info.get("data_root") != str(Path(data_root).resolve()):
                continue
            if model is not None and info.get("model") != model:
                continue
            if stage is not None and not (run / stage).is_dir():
                continue
            candidates.append((manifest.stat().st_mtime, run))
    if not candidates:
        where = f" for data {data_root}" if data_root else ""
        need = f" with {stage} results" if stage else ""
        data = str(data_root) if data_root else "DATA"
        raise RunError(f"no run{need}{where} under {runs_dir}/; pass --run DIR, or make one: `noisefix clean {data}` "
                       f"(train, probe and relabel in one go) or `noisefix train {data} --model mlp`")
    return max(candidates)[1]


MAX_INPUT_VALUES = 2**26  # C*H*W of a model input above this is a damaged model.json, not a real image size


def _require(data: Any, schema: dict[str, tuple[type, ...]], path: Path) -> dict[str, Any]:
    """`data` as a dict with each key of `schema` of one of its types; RunError naming the file otherwise."""
    if not isinstance(data, dict):
        raise RunError(f"{path} holds a JSON {type(data).__name__}, not an object; it is damaged: restore it or "
                       "re-run `noisefix train --force`")
    for key, types in schema.items():
        if key not in data:
            raise RunError(f"{path} lacks the key {key!r}; it is damaged or from another tool: restore it or "
                           "re-run `noisefix train --force`")
        value = data[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RunError(f"{path}: {key!r} must be {names}, got {json.dumps(value)[:60]}; restore the file or "
                           "re-run `noisefix train --force`")
    return data


_MANIFEST_SCHEMA = {"data_root": (str,), "data_fingerprint": (str,), "labels_file": (str, type(None)),
                    "classes_file": (str, type(None))}
_MODEL_SCHEMA = {"arch": (str,), "in_shape": (list,), "num_classes": (int,), "classes": (list,),
                 "checkpoints": (list,), "final_epoch": (int,)}


def read_manifest(path: Path) -> dict[str, Any]:
    """manifest.json, schema-checked (RunError naming the file for a missing key or a wrong type)."""
    manifest = read_json(path)
    if isinstance(manifest, dict):
        manifest.setdefault("labels_file", None)
        manifest.setdefault("classes_file", None)
    return _require(manifest, _MANIFEST_SCHEMA, Path(path))


def read_model_info(path: Path) -> dict[str, Any]:
    """model.json, schema-checked: keys and types, a (C, H, W) input shape of a plausible size (checked before
    any model is built), `num_classes` >= 2 class names."""
    path = Path(path)
    info = _require(read_json(path), _MODEL_SCHEMA, path)
    shape = info["in_shape"]
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise RunError(f"{path}: in_shape must be three positive integers (C, H, W), got {json.dumps(shape)[:60]}; "
                       "restore the file or re-run `noisefix train --force`")
    if shape[0] * shape[1] * shape[2] > MAX_INPUT_VALUES:
        raise RunError(f"{path}: in_shape {'x'.join(map(str, shape))} is over {MAX_INPUT_VALUES:,} values per image; "
                       "the file is damaged: restore it or re-run `noisefix train --force`")
    classes, k = info["classes"], info["num_classes"]
    if k < 2 or len(classes) != k or not all(isinstance(c, str) for c in classes):
        raise RunError(f"{path}: needs num_classes >= 2 and that many class names, got {k} and {len(classes)}; "
                       "restore the file or re-run `noisefix train --force`")
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in info["checkpoints"]):
        raise RunError(f"{path}: checkpoints must be epoch numbers; restore the file or re-run `noisefix train --force`")
    return info


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file (RunError naming it when it is not a readable safetensors file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # SafetensorError, OSError, ...: truncated, garbage or a lying header
        raise RunError(f"{path} is not a readable safetensors file ({safetensors_reason(exc)}); it is damaged: "
                       "restore it or re-run `noisefix train --force`") from None


def verify_identity(run: RunDir, manifest: dict[str, Any], info: dict[str, Any]) -> None:
    """Check that the run's manifest, model.json, weights and labels.csv come from one training run.

    Train writes one run id into the manifest, model.json and the weights' metadata, and the sha256 of
    labels.csv into model.json; a file from another run or an edited labels.csv is a RunError. Runs written
    before run ids existed carry none and are only checked for readable weights."""
    meta = weights_metadata(run.weights)
    want = manifest.get("run_id")
    fix = "files of two runs were mixed: re-run `noisefix train --force` (or restore the run)"
    if info.get("run_id") != want:
        raise RunError(f"{run.model_json} belongs to run {info.get('run_id')} but {run.manifest} to run {want}; {fix}")
    if want is not None and meta.get("run_id") != want:
        raise RunError(f"{run.weights} belongs to run {meta.get('run_id')}, not to run {want} of {run.manifest}; {fix}")
    if info.get("labels_sha256") is not None and (not run.labels.is_file()
                                                  or file_sha256(run.labels) != info["labels_sha256"]):
        raise RunError(f"{run.labels} was changed or removed after training (it no longer matches model.json); "
                       "restore it, or re-run `noisefix train --force` with a --labels file instead")


def read_scores(path: Path) -> dict[str, Any]:
    """A probe folder's scores.json, schema-checked: an object whose "rows" are objects naming a checkpoint,
    a layer and a probe, with the ranking criterion (a number or null) in each."""
    path = Path(path)
    scores = _require(read_json(path), {"rows": (list,)}, path)
    criterion = scores.setdefault("criterion", "agreement")
    if not isinstance(criterion, str):
        raise RunError(f"{path}: 'criterion' must be a string; re-run `noisefix probe --force`")
    for row in scores["rows"]:
        _require(row, {"checkpoint": (str,), "layer": (str,), "probe": (str,), criterion: (int, float, type(None))},
                 path)
    return scores


def score_matrix(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    """The (N, K) float scores stored under `key` in an oof.safetensors file, checked to exist and fit."""
    if key not in tensors:
        raise RunError(f"{path} lacks the scores {key!r} that scores.json lists; re-run `noisefix probe --force`")
    mat = tensors[key].numpy()
    if mat.shape != tuple(shape) or not np.issubdtype(mat.dtype, np.floating):
        raise RunError(f"{path}: scores {key!r} have shape {mat.shape} ({mat.dtype}), expected {tuple(shape)} "
                       "floats; re-run `noisefix probe --force`")
    return mat
