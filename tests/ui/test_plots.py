"""probe's plots: every probe scanned, the pick marked, references only when known."""

from PIL import Image

from noisefix.ui.plots import plot_dynamics, plot_layers, reference_metric, y_label

EPOCHS = {"init": 0, "1": 1, "final": 4}


def _rows(test: bool):
    rows = [dict(checkpoint=c, layer=layer, probe=p, agreement=0.5 + 0.1 * i,
                 holdout_agreement=0.4 + 0.1 * i + j / 20,
                 clean_acc=None, test_acc=0.8 if test else None, pick="")
            for j, c in enumerate(EPOCHS) for p in ("ncm", "masc") for i, layer in enumerate(("x", "relu1", "fc"))]
    max(rows, key=lambda r: r["holdout_agreement"])["pick"] = "best"
    return rows


def test_plots_are_written_with_and_without_a_test_split(tmp_path):
    for test in (False, True):
        rows = _rows(test)
        model = {c: dict(agreement=0.9, holdout_agreement=0.3, clean_acc=None, test_acc=0.7 if test else None)
                 for c in EPOCHS}
        plot_dynamics(tmp_path / f"dyn{test}.png", rows, epochs=EPOCHS, criterion="holdout_agreement",
                      model_acc=model)
        plot_layers(tmp_path / f"lay{test}.png", [r for r in rows if r["checkpoint"] == "final"],
                    criterion="holdout_agreement", model_acc=model["final"], title="t")
        for name in (f"dyn{test}.png", f"lay{test}.png"):
            assert Image.open(tmp_path / name).size[0] > 500


def test_axis_labels_say_what_is_drawn():
    assert reference_metric(_rows(False)) is None and reference_metric(_rows(True)) == "test_acc"
    assert y_label("holdout_agreement", None) == "held-out agreement with the given labels (%)"
    assert "dashed: test accuracy" in y_label("holdout_agreement", "test_acc")
