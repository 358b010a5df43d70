"""Probes: classifiers fitted on one layer's activations (arrays in, arrays out, no I/O).

Every probe is a `Probe` (probes/base.py): `fit(X, y, *, num_classes=None)`, `decision_function(X) -> (N, K)`
scores (higher = more likely), `predict(X)`, `ranking_scores(X)` (what cross-fitting stores) and capability
flags: the `fits_from_moments` ones (masc, ncm, velpic) also `fit_moments(ClassMoments)`, the `gram_route`
ones (masc, velpic) `fit_by_class(blocks)`.
"""

from __future__ import annotations

from noisefix.errors import ConfigError
from noisefix.probes.base import Probe
from noisefix.probes.linear import LogRegProbe
from noisefix.probes.masc import MASC, ClassBlock
from noisefix.probes.ncm import NCM
from noisefix.probes.stats import ClassMoments, ClassStats
from noisefix.probes.velpic import VeLPIC

PROBES: dict[str, type[Probe]] = {"masc": MASC, "ncm": NCM, "logreg": LogRegProbe, "velpic": VeLPIC}

__all__ = ["PROBES", "Probe", "probe_class", "make_probe", "screen_probes", "MASC", "NCM", "LogRegProbe", "VeLPIC",
           "ClassBlock", "ClassMoments", "ClassStats"]


def probe_class(name: str) -> type[Probe]:
    """The probe class of a registry name, e.g. probe_class("masc") is MASC; ConfigError for an unknown name."""
    if name not in PROBES:
        raise ConfigError(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
    return PROBES[name]


def make_probe(name: str, **params) -> Probe:
    """A new, unfitted probe by registry name, e.g. make_probe("masc", variance=0.95)."""
    cls = probe_class(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise ConfigError(f"bad options for probe {name!r}: {err}") from None


def screen_probes(probes) -> tuple[list[str], list[str]]:
    """(screening probes, the others): the probes fitted from class sums alone (no d^2 moments: ncm) screen the
    layers for the others (`ProbeConfig.screen`)."""
    cheap = [p for p in probes if probe_class(p).fits_from_moments and not probe_class(p).uses_second_moments]
    return cheap, [p for p in probes if p not in cheap]
