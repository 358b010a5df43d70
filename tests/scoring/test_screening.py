"""noisefix.scoring.screening: the costly probe's quick fit ranks the layers for `probe --screen`."""

import numpy as np
import pytest

from noisefix.probes import MASC
from noisefix.scoring.screening import screening_agreement


def test_screening_agreement_ranks_by_the_costly_probe_itself():
    """Classes in different 2-d subspaces of R^20 around one mean: MASC's quick fit tells them apart, NCM
    cannot, and the quick fit sees at most `per_class` images per class and only held-out ones are scored."""
    rng = np.random.default_rng(0)
    K, n, d = 3, 300, 20
    bases = [np.linalg.qr(rng.standard_normal((d, 2)))[0] for _ in range(K)]
    labels = np.repeat(np.arange(K), n)
    X = np.vstack([rng.standard_normal((n, 2)) @ B.T for B in bases]).astype(np.float32)
    folds = np.where(rng.random(K * n) < 0.2, -1, 0)
    masc = screening_agreement("masc", X, labels, folds, per_class=50)
    ncm = screening_agreement("ncm", X, labels, folds, per_class=50)
    assert masc > 0.95 and ncm < 0.6
    seen = []
    real_fit = MASC.fit

    def counting_fit(self, X, y, **kw):
        seen.append(np.bincount(y, minlength=K))
        return real_fit(self, X, y, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MASC, "fit", counting_fit)
        screening_agreement("masc", X, labels, folds, per_class=7)
    assert seen[0].tolist() == [7, 7, 7]
    assert np.isnan(screening_agreement("masc", X, labels, np.zeros(K * n, dtype=int)))
