from pathlib import Path

from noisefix.stages.backbone import untrained_probe_error


def test_untrained_probe_error_offers_default_weights_only_for_torchvision_models():
    paper = str(untrained_probe_error(Path("data"), "cnn"))
    assert "DEFAULT" not in paper and "--weights FILE" in paper and "noisefix clean data --model cnn" in paper
    assert "--weights DEFAULT (torchvision's pretrained resnet18)" in str(untrained_probe_error(Path("data"), "resnet18"))
