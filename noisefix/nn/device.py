"""Device, seed and CPU threads: what every stage sets up first, and how its CPU maths shares the cores."""

from __future__ import annotations

import torch


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        from noisefix.errors import ConfigError

        raise ConfigError(f"--device {spec} asked for, but no CUDA device is available; use --device cpu or auto")
    return torch.device(spec)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch once per stage; returns a CPU generator for shuffling."""
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


_BLAS = None  # the process's threadpoolctl controller, built on first use


def one_blas_thread():
    """A context in which BLAS runs on one thread (beside torch's own pool a second one oversubscribes the cores).
    The threadpoolctl controller is built once per process: a fresh `threadpool_limits` rescans the loaded
    libraries each time, about 3 ms with torch loaded, 2.3 s over the 750 eigendecompositions of one `clean`."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def thread_map(fn, items, *, workers: int | None = None) -> list:
    """[fn(x) for x in items], in order, on up to `workers` threads (default: torch's thread count, at most 8),
    with BLAS on one thread for the whole map. For independent fits of small-matrix numpy maths (the matrix
    scaling's folds, the bootstrap's resamples): numpy's ufuncs on large arrays, its sorts and LAPACK release
    the GIL, so they run side by side where each alone leaves a core idle. The one-thread limit is taken once
    around the map because threadpoolctl's limits are process-wide: limits entered and left by several threads
    at once restore each other's values (the `one_blas_thread` blocks inside `fn` nest within it)."""
    items = list(items)
    workers = min(torch.get_num_threads(), 8) if workers is None else workers
    workers = max(1, min(workers, len(items)))
    with one_blas_thread():
        if workers == 1:
            return [fn(x) for x in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="noisefix") as pool:
            return list(pool.map(fn, items))
