"""noisefix.nn.device: thread_map keeps order and leaves the BLAS thread limits as it found them; the layout rule."""

import numpy as np
import torch
from threadpoolctl import threadpool_info

from noisefix.nn.device import channels_last, one_blas_thread, thread_map, to_layout
from noisefix.nn.models import build_model


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


def test_channels_last_for_thin_conv_nets_and_large_images_on_cpu_and_everything_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cnn = build_model("cnn", in_shape=(1, 28, 28), num_classes=10)            # 16-64 channels
    mlp = build_model("mlp_small", in_shape=(1, 28, 28), num_classes=10)
    resnet = build_model("resnet18", in_shape=(3, 32, 32), num_classes=10, download=False)   # up to 512
    assert channels_last(cnn, cpu, (28, 28)) and not channels_last(mlp, cpu, (28, 28))
    assert not channels_last(resnet, cpu, (32, 32)) and not channels_last(resnet, cpu, (64, 127))
    assert channels_last(resnet, cpu, (128, 160))
    assert channels_last(mlp, cuda, (28, 28))                       # no tensor is moved: only the rule
    x = torch.rand(2, 3, 4, 4)
    assert to_layout(x, True).is_contiguous(memory_format=torch.channels_last)
    assert to_layout(x, False) is x and to_layout(x.reshape(2, -1), True).is_contiguous()
