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


#: `channels_last` on CPU: conv nets whose convolutions all have at most THIN_CONV output channels, at any size,
#: and every conv net on images whose shorter side is at least LARGE_SIDE pixels.
THIN_CONV = 64
LARGE_SIDE = 128


def channels_last(model: torch.nn.Module, device: torch.device, size: tuple[int, int]) -> bool:
    """Whether `model` runs in the channels-last memory layout on `device` for images of `size` (H, W): always
    on CUDA (tensor cores); on CPU for conv nets where oneDNN's channels-last kernels were measured faster
    (bench/bench_layout.py, docs/benchmarks.md "Channels-last on CPU", 2 cores): the paper's CNN extracts in
    0.54-0.56 and trains in 0.69-0.70 of the time at 28-32 px; ResNet-18 at 128-224 px, AlexNet at 64 px,
    MobileNet-V3 and EfficientNet-B0 at 224 px in 0.68-0.88. Left contiguous: ResNet-18 at 32-64 px (1.08-1.20
    times the time in channels-last) and AlexNet at 32 px (training 1.45)."""
    if device.type == "cuda":
        return True
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return bool(convs) and (min(size) >= LARGE_SIDE or max(m.out_channels for m in convs) <= THIN_CONV)


def to_layout(x: torch.Tensor, last: bool) -> torch.Tensor:
    """A 4-D image batch in channels-last layout when `last` (see `channels_last`), else `x` unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if last and x.dim() == 4 else x


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
