"""noisefix.nn.device: thread_map keeps order and leaves the BLAS thread limits as it found them."""

import numpy as np
from threadpoolctl import threadpool_info

from noisefix.nn.device import one_blas_thread, thread_map


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_thread_map_keeps_order_and_restores_blas_limits():
    before = _blas_threads()
    seen = []

    def fit(x: int) -> float:
        seen.append(_blas_threads())
        with one_blas_thread():                               # nested inside the map's own limit
            return float(np.linalg.eigvalsh(np.diag(np.arange(1.0, 30.0)) * x).sum())

    got = thread_map(fit, range(12), workers=3)
    assert got == [float(np.arange(1.0, 30.0).sum() * x) for x in range(12)]
    assert all(all(n == 1 for n in threads) for threads in seen)   # one BLAS thread inside the map
    assert _blas_threads() == before                               # and as before afterwards
    assert thread_map(lambda x: x * 2, [3, 1], workers=1) == [6, 2] and thread_map(abs, []) == []
