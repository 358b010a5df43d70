"""The public library API (`import noisefix`) from a notebook's point of view: arrays in, arrays out."""

import numpy as np
from sklearn.datasets import load_digits

import noisefix


def test_all_names_exist():
    assert all(hasattr(noisefix, name) for name in noisefix.__all__)


def test_cross_fitted_masc_on_raw_digits_fixes_labels():
    X, y = load_digits(return_X_y=True)
    noisy, flipped = noisefix.corrupt_labels(y, num_classes=10, rate=0.4, seed=0)
    folds = noisefix.make_folds(noisy, 5, seed=0)
    scores = noisefix.cross_fit("masc", stats=None, X=X.astype(np.float32), labels=noisy, folds=folds)
    found = noisefix.relabel(scores.oof_scores, noisy)
    assert scores.oof_scores.shape == (len(y), 10)
    assert np.mean(found.suggested == y) > np.mean(noisy == y) + 0.05     # cleaner than the given labels
    assert np.mean(found.is_issue[noisy != y]) > 0.6                       # most wrong labels are flagged
