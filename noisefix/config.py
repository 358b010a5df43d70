"""Frozen configuration dataclasses for every stage, with strict YAML/dict round-tripping.

A config is built from CLI options (cli.py) or a recipe file, validated once here, and written resolved into
the run directory (`config.yaml`) so a run can be reproduced or resumed from it. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from noisefix.errors import ConfigError

SCHEMA_VERSION = 1

# The paper's training recipes (Ketha & Ramaswamy, arXiv 2501.14687: optimizer, learning rate, momentum and
# batch size per architecture, no augmentation, no weight decay); `train` uses them unless an option overrides one.
PAPER_TRAINING = {
    "mlp": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32},
    "cnn": {"optimizer": "adam", "lr": 2e-4, "batch_size": 32},
    "alexnet": {"optimizer": "adam", "lr": 1e-4, "batch_size": 32},
    "resnet18": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32},
}
DEFAULT_TRAINING = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32}


@dataclass(frozen=True)
class TrainConfig:
    """How `train` (and `retrain`) fit a model; the paper trains until the noisy labels are memorized."""

    model: str = "mlp"                   # architecture: a paper variant or a torchvision classifier name
    epochs: int = 500                    # epoch cap
    target_acc: float = 1.0              # stop when the running train accuracy on the given labels reaches this
    optimizer: str = "sgd"               # sgd or adam
    lr: float = 1e-3                     # learning rate
    momentum: float = 0.9                # SGD momentum (unused by adam)
    batch_size: int = 32                 # global batch size (split over ranks under torchrun)
    weight_decay: float = 0.0            # L2 penalty (the paper uses none)
    seed: int = 0                        # seeds torch, the shuffling and the hold-out draw
    device: str = "auto"                 # auto (CUDA when present), cpu, cuda or cuda:N
    save_every: int = 0                  # also keep a checkpoint every E epochs (0: only the listed ones)
    save_epochs: tuple[int, ...] = ()    # epochs whose checkpoints are kept (sorted, deduplicated)
    bf16: bool = True                    # bfloat16 autocast on CUDA
    holdout: float = 0.1                 # stratified fraction of training images never trained on
    on_bad_image: str = "fail"           # fail on an unreadable image, or skip it (listed in the run)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(0.0 < self.target_acc <= 1.0, f"target accuracy must be in (0, 1], got {self.target_acc}")
        _check(self.optimizer in ("sgd", "adam"), f"optimizer must be sgd or adam, got {self.optimizer!r}")
        _check(math.isfinite(self.lr) and self.lr > 0, f"learning rate must be a finite number > 0, got {self.lr}")
        check_seed(self.seed)
        _check(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        _check(self.save_every >= 0, f"save-every must be >= 0, got {self.save_every}")
        _check(0.0 <= self.holdout < 0.5, f"holdout must be in [0, 0.5), got {self.holdout}")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"device must be auto, cpu or cuda, got {self.device!r}")
        _check(self.on_bad_image in ("fail", "skip"), f"--on-bad-image must be fail or skip, got {self.on_bad_image!r}")
        object.__setattr__(self, "save_epochs", tuple(sorted(set(int(e) for e in self.save_epochs))))

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> "TrainConfig":
        """The paper's recipe for `model`, with the non-None `overrides` applied."""
        base = dict(PAPER_TRAINING.get(model, DEFAULT_TRAINING))
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, **base)


@dataclass(frozen=True)
class ImageConfig:
    """How the images become model inputs (noisefix/data/transforms.py) and how they are read."""

    image_size: str | int | None = None  # S or HxW; None: the weights' or model's size, else the data's median
    channels: str | int = "auto"         # auto (1 if nearly all images are grayscale; RGB weights: 3), 1 or 3
    normalize: bool = True               # per-dataset mean/std for models trained here (pretrained: their own)
    workers: int | None = None           # DataLoader processes decoding images (None: min(4, CPUs - 1); 0: none)

    def __post_init__(self) -> None:
        from noisefix.data.transforms import parse_channels, parse_size

        parse_size(self.image_size)
        parse_channels(self.channels)
        _check(self.workers is None or (isinstance(self.workers, int) and self.workers >= 0),
               f"workers must be 0 or more, got {self.workers!r}")


