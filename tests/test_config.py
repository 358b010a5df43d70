import re

import pytest

from noisefix.config import (
    ProbeConfig,
    RelabelConfig,
    RetrainConfig,
    TrainConfig,
    dump_yaml,
    from_dict,
    load_yaml,
)
from noisefix.errors import ConfigError
from noisefix.probes import PROBES


def test_paper_recipes_per_model():
    assert TrainConfig.for_model("mlp").optimizer == "sgd"
    assert TrainConfig.for_model("mlp").batch_size == 32
    cnn = TrainConfig.for_model("cnn")
    assert (cnn.optimizer, cnn.lr) == ("adam", 2e-4)
    assert TrainConfig.for_model("alexnet").lr == 1e-4
    assert TrainConfig.for_model("mlp", lr=0.5, optimizer=None).lr == 0.5  # None means "keep the recipe"


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(target_acc=1.5), dict(optimizer="rmsprop"), dict(lr=0),
                                 dict(batch_size=0), dict(device="tpu")])
def test_train_config_rejects_impossible_values(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_other_configs_validate():
    with pytest.raises(ConfigError, match="folds"):
        ProbeConfig(folds=1)
    with pytest.raises(ConfigError, match="mode"):
        RelabelConfig(mode="delete")
    with pytest.raises(ConfigError, match="--from"):
        RetrainConfig(start="midway")


def test_yaml_round_trip_and_unknown_keys(tmp_path):
    cfg = TrainConfig.for_model("cnn", save_epochs=(4, 1, 2, 2))
    assert cfg.save_epochs == (1, 2, 4)
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml({"train": cfg}))
    data = load_yaml(path)
    assert data["schema_version"] == 1
    assert from_dict(TrainConfig, data["train"]) == cfg
    with pytest.raises(ConfigError, match="unknown key.*lerning_rate"):
        from_dict(TrainConfig, {"lerning_rate": 1.0})


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(bad)
    code = tmp_path / "code.yaml"
    code.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError):
        load_yaml(code)


@pytest.mark.parametrize("bad, message", [
    (dict(probes=("masc", "pca")), r"unknown probe\(s\) 'pca'; choose from " + re.escape(", ".join(PROBES))),
    (dict(pool="max:2"), "bad pool spec 'max:2'"),
    (dict(cache="sometimes"), "cache must be one of auto, always, never"),
    (dict(init_probes=("pca",)), r"unknown probe\(s\) 'pca'"),
    (dict(init_probes=()), "init_probes: give at least one probe or None"),
])
def test_probe_config_validates_names_pool_and_cache(bad, message):
    from noisefix.errors import NoisefixError

    with pytest.raises(NoisefixError, match=message):
        ProbeConfig(**bad)


def test_on_bad_image_is_validated_in_the_train_config():
    assert TrainConfig(on_bad_image="skip").on_bad_image == "skip"
    with pytest.raises(ConfigError, match="--on-bad-image must be fail or skip"):
        TrainConfig(on_bad_image="ignore")
