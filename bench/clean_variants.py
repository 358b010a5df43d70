"""`noisefix clean` with several settings on one noisy export, one process: quality and time per phase.

For each variant (a JSON object of `run_clean` keyword arguments, e.g. {"epochs": 2}): the fraction flagged,
precision / recall / F1 of the flags against the true wrong labels, the cleaned labels' accuracy, the noise
estimate, train + probe + relabel seconds and relabel's sources. The data is decoded once first, as in
bench/cleaning_vs_cleanlab.py. Used to choose clean's defaults (docs/cleaning.md, "clean's cost").

Usage: python bench/clean_variants.py DATA '[{}, {"epochs": 2}]'
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from cleaning_vs_cleanlab import flagged_mask, method_summary, noisy_splits

from noisefix.data.folders import load_data
from noisefix.data.images import ImageSource, infer_spec
from noisefix.stages.pipeline import run_clean


def main(argv: list[str]) -> None:
    data, variants = Path(argv[0]), json.loads(argv[1])
    splits = noisy_splits(data)
    noisy = splits.train
    source = ImageSource(noisy, infer_spec(noisy))
    if splits.test is not None:
        ImageSource(splits.test, source.spec)
    for kwargs in variants:
        with tempfile.TemporaryDirectory() as tmp:
            out = run_clean(data, Path(tmp) / "clean", labels_file=data / "noisy_labels.csv", **kwargs)
            cleaned = load_data(data, out.relabel.cleaned).train.targets
            flags = flagged_mask(out.relabel.out / "labels.csv", noisy.paths)
            r = method_summary("clean", 0.0, flags, cleaned, noisy.targets, noisy.clean_targets)
            counted = sum(out.seconds[p] for p in ("train", "probe", "relabel"))
            print(json.dumps({"data": data.name, "variant": kwargs, "flagged": float(flags.mean()),
                              **{k: r[k] for k in ("precision", "recall", "f1", "label_acc_after")},
                              "estimated_wrong": out.relabel.summary["noise"]["wrong_fraction"],
                              "seconds": counted, "phases": out.seconds,
                              "sources": [(s["checkpoint"], s["layer"], s["probe"])
                                          for s in out.relabel.summary["sources"]]}, default=float), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
