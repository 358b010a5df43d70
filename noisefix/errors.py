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


class TrainingError(NoisefixError):
    """Training cannot go on: the loss became NaN or infinite (a learning rate far too large, broken inputs)."""


_OS_FIXES = {
    "ENOSPC": "free some disk space or choose another --out",
    "EDQUOT": "free some space in your quota or choose another --out",
    "EROFS": "the file system is read-only: choose a writable --out",
    "EACCES": "fix its permissions or choose another --out",
    "EPERM": "fix its permissions or choose another --out",
    "ENOENT": "check the path",
    "ENOTDIR": "a part of the path is a file, not a folder: check the path",
    "EISDIR": "it is a folder: give a file",
    "ENAMETOOLONG": "use a shorter name",
    "EMFILE": "too many open files: raise the limit (ulimit -n) or use fewer --workers",
    "EIO": "the disk reported an I/O error: check it and re-run",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError the OS raised while noisefix read or wrote a file: the file, the reason and
    the fix (e.g. "cannot use runs/x/model.json: No space left on device (ENOSPC); free some disk space ...")."""
    import errno

    code = errno.errorcode.get(exc.errno or -1, "")
    names = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    where = " -> ".join(names) if names else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    fix = _OS_FIXES.get(code, "check the path, the disk and the permissions, then re-run")
    return f"cannot use {where}: {reason}" + (f" ({code})" if code else "") + f"; {fix}"


_LINE_BREAKS = {c: f"\\x{c:02x}" for c in range(32) if c != 9} | {0x7F: "\\x7f", 0x85: "\\x85", 0x2028: "\\u2028",
                                                                0x2029: "\\u2029"}
_LINE_BREAKS |= {10: "\\n", 13: "\\r"}


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters (e.g. inside a file name) written as escapes, so
    that a message stays one line."""
    return text.translate(_LINE_BREAKS)
