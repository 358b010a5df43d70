"""How `noisefix probe` handles each layer and what it costs: the memory plan (docs/benchmarks.md, "Memory model").

Per layer, from the class counts known before extraction: d x d second moments only where a probe is fitted
from them (`scoring.refits_on_activations` is the one rule), activations in RAM or in the on-disk cache, and
the bytes of statistics, activations and probe work; layers are then grouped so that each group fits the
budget (one data pass per group). Used by the probe stage and by `noisefix layers --memory`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisefix.errors import ProbeError
from noisefix.nn.extract import LayerInfo
from noisefix.probes import PROBES, probe_class
from noisefix.probes.rows import SCORE_ROWS, shard_rows
from noisefix.probes.stats import ClassStats
from noisefix.scoring.cross_fitting import GRAM_CACHE_BYTES, needs_second_moments, refits_on_activations

MEMORY_BUDGET = 6 * 2**30  # bytes of activations + statistics held at once per layer group
#: `extraction_batch`: images per extraction batch when --batch-size is not given, and the bytes per batch of
#: what the forward pass materializes that it aims at. On full MNIST with clean's small MLP (8 KB per image)
#: 4,096 instead of 256 images per batch cut the probe stage from 3.1 to 2.7 s (fewer per-batch steps:
#: statistics updates, copies, finiteness checks), the same scores. The paper's CNN on 28 px images (0.4 MB per
#: image, most of it the first block's 28 x 28 maps, which the requested layers' outputs miss) extracts fastest
#: at 256: 2.2 s for 25,000 images against 2.8 s at 512 and 4.3 s at 2,048 (channels-last, 2 cores).
EXTRACT_BATCH = (256, 4096)
EXTRACT_BATCH_BYTES = 64 * 2**20


def _gram_refits(refit) -> tuple[str, ...]:
    """The probes of `refit` refitted through the per-class Gram route (`gram_route`: MASC, VeLPIC)."""
    return tuple(p for p in refit if probe_class(p).gram_route)


def _row_refits(refit) -> tuple[str, ...]:
    """The probes of `refit` refitted on their training rows copied into RAM (no Gram route: logreg)."""
    return tuple(p for p in refit if not probe_class(p).gram_route)


CACHE_MODES = ("auto", "always", "never")


def check_cache_mode(cache: str) -> None:
    if cache not in CACHE_MODES:
        raise ProbeError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")


@dataclass(frozen=True)
class LayerPlan:
    """How `probe` handles one layer and what it costs, in bytes (docs/benchmarks.md, "Memory model").

    Attributes:
        info: the layer.
        second_moments: True when d x d second moments are accumulated (some probe is fitted from them).
        on_disk: activations written to the on-disk cache instead of RAM.
        refit: the probes refitted on the activations (logreg; MASC / VeLPIC through the Gram route).
        stats_bytes: class statistics, `ClassStats.nbytes`.
        activation_bytes: held for the whole layer group: N x d float32 in RAM, or the cache's write buffers.
        work_bytes: transient peak while one probe of this layer is fitted and scored.
        disk_bytes: size of the on-disk cache (0 in RAM).
    """

    info: LayerInfo
    second_moments: bool
    on_disk: bool
    refit: tuple[str, ...]
    stats_bytes: int
    activation_bytes: int
    work_bytes: int
    disk_bytes: int

    @property
    def nbytes(self) -> int:
        return self.stats_bytes + self.activation_bytes + self.work_bytes

    @property
    def method(self) -> str:
        """How the probes are fitted, in a word: "gram" (per-class Gram matrices, no d^2 statistics), "moments"
        (d^2 second moments) or "sums" (class sums only)."""
        return "gram" if _gram_refits(self.refit) else ("moments" if self.second_moments else "sums")

    @property
    def route(self) -> str:
        """E.g. "d^2 moments, RAM" or "gram (no d^2), disk": the method and where the activations live."""
        return f"{_METHOD_TEXT[self.method]}, {'disk' if self.on_disk else 'RAM'}"


_METHOD_TEXT = {"gram": "gram (no d^2)", "moments": "d^2 moments", "sums": "sums only"}


def plan_layer(info: LayerInfo, *, probes, class_counts, folds: int, n_train: int, n_test: int,
               cache: str = "auto", budget: int = MEMORY_BUDGET) -> LayerPlan:
    """The route and bytes of one layer of dimension d, K = len(class_counts) classes, F = `folds`.

    `class_counts` (K,): images per class that the probes are fitted on (all folds; held-out images not
    counted), known from the labels before extraction. `n_train`, `n_test`: images whose activations this
    process holds. Terms (N = n_train + n_test, n_fit = sum(class_counts), n_max = max(class_counts)):
      statistics   8 F K (d^2 + d) + 16 K (d^2 + d) + buffers  (no d^2 terms when no probe needs them)
      activations  4 N d in RAM; on disk 16 d R (train and test write buffers, R = extract.shard_rows(d))
      work         the largest of: scoring 4 d min(n_fit, SCORE_ROWS) (RAM) or 8 d R (disk); Gram route
                   12 d n_max + 8 n_max^2 (one class block in float32 and float64, its Gram matrix)
                   + min(8 sum(n_c^2), GRAM_CACHE_BYTES) (every class's Gram matrix, kept for the folds);
                   logreg 4 d n_fit (its training rows, copied into RAM).
    `cache`: "never" keeps activations in RAM, "always" puts them on disk, "auto" on disk when the RAM
    route would exceed `budget`. The fitted probes themselves (MASC bases: 8 d sum(k_c)) are not counted.
    """
    check_cache_mode(cache)
    counts = np.asarray(class_counts, dtype=np.int64)
    K, d, F = len(counts), info.dim, int(folds)
    n_fit, n_max = int(counts.sum()), int(counts.max(initial=0))
    refit = tuple(p for p in probes if refits_on_activations(p, counts, d))
    second = needs_second_moments(probes, counts, d)
    stats = ClassStats.nbytes(d, K, F, second_moments=second)
    rows = shard_rows(d)
    grams = 8 * int(np.sum(counts.astype(np.float64) ** 2))
    grams = grams if grams <= GRAM_CACHE_BYTES else 0          # kept only when this small (scoring.cross_fit)
    fits = [12 * d * n_max + 8 * n_max * n_max + grams if _gram_refits(refit) else 0,
            4 * d * n_fit if _row_refits(refit) else 0]
    ram = 4 * d * (n_train + n_test)
    ram_work = max([4 * d * min(max(n_fit, 1), SCORE_ROWS), *fits])
    on_disk = cache == "always" or (cache == "auto" and stats + ram + ram_work > budget)
    if on_disk:
        return LayerPlan(info, second, True, refit, stats, 16 * d * rows, max([8 * d * rows, *fits]), ram)
    return LayerPlan(info, second, False, refit, stats, ram, ram_work, 0)


def extraction_batch(infos: list[LayerInfo], requested: int | None = None, *, forward_values: int = 0) -> int:
    """Images per extraction batch for one layer group: `requested` when given, else the largest power of two
    in EXTRACT_BATCH whose float32 values per batch stay within EXTRACT_BATCH_BYTES: per image the larger of
    the layers' unpooled outputs and `forward_values` (`nn.extract.forward_values`: everything the forward
    pass materializes)."""
    if requested is not None:
        return int(requested)
    low, high = EXTRACT_BATCH
    per_image = 4 * max(sum(int(np.prod(i.shape)) for i in infos), forward_values)
    fits = max(EXTRACT_BATCH_BYTES // max(per_image, 1), 1)
    return min(high, max(low, 1 << (fits.bit_length() - 1)))  # the largest power of two <= fits


def group_layers(plans: list[LayerPlan], *, budget: int = MEMORY_BUDGET) -> list[list[LayerPlan]]:
    """Split layers into groups that fit `budget` bytes (one data pass per group): the statistics and
    activations of a group are held together, the probes' work memory one layer at a time."""
    groups: list[list[LayerPlan]] = [[]]
    held = work = 0
    for plan in plans:
        if plan.nbytes > budget:
            info = plan.info
            parts = (f"statistics {plan.stats_bytes / 2**30:.1f} GiB ({plan.route}), activations "
                     f"{plan.activation_bytes / 2**30:.1f} GiB, probe work {plan.work_bytes / 2**30:.1f} GiB")
            copies = _row_refits(plan.refit)
            hint = (f"; leave {', '.join(copies)} out (--probes {','.join(p for p in PROBES if p not in copies)}): "
                    f"it refits on the activations in RAM" if copies and plan.work_bytes > plan.stats_bytes else "")
            disk = "" if plan.on_disk else "; or cache the activations on disk (--cache always)"
            raise ProbeError(f"layer {info.name} (dim {info.dim}) needs {plan.nbytes / 2**30:.1f} GiB ({parts}), "
                             f"over the {budget / 2**30:.0f} GiB budget: pool it (--pool avg:2), use fewer --folds or "
                             f"drop it with --layers{hint}{disk}")
        if held + plan.stats_bytes + plan.activation_bytes + max(work, plan.work_bytes) > budget and groups[-1]:
            groups.append([])
            held = work = 0
        groups[-1].append(plan)
        held += plan.stats_bytes + plan.activation_bytes
        work = max(work, plan.work_bytes)
    return groups
