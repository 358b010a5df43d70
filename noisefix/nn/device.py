"""Device and seed: the two things every stage sets up first."""

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
