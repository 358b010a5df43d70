"""Exceptions noisefix raises on bad input; the CLI turns each into one red line and exit code 1.

Every message names the bad value and says how to fix it.
"""


class NoisefixError(Exception):
    """Base class: a user-facing problem with a one-line message."""


class DataError(NoisefixError):
    """The image folder, a labels file or a built-in dataset is missing or malformed."""


class RunError(NoisefixError):
    """A run directory is missing, incomplete, from other data, or would be overwritten."""


class ConfigError(NoisefixError):
    """An option, a config file or a recipe has an unknown key or an impossible value."""


class ProbeError(NoisefixError):
    """A probe cannot be fitted or applied (unknown layer, degenerate class, non-finite activations)."""


def shorten_names(names, *, limit: int = 8) -> str:
    """Comma-join the first ``limit`` names for a one-line message, saying how many were left out."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")
