"""`noisefix layers`: the probe-able layers of a run's model and, with `memory`, the probe's plan for each one.

The listing is data (a title, columns, rows, the memory model behind the plan columns); the CLI prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisefix.stages.runs import LoadedRun, load_run_model


@dataclass
class LayerListing:
    """What `list_layers_of_run` found.

    title: the table's title (the model and the run); columns, rows: the table; names: the layers listed, in
    order; memory_note: with `memory`, the memory model the plan columns follow (else None).
    """

    title: str
    columns: list[str]
    rows: list[list]
    names: list[str]
    memory_note: str | None = None

    def example(self, n: int = 4) -> list[str]:
        """At most `n` of the layers, evenly spread and always the last: a runnable example of --layers."""
        if len(self.names) <= n:
            return list(self.names)
        return [self.names[round(i * (len(self.names) - 1) / (n - 1))] for i in range(n)]


def mib(nbytes: int) -> str:
    """A byte count in MiB: one decimal below 100 MiB, none above, thousands separated."""
    value = nbytes / 2**20
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def list_layers_of_run(loaded: LoadedRun, *, all_nodes: bool = False, memory: bool = False, folds: int = 5,
                       probes: tuple[str, ...] = ("masc", "ncm", "logreg", "velpic"), pool: str = "auto",
                       cache: str = "auto") -> LayerListing:
    """The run's probe-able layers (FX node names, output shapes, flattened dims; every graph node with
    `all_nodes`), and with `memory` per layer the probe's route and memory as `noisefix probe` would plan them
    for `folds`, `probes`, `pool` and `cache` (scoring.plan)."""
    from noisefix.nn.extract import apply_pooling, list_layers, resolve_layers
    from noisefix.scoring.plan import MEMORY_BUDGET, plan_layer

    net, _ = load_run_model(loaded)
    names = resolve_layers(net, "all" if all_nodes else "default")
    infos = list_layers(net, tuple(loaded.model_info["in_shape"]), names)
    title = f"layers of {loaded.model_info['arch']} ({loaded.run.path})"
    if not memory:
        rows = [[i.name, "x".join(map(str, i.shape)), i.dim] for i in infos]
        return LayerListing(title, ["layer", "shape", "dim"], rows, list(names))
    dims = [i.dim for i in infos]
    infos, _ = apply_pooling(infos, pool)
    train, test = loaded.splits.train, loaded.splits.test
    K = loaded.model_info["num_classes"]
    counts = np.bincount(train.targets[~loaded.holdout], minlength=K)
    n_test = len(test) if test is not None else 0
    plans = [plan_layer(i, probes=probes, class_counts=counts, folds=folds, n_train=len(train), n_test=n_test,
                        cache=cache) for i in infos]
    # sizes in MiB (said in the title), short headers: the table fits 80 columns
    columns = ["layer", "dim", "probed", "route", "stats", "acts", "work", "peak"]
    title += ", sizes in MiB"
    rows = [[p.info.name, dim, p.info.dim, p.method, mib(p.stats_bytes),
             f"{mib(p.disk_bytes)} disk" if p.on_disk else mib(p.activation_bytes), mib(p.work_bytes),
             mib(p.nbytes) + (" over budget" if p.nbytes > MEMORY_BUDGET else "")] for dim, p in zip(dims, plans)]
    note = (f"memory model (docs/benchmarks.md): K={K} classes, F={folds} folds, N={len(train) + n_test} images, "
            f"largest class n_c={int(counts.max())}. Route gram: every class has fewer images than d, so MASC / "
            "VeLPIC refit through n_c x n_c Gram matrices and no d^2 statistics are kept (statistics F*K*d*8 bytes); "
            "d^2 moments: statistics F*K*d^2*8 bytes + 2*K*d^2*8 while cross-fitting. Activations N*d*4 bytes "
            f"in RAM, or on disk in shards when over the {MEMORY_BUDGET / 2**30:.0f} GiB budget (probe --cache); "
            "probe work: logreg copies its N*d*4 training rows, the Gram route one class block. Fixes: --pool avg:S "
            "shrinks d, fewer --folds, --layers, --probes without logreg.")
    return LayerListing(title, columns, rows, list(names), note)
