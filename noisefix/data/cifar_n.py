"""CIFAR-10N / CIFAR-100N (Wei et al., ICLR 2022): human-annotated noisy labels of the CIFAR training images.

They ship as one file saved with ``torch.save``, a dict of numpy arrays with one label per CIFAR training image
in torchvision's order (the 50,000 images of ``data_batch_1..5`` / ``train``):
- ``CIFAR-10_human.pt``: ``clean_label``, ``worse_label``, ``aggre_label``, ``random_label1..3``;
- ``CIFAR-100_human.pt`` (also seen as ``CIFAR-100_noisy_label.pt``): ``clean_label``, ``noisy_label``.
It is read with ``torch.load(weights_only=True)``, numpy arrays allowed and nothing else, so a file holding
other objects is refused, never executed. The images stay torchvision's CIFAR pickles; ``data export`` writes
them as a folder with ``noisy_labels.csv`` (path, the chosen human label, the CIFAR label as clean_label).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noisefix.errors import ConfigError, DataError

#: --cifar-n-set name -> the key of the label file
LABEL_SETS = {"worse": "worse_label", "aggre": "aggre_label", "random1": "random_label1",
              "random2": "random_label2", "random3": "random_label3", "noisy": "noisy_label"}


DEFAULT_SET = {"cifar10": "worse", "cifar100": "noisy"}


def _load(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise DataError(f"CIFAR-N label file {path} not found; give CIFAR-10_human.pt or CIFAR-100_human.pt "
                        "as downloaded from github.com/UCSC-REAL/cifar-10-100n")
    from numpy._core.multiarray import _reconstruct

    # the files were saved under numpy 1 (numpy.core...); numpy 2 writes numpy._core: allow both names
    allowed = [np.ndarray, np.dtype, _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [type(np.dtype(t)) for t in set(np.sctypeDict.values())]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a CIFAR-N label file"
        raise DataError(f"{path} is not a CIFAR-N label file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                        "it should be a torch.save'd dict of numpy label arrays (clean_label, worse_label, ...)"
                        ) from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}, not a dict of label arrays (clean_label, ...)")
    return data


def _labels(data: dict, key: str, path: Path, n: int, num_classes: int) -> np.ndarray:
    if key not in data:
        keys = ", ".join(sorted(str(k) for k in data))
        raise DataError(f"{path} has no {key!r} (it has: {keys}); pick a label set it holds")
    y = np.asarray(data[key]).reshape(-1)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: {key!r} should be {n} integer labels in [0, {num_classes}) (one per CIFAR training "
                        f"image), got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def read_cifar_n(path, name: str, cifar_labels: np.ndarray, num_classes: int,
                 label_set: str | None = None) -> np.ndarray:
    """The (N,) human labels `label_set` (default ``DEFAULT_SET[name]``) for the N CIFAR training images whose
    labels are `cifar_labels`; DataError when the file's ``clean_label`` disagrees with them (another order)."""
    label_set = label_set or DEFAULT_SET.get(name)
    if label_set not in LABEL_SETS:
        raise ConfigError(f"unknown CIFAR-N label set {label_set!r}; choose one of {', '.join(LABEL_SETS)}")
    path = Path(path)
    data = _load(path)
    n = len(cifar_labels)
    noisy = _labels(data, LABEL_SETS[label_set], path, n, num_classes)
    clean = _labels(data, "clean_label", path, n, num_classes)
    if not np.array_equal(clean, cifar_labels):
        differ = int((clean != cifar_labels).sum())
        raise DataError(f"{path}: clean_label differs from the {name} training labels on {differ} of {n} images; "
                        "the file belongs to another dataset (CIFAR-10N vs CIFAR-100N?)")
    return noisy
