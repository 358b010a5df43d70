"""The `layers` stage: the run's probe-able layers and, with memory, the probe's plan per layer."""

from noisefix.stages.layers import LayerListing, list_layers_of_run, mib


def test_lists_the_default_layers_with_shapes_and_dims(tiny_run):
    listing = list_layers_of_run(tiny_run)
    assert listing.columns == ["layer", "shape", "dim"] and listing.memory_note is None
    assert [r[0] for r in listing.rows] == listing.names and listing.names[0] == "x"
    assert all(isinstance(r[2], int) and r[2] > 0 for r in listing.rows)
    assert str(tiny_run.run.path) in listing.title and "mlp" in listing.title


def test_memory_adds_the_plan_columns_and_the_memory_model(tiny_run):
    listing = list_layers_of_run(tiny_run, memory=True, folds=3, probes=("masc", "ncm"))
    assert listing.columns == ["layer", "dim", "probed", "route", "stats", "acts", "work", "peak"]
    assert "MiB" in listing.title
    assert all(len(r) == len(listing.columns) for r in listing.rows) and listing.names[0] == "x"
    assert {r[3] for r in listing.rows} <= {"gram", "moments", "sums"}
    assert "F=3 folds" in listing.memory_note and "K=3 classes" in listing.memory_note
    assert list_layers_of_run(tiny_run, all_nodes=True).names[:1] == ["x"]


def test_example_spreads_the_layers_and_keeps_the_last():
    listing = LayerListing("t", [], [], [f"l{i}" for i in range(7)])
    assert listing.example(4) == ["l0", "l2", "l4", "l6"]
    assert LayerListing("t", [], [], ["a", "b"]).example(4) == ["a", "b"]


def test_mib_keeps_a_decimal_below_100():
    assert mib(2**20) == "1.0" and mib(3 * 2**30) == "3,072"
