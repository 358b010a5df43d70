"""Frozen configuration dataclasses for every stage, with strict YAML/dict round-tripping.

A config is built from CLI options (cli.py) or a recipe file, validated once here, and written resolved into
the run directory (`config.yaml`) so a run can be reproduced or resumed from it. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from noisefix.errors import ConfigError

SCHEMA_VERSION = 1

# The paper's training recipes (DESIGN.md section 6); `train` uses them unless an option overrides one.
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

    model: str = "mlp"
    epochs: int = 500
    target_acc: float = 1.0
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    save_every: int = 0
    save_epochs: tuple[int, ...] = ()
    bf16: bool = True
    holdout: float = 0.1

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(0.0 < self.target_acc <= 1.0, f"target accuracy must be in (0, 1], got {self.target_acc}")
        _check(self.optimizer in ("sgd", "adam"), f"optimizer must be sgd or adam, got {self.optimizer!r}")
        _check(self.lr > 0, f"learning rate must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        _check(self.save_every >= 0, f"save-every must be >= 0, got {self.save_every}")
        _check(0.0 <= self.holdout < 0.5, f"holdout must be in [0, 0.5), got {self.holdout}")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"device must be auto, cpu or cuda, got {self.device!r}")
        object.__setattr__(self, "save_epochs", tuple(sorted(set(int(e) for e in self.save_epochs))))

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> "TrainConfig":
        """The paper's recipe for `model`, with the non-None `overrides` applied."""
        base = dict(PAPER_TRAINING.get(model, DEFAULT_TRAINING))
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, **base)


@dataclass(frozen=True)
class ProbeConfig:
    """How `probe` scores layers: which layers, probes, folds, variance threshold and pooling."""

    layers: str = "default"
    probes: tuple[str, ...] = ("masc", "ncm", "logreg", "velpic")
    folds: int = 5
    variance: float = 0.99
    pool: str = "auto"
    checkpoints: tuple[str, ...] = ("final",)
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _check(self.folds >= 2, f"folds must be >= 2 (cross-fitting needs held-out folds), got {self.folds}")
        _check(self.variance > 0, f"variance must be in (0, 1) or a component count >= 1, got {self.variance}")
        _check(len(self.probes) > 0, "give at least one probe, e.g. --probes masc")
        _check(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class RelabelConfig:
    """How `relabel` turns cross-fitted probe scores into suggested labels and issues."""

    layer: str = "best"
    probe: str | None = None
    checkpoint: str | None = None
    min_margin: float = 0.0
    mode: str = "relabel"
    ensemble: int = 3

    def __post_init__(self) -> None:
        _check(self.mode in ("relabel", "prune"), f"mode must be relabel or prune, got {self.mode!r}")
        _check(self.min_margin >= 0, f"min-margin must be >= 0, got {self.min_margin}")
        _check(self.ensemble >= 1, f"ensemble must be >= 1, got {self.ensemble}")


@dataclass(frozen=True)
class RetrainConfig:
    """How `retrain` refits the run's architecture on the cleaned labels."""

    epochs: int | None = None
    start: str = "scratch"
    patience: int = 10
    holdout: float = 0.1
    seed: int = 0
    device: str = "auto"
    baseline: bool = True

    def __post_init__(self) -> None:
        _check(self.start in ("scratch", "memorized"), f"--from must be scratch or memorized, got {self.start!r}")
        _check(self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(0 < self.holdout < 0.5, f"holdout fraction must be in (0, 0.5), got {self.holdout}")
        _check(self.patience >= 1, f"patience must be >= 1, got {self.patience}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


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
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


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

    train_subset: int | None = None
    test_subset: int | None = None
    epochs: int | None = None
    lr: float | None = None          # a larger step, so the small subset is memorized within the epoch cap
    corruptions: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Recipe:
    """One paper benchmark: dataset x model x corruption degrees, the stage configs and the paper's numbers.

    `expected` holds the paper's figures in percent: `model_test_acc` and `masc_best`, each a mapping from
    corruption degree to accuracy, plus `source` (where they come from).
    """

    name: str
    dataset: str
    model: str
    corruptions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    noise: str = "symmetric"
    seeds: int = 1
    train_subset: int | None = None
    test_subset: int | None = None
    description: str = ""
    train: TrainConfig = TrainConfig()
    probe: ProbeConfig = ProbeConfig()
    relabel: RelabelConfig = RelabelConfig()
    retrain: RetrainConfig = RetrainConfig()
    quick: QuickConfig = QuickConfig()
    expected: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
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
            for degree, acc in dict(self.expected.get(key, {})).items():
                _check(0.0 <= float(degree) <= 1.0 and 0.0 <= float(acc) <= 100.0,
                       f"recipe {self.name}: expected.{key} needs degree -> percent, got {degree}: {acc}")

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
    for key, cls in _SECTIONS.items():
        raw = data.pop(key, {}) or {}
        if key == "train":
            raw = {**PAPER_TRAINING.get(data.get("model", ""), DEFAULT_TRAINING), "model": data.get("model"), **raw}
        sections[key] = from_dict(cls, raw, where=f"{where}: {key}")
    if isinstance(data.get("expected"), dict):
        data["expected"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data["expected"].items()}
    recipe = from_dict(Recipe, {**data, **sections}, where=where)
    return recipe
