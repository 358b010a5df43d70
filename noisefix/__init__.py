"""noisefix: find and fix wrong labels in image-classification datasets with MASC probes.

The library API (arrays in, arrays out; the CLI's stages are built on it)::

    import noisefix
    folds = noisefix.make_folds(labels, 5, seed=0)
    scores = noisefix.cross_fit("masc", stats=None, X=activations, labels=labels, folds=folds)
    found = noisefix.relabel(scores.oof_scores, labels)         # suggested labels, margins, issue mask

Probes follow scikit-learn's estimator contract (`fit`, `decision_function`, `predict`, fitted attributes
with a trailing underscore): `MASC` (the paper's minimum-angle subspace classifier), `NCM`, `VeLPIC`,
`LogRegProbe`. `corrupt_labels` makes seeded synthetic noise of known truth.
"""

__version__ = "0.1.0"

from noisefix.data.noise import corrupt_labels  # noqa: E402
from noisefix.data.splits import make_folds  # noqa: E402
from noisefix.probes import MASC, NCM, ClassStats, LogRegProbe, Probe, VeLPIC, make_probe  # noqa: E402
from noisefix.scoring.cross_fitting import ProbeScores, cross_fit  # noqa: E402
from noisefix.scoring.issues import Relabeling, relabel  # noqa: E402

__all__ = ["__version__", "Probe", "MASC", "NCM", "VeLPIC", "LogRegProbe", "ClassStats", "make_probe", "cross_fit",
           "ProbeScores", "make_folds", "relabel", "Relabeling", "corrupt_labels"]
