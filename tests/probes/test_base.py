"""The probe base class: fitted and feature-count checks, predict through classes_, parameters, flags."""

import numpy as np
import pytest
import torch

from noisefix.errors import ConfigError, ProbeError
from noisefix.probes import MASC, NCM, PROBES, ClassBlock, LogRegProbe, Probe, VeLPIC, make_probe, probe_class


def _data(n=120, K=3, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    return (3 * rng.standard_normal((K, d))[y] + rng.standard_normal((n, d))).astype(np.float32), y


@pytest.mark.parametrize("name", list(PROBES))
def test_unfitted_probe_is_a_probe_error(name):
    probe = make_probe(name)
    assert isinstance(probe, Probe)
    X = np.ones((2, 5), dtype=np.float32)
    for method in ("decision_function", "predict", "ranking_scores"):
        with pytest.raises(ProbeError, match=rf"{type(probe).__name__} is not fitted yet; call fit\(X, y\) first"):
            getattr(probe, method)(X)


@pytest.mark.parametrize("name", list(PROBES))
def test_predict_and_feature_check_come_from_the_base(name):
    X, y = _data()
    probe = make_probe(name).fit(X, y)
    assert type(probe).predict is Probe.predict
    np.testing.assert_array_equal(probe.predict(X), probe.classes_[np.argmax(probe.decision_function(X), axis=1)])
    with pytest.raises(ProbeError, match=rf"{type(probe).__name__} was fitted on 5 features, got 4"):
        probe.predict(X[:, :4])


def test_init_only_stores_parameters():
    assert MASC(variance=-1).get_params() == {"variance": -1, "device": None}       # validated in fit, not here
    assert LogRegProbe(C=0).get_params() == {"C": 0, "max_iter": 100, "seed": 0, "device": None}
    assert NCM().get_params() == {} and VeLPIC.param_names() == []
    with pytest.raises(ConfigError, match="unknown probe 'svm'; choose from masc, ncm, logreg, velpic"):
        probe_class("svm")


def test_capability_flags():
    flags = {name: (cls.fits_from_moments, cls.uses_second_moments, cls.gram_route) for name, cls in PROBES.items()}
    assert flags == {"masc": (True, True, True), "ncm": (True, False, False), "logreg": (False, False, False),
                     "velpic": (True, True, True)}


@pytest.mark.parametrize("cls", [MASC, VeLPIC])
def test_fit_by_class_equals_fit(cls):
    X, y = _data(n=60, d=30, seed=1)                                          # classes of ~20 < d: Gram route
    blocks = [ClassBlock(torch.from_numpy(X[y == c]).double()) for c in range(3)]
    Xc = torch.from_numpy(X[y == 1]).double()
    blocks[1] = ClassBlock(Xc, Xc @ Xc.T)                                     # a Gram matrix given for one class
    a = cls().fit(X, y)
    b = cls().fit_by_class(iter(blocks), total_sum=torch.from_numpy(X).double().sum(0))
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-5)
    np.testing.assert_array_equal(a.class_counts_, b.class_counts_)


def test_fit_by_class_guards():
    X, y = _data(d=6)
    with pytest.raises(ProbeError, match="same d"):
        MASC().fit_by_class([(torch.ones(2, 6), None), (torch.ones(2, 5), None)])
    with pytest.raises(ProbeError, match="NaN"):
        MASC().fit_by_class([(torch.tensor([[float("nan"), 1.0]]), None)])
    with pytest.raises(ProbeError, match="total_sum"):
        VeLPIC().fit_by_class([(torch.ones(2, 6), None)])
    with pytest.raises(ProbeError, match="variance"):
        MASC(variance=0).fit_by_class([(torch.ones(2, 6), None)])
