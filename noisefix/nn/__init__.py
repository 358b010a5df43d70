"""Networks: the model zoo and backbones by name, layer feature extraction, the one training loop, device
and seed, and the torchrun helpers."""
