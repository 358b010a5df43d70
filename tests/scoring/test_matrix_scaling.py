"""Matrix scaling (scoring.matrix_scaling) on synthetic log probabilities with a confident confusion."""

import numpy as np
import pytest

from noisefix.errors import DataError
from noisefix.scoring.matrix_scaling import fit_matrix_scaling


def confused(n, seed, K=4):
    """(n, K) log probabilities of a probe that is right and fairly sure, except that 20 % of class 0 it calls
    class 1 with high confidence; and the true classes."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, n)
    z = rng.normal(size=(n, K))
    z[np.arange(n), true] += 2.5
    swap = (true == 0) & (rng.random(n) < 0.2)
    z[np.flatnonzero(swap), 1] += 4.0
    return z - np.log(np.exp(z).sum(1, keepdims=True)), true


def log_loss(log_probs, labels):
    return -log_probs[np.arange(len(labels)), labels].mean()


def test_learns_a_confident_confusion_that_no_temperature_can():
    fit_lp, fit_y = confused(4000, 0)
    test_lp, test_y = confused(4000, 1)
    best_temperature = min(log_loss(np.log(np.exp(test_lp / t) / np.exp(test_lp / t).sum(1, keepdims=True)), test_y)
                           for t in np.linspace(0.5, 4, 36))
    scaling = fit_matrix_scaling(fit_lp, fit_y)
    calibrated = scaling.log_probs(test_lp)
    assert log_loss(calibrated, test_y) < best_temperature - 0.02
    called_one = test_lp.argmax(1) == 1
    share_zero = np.mean(test_y[called_one] == 0)                                       # 15 %
    assert np.exp(calibrated[called_one, 0]).mean() == pytest.approx(share_zero, abs=0.03)
    assert np.exp(test_lp[called_one, 0]).mean() < share_zero - 0.05                    # the probe's own: far lower
    np.testing.assert_allclose(np.exp(calibrated).sum(1), 1.0)


def test_few_clean_images_keep_the_map_near_its_start():
    lp, y = confused(40, 2)
    scaling = fit_matrix_scaling(lp, y, temperature=2.0)
    off = scaling.weight - np.diag(np.diag(scaling.weight))
    assert scaling.lam >= 1.0 and np.abs(off).max() < 0.1 and np.abs(scaling.bias).max() < 0.1


def test_bad_labels_are_one_line_errors():
    lp, y = confused(50, 3)
    with pytest.raises(DataError, match="labels in"):
        fit_matrix_scaling(lp, y + 4)
    with pytest.raises(DataError, match="at least 3 clean images"):
        fit_matrix_scaling(lp[:2], y[:2])