@dataclass(frozen=True)
class ProbeConfig:
    """How `probe` scores layers: which layers, probes, folds, variance threshold, pooling and activation cache."""

    layers: str = "default"              # default, all, or comma-separated node names
    probes: tuple[str, ...] = ("masc", "ncm", "logreg", "velpic")  # names from noisefix.probes.PROBES
    folds: int = 5                       # cross-fitting folds
    variance: float = 0.99               # MASC explained-variance threshold (>= 1: a fixed component count)
    pool: str = "auto"                   # none, avg:S or auto (see nn.extract.parse_pool)
    checkpoints: tuple[str, ...] = ("final",)  # final, best, init, epoch numbers, or all
    batch_size: int | None = None        # images per extraction batch (None: scoring.plan.extraction_batch,
    #                                      256-4096 by the size of the layers' activations)
    seed: int = 0                        # seeds the folds and the probes
    device: str = "auto"                 # auto (CUDA when present), cpu, cuda or cuda:N
    cache: str = "auto"                  # on-disk activation cache: auto (when over the RAM budget), always, never
    workers: int | None = None           # DataLoader processes decoding images (None: min(4, CPUs - 1); 0: none)
    screen: int = 0                      # > 0: cross-fit the d^2 probes (masc, velpic, logreg) only on the N layers
    #                                      per checkpoint where their quick fit agrees best with held-out labels
    #                                      (stages/probe.py); the sums-only probe (ncm) on every layer
    init_probes: tuple[str, ...] | None = None  # probes at an untrained init checkpoint, a baseline only (None: probes)

    def __post_init__(self) -> None:
        from noisefix.nn.extract import parse_pool
        from noisefix.probes import PROBES, screen_probes
        from noisefix.scoring.plan import check_cache_mode

        _check(self.folds >= 2, f"folds must be >= 2 (cross-fitting needs held-out folds), got {self.folds}")
        _check(self.variance > 0, f"variance must be in (0, 1) or a component count >= 1, got {self.variance}")
        _check(len(self.probes) > 0, "give at least one probe, e.g. --probes masc")
        unknown = [p for p in (*self.probes, *(self.init_probes or ())) if p not in PROBES]
        _check(not unknown, f"unknown probe(s) {', '.join(map(repr, unknown))}; choose from {', '.join(PROBES)}")
        _check(self.init_probes is None or len(self.init_probes) > 0, "init_probes: give at least one probe or None")
        _check(self.batch_size is None or self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        check_seed(self.seed)
        parse_pool(self.pool)
        check_cache_mode(self.cache)
        _check(self.workers is None or self.workers >= 0, f"workers must be 0 or more, got {self.workers!r}")
        _check(isinstance(self.screen, int) and self.screen >= 0, f"screen must be an integer >= 0, got {self.screen!r}")
        _check(not self.screen or screen_probes(self.probes)[0], f"--screen {self.screen} needs a screening probe: "
               "add ncm to the probes (e.g. --probes masc,ncm) or pass --screen 0")


@dataclass(frozen=True)
class RelabelConfig:
    """How `relabel` turns cross-fitted probe scores into suggested labels and issues."""

    layer: str = "best"                  # best (the label-only pick) or a probed layer name
    probe: str | None = None             # restrict to one probe (None: any)
    checkpoint: str | None = None        # restrict to one probed checkpoint (None: any)
    min_margin: float = 0.0              # flag only when the suggested class beats the given one by this margin
    mode: str = "relabel"                # relabel (replace flagged labels) or prune (drop flagged images)
    ensemble: int = 3                    # average the scores of the N best layer x probe rows
    flag: str = "noise-aware"            # noise-aware (about the estimated number of wrong labels) or disagree
    max_issues: int | float | None = None  # flag at most this many images: a count, or a fraction (< 1) of them
    min_suggest: float = 0.5             # suggest a label only at this posterior; weaker flags are left for review
    review: int = 100                    # review.html / review.png show the N most suspicious images (0: none)
    calibrate: str = "test"              # test (on the clean test split when there is one) or given (EM only)

    def __post_init__(self) -> None:
        from noisefix.scoring.issues import FLAG_RULES, resolve_max_issues

        _check(self.calibrate in ("test", "given"), f"--calibrate must be test or given, got {self.calibrate!r}")
        _check(self.mode in ("relabel", "prune"), f"mode must be relabel or prune, got {self.mode!r}")
        _check(self.min_margin >= 0, f"min-margin must be >= 0, got {self.min_margin}")
        _check(self.ensemble >= 1, f"ensemble must be >= 1, got {self.ensemble}")
        _check(self.flag in FLAG_RULES, f"flag must be one of {', '.join(FLAG_RULES)}, got {self.flag!r}")
        _check(0 <= self.min_suggest <= 1, f"min-suggest must be in [0, 1], got {self.min_suggest}")
        _check(self.review >= 0, f"--review must be >= 0 (0: no review page), got {self.review}")
        resolve_max_issues(self.max_issues, 1)  # a count >= 0 or a fraction in (0, 1)


@dataclass(frozen=True)
class RetrainConfig:
    """How `retrain` refits the run's architecture on the cleaned labels."""

    epochs: int | None = None            # epoch cap (None: the run's)
    start: str = "scratch"               # scratch or memorized (the run's final weights)
    patience: int = 10                   # stop after this many epochs without held-out improvement
    holdout: float = 0.1                 # stratified fraction of the cleaned labels held out for early stopping
    seed: int = 0                        # seeds the model, the shuffling and the hold-out draw
    device: str = "auto"                 # auto (CUDA when present), cpu, cuda or cuda:N
    baseline: bool = True                # also retrain on the given labels, the baseline of the gain

    def __post_init__(self) -> None:
        _check(self.start in ("scratch", "memorized"), f"--from must be scratch or memorized, got {self.start!r}")
        _check(self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(0 < self.holdout < 0.5, f"holdout fraction must be in (0, 0.5), got {self.holdout}")
        _check(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        check_seed(self.seed)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


MAX_SEED = 2**32 - 1  # numpy's SeedSequence and torch.manual_seed both take any seed in [0, 2**32)


def check_seed(seed: Any, what: str = "seed") -> int:
    """`seed` if it is an integer in [0, 2**32), else a ConfigError naming it."""
    _check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED,
           f"{what} must be an integer from 0 to {MAX_SEED}, got {seed!r}; pass e.g. --seed 0")
    return seed


def _within(value: Any, low: float, high: float) -> bool:
    """Whether `value` is a number (not a bool) in [low, high]."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether `value` (lists already turned into tuples) has the annotated type `tp` of a config field; an int
    passes for a float, a bool for nothing but bool, and floats must be finite."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is Any:
        return True
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(args[0])}"
    return {type(None): "null", float: "a finite number"}.get(tp, getattr(tp, "__name__", str(tp)))


def _check_types(cls: type, kwargs: dict[str, Any], where: str) -> None:
    """ConfigError naming the first key whose value does not have its field's annotated type."""
    hints = typing.get_type_hints(cls)
    for key, value in kwargs.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{where}: {key} must be {_type_name(hints[key])}, got {value!r:.60}; fix the value")


T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-friendly dict of a config dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        out[f.name] = value
    return out


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build `cls` from a dict, refusing unknown keys (naming them and the valid ones)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    for key in ("name", "dataset", "model"):
        if key in names and key not in kwargs and names[key].default is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {key!r}")
    _check_types(cls, kwargs, where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ConfigError as exc:  # a value checked by the dataclass itself: say which file it came from
        raise ConfigError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None


def dump_yaml(sections: dict[str, Any]) -> str:
    """YAML text for named config sections, with the schema version first."""
    doc = {"schema_version": SCHEMA_VERSION}
    doc.update({name: to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg for name, cfg in sections.items()})
    return yaml.safe_dump(doc, sort_keys=False)


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file safely (never yaml.load); errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return data


@dataclass(frozen=True)
class QuickConfig:
    """A recipe's `quick:` block: a data subset and an epoch cap that finish on a 2-core CPU in minutes."""

    train_subset: int | None = None      # keep N training images (stratified)
    test_subset: int | None = None       # keep N test images (stratified)
    epochs: int | None = None            # epoch cap
    lr: float | None = None              # a larger step, so the small subset is memorized within the epoch cap
    corruptions: tuple[float, ...] | None = None  # only these corruption degrees


@dataclass(frozen=True)
class Recipe:
    """One paper benchmark: dataset x model x corruption degrees, the stage configs and the paper's numbers.

    `expected` holds the paper's figures in percent: `model_test_acc` and `masc_best`, each a mapping from
    corruption degree to accuracy, plus `source` (where they come from).
    """

    name: str                            # the recipe's name (output folder reproduce/<name>)
    dataset: str                         # a built-in dataset (noisefix.data.builtin)
    model: str                           # architecture; must equal train.model
    corruptions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # label corruption degrees p
    noise: str = "symmetric"             # symmetric (the paper's) or pairflip
    seeds: int = 1                       # seeds per degree
    train_subset: int | None = None      # keep N training images (None: all)
    test_subset: int | None = None       # keep N test images (None: all)
    description: str = ""                # one paragraph for the report
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)        # the train stage
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)        # the probe stage
    relabel: RelabelConfig = dataclasses.field(default_factory=RelabelConfig)  # the relabel stage
    retrain: RetrainConfig = dataclasses.field(default_factory=RetrainConfig)  # the retrain stage
    quick: QuickConfig = dataclasses.field(default_factory=QuickConfig)        # the --quick variant
    expected: dict = dataclasses.field(default_factory=dict)  # the paper's figures (see above)

    def __post_init__(self) -> None:
        from noisefix.data.builtin import BUILTIN

        _check(isinstance(self.name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name) is not None,
               f"recipe name {self.name!r} must be a plain folder name (letters, digits, _ . -); it names "
               "reproduce/<name>")
        _check(self.dataset in BUILTIN, f"recipe {self.name}: unknown dataset {self.dataset!r}; choose from "
               f"{', '.join(BUILTIN)}")
        _check(all(0.0 <= p <= 1.0 for p in self.corruptions),
               f"recipe {self.name}: corruption degrees must be in [0, 1], got {list(self.corruptions)}")
        _check(self.seeds >= 1, f"recipe {self.name}: seeds must be >= 1, got {self.seeds}")
        _check(self.noise in ("symmetric", "pairflip"), f"recipe {self.name}: noise must be symmetric or pairflip")
        _check(self.train.model == self.model,
               f"recipe {self.name}: train.model {self.train.model!r} differs from model {self.model!r}")
        for key in self.expected:
            _check(key in ("source", "model_test_acc", "masc_best"),
                   f"recipe {self.name}: unknown key expected.{key}; valid: source, model_test_acc, masc_best")
        for key in ("model_test_acc", "masc_best"):
            table = self.expected.get(key, {})
            _check(isinstance(table, dict), f"recipe {self.name}: expected.{key} must map degree -> percent")
            for degree, acc in table.items():
                _check(_within(degree, 0.0, 1.0) and _within(acc, 0.0, 100.0),
                       f"recipe {self.name}: expected.{key} needs degree -> percent, got {degree!r}: {acc!r}")

    def quick_variant(self) -> "Recipe":
        """This recipe with its `quick:` block applied."""
        q = self.quick
        train = dataclasses.replace(self.train, epochs=q.epochs or self.train.epochs, lr=q.lr or self.train.lr)
        return dataclasses.replace(
            self, train=train, train_subset=q.train_subset or self.train_subset,
            test_subset=q.test_subset or self.test_subset, corruptions=q.corruptions or self.corruptions)


_SECTIONS = {"train": TrainConfig, "probe": ProbeConfig, "relabel": RelabelConfig, "retrain": RetrainConfig,
             "quick": QuickConfig}


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe YAML; unknown keys and impossible values are ConfigErrors naming the file."""
    data = load_yaml(path)
    data.pop("schema_version", None)
    where = str(path)
    sections = {}
    model = data.get("model")
    _check(isinstance(model, str), f"{where}: model must be a string (e.g. mlp), got {model!r:.60}")
    for key, cls in _SECTIONS.items():
        raw = data.pop(key, {}) or {}
        _check(isinstance(raw, dict), f"{where}: {key} must be a mapping of {key} options, got {raw!r:.60}")
        if key == "train":
            raw = {**PAPER_TRAINING.get(model, DEFAULT_TRAINING), "model": model, **raw}
        sections[key] = from_dict(cls, raw, where=f"{where}: {key}")
    if isinstance(data.get("expected"), dict):
        data["expected"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data["expected"].items()}
    recipe = from_dict(Recipe, {**data, **sections}, where=where)
    return recipe


def load_section(path: Path, key: str, cls: type[T]) -> T:
    """Section `key` of a config YAML written by a stage (e.g. a run's config.yaml `train`), built and type-
    checked as `cls`; a missing section is a ConfigError naming the file."""
    data = load_yaml(path)
    _check(key in data, f"{path} has no {key!r} section; the file is damaged: restore it or re-run the stage "
           "that wrote it")
    return from_dict(cls, data[key], where=f"{path}: {key}")
