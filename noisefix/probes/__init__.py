"""Probes: classifiers fitted on one layer's activations (arrays in, arrays out, no I/O).

Every probe has `fit(X, y, *, num_classes=None)`, `decision_function(X) -> (N, K)` scores (higher = more
likely) and `predict(X)`; the statistics-based ones (masc, ncm, velpic) also `fit_moments(ClassMoments)`.
"""

from __future__ import annotations

from noisefix.errors import ConfigError
from noisefix.probes.linear import LogRegProbe
from noisefix.probes.masc import MASC
from noisefix.probes.ncm import NCM
from noisefix.probes.stats import ClassMoments, ClassStats
from noisefix.probes.velpic import VeLPIC

PROBES = {"masc": MASC, "ncm": NCM, "logreg": LogRegProbe, "velpic": VeLPIC}

__all__ = ["PROBES", "make_probe", "MASC", "NCM", "LogRegProbe", "VeLPIC", "ClassMoments", "ClassStats"]


def make_probe(name: str, **params):
    """A new, unfitted probe by registry name, e.g. make_probe("masc", variance=0.95)."""
    if name not in PROBES:
        raise ConfigError(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
    try:
        return PROBES[name](**params)
    except TypeError as err:
        raise ConfigError(f"bad options for probe {name!r}: {err}") from None
