"""Row storage for one layer's activations, (N, d) float32, wherever they live: `TensorRows` in RAM,
`ActivationCache` as safetensors shards on disk; both read by rows, class slices or bounded blocks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from noisefix.errors import ProbeError
from noisefix.io.atomic import save_tensors
from noisefix.probes.stats import as_features

#: Rows scored at once when activations are in RAM (bounds the copy of a fold's rows).
SCORE_ROWS = 8192


class RowSource:
    """One layer's activations, (N, d) float32, read by rows wherever they live (RAM: `TensorRows`; disk:
    `extract.ActivationCache`). `subset(rows)` is a view of some rows, renumbered 0..len(rows)-1.

    Subclasses implement `_take(g)` (rows g, in that order, as one tensor) and `_blocks(g)` (yield
    (positions into g, tensor of those rows), a bounded number of rows at a time, covering g once).
    """

    dim: int
    _n: int
    _rows: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n if self._rows is None else len(self._rows)

    def _global(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return idx if self._rows is None else self._rows[idx]

    def subset(self, rows) -> "RowSource":
        view = copy.copy(self)
        view._rows = self._global(rows)
        return view

    def take(self, idx) -> torch.Tensor:
        """Rows idx (in that order): float32 (len(idx), d)."""
        return self._take(self._global(idx))

    def blocks(self, idx):
        """(positions into idx, float32 rows) blocks covering rows idx, a bounded number at a time."""
        return self._blocks(self._global(idx))

    def score(self, idx, fn, num_classes: int) -> np.ndarray:
        """fn (rows -> (b, K) scores) applied to rows idx block by block: float32 (len(idx), K)."""
        out = np.zeros((len(idx), num_classes), dtype=np.float32)
        for pos, X in self.blocks(idx):
            out[pos] = fn(X)
        return out

    def _take(self, g: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _blocks(self, g: np.ndarray):
        raise NotImplementedError


class TensorRows(RowSource):
    """Activations held in RAM as one float32 (N, d) tensor (checked for NaN/inf once)."""

    def __init__(self, X, *, what: str = "activations"):
        self.X = as_features(X, what=what)
        self._n, self.dim = self.X.shape

    def _take(self, g: np.ndarray) -> torch.Tensor:
        if len(g) == self.X.shape[0] and np.array_equal(g, np.arange(len(g))):
            return self.X                                                     # all rows in order: no copy
        return self.X[torch.from_numpy(g)]

    def _blocks(self, g: np.ndarray):
        for start in range(0, len(g), SCORE_ROWS):
            pos = np.arange(start, min(start + SCORE_ROWS, len(g)))
            yield pos, self._take(g[pos])


def as_rows(X, *, what: str) -> RowSource:
    """X itself when it is a RowSource, else its rows in RAM (a tensor or array (N, d))."""
    return X if isinstance(X, RowSource) else TensorRows(X, what=what)


#: Bytes of float32 activations per cache shard (a shard is written, and read back, whole or by slices).
SHARD_BYTES = 64 * 2**20


def shard_rows(dim: int) -> int:
    """Rows of d float32 activations in one cache shard: SHARD_BYTES / (4 d), at least 1."""
    return max(1, SHARD_BYTES // (4 * dim))


class ActivationCache(RowSource):
    """One layer's activations (N, d) float32 on disk, written during extraction, read back by rows.

    ``append`` buffers rows (with their row ids in [0, N) and labels) and writes every ``shard_rows(d)`` of
    them as one safetensors file ``DIR/shard-NNNNN.safetensors`` (atomically: a temporary name, then a
    rename), its rows sorted by label so one class of a shard is a contiguous slice; ``close`` writes the
    last shard. Reading (:meth:`take`, :meth:`blocks`, see ``scoring.RowSource``) memory-maps a shard and
    copies only the slice that covers the requested rows, so a class's rows cost their own size and
    scoring one shard at a time costs one shard. The directory is the caller's to delete.
    Only row ids and shard positions (N int64 + 2 N int32) stay in RAM.
    """

    def __init__(self, directory: Path, dim: int, num_rows: int, *, rows_per_shard: int | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim, self._n = int(dim), int(num_rows)
        self.rows_per_shard = rows_per_shard or shard_rows(self.dim)
        self._paths: list[Path] = []
        self._buffer: list[tuple[torch.Tensor, np.ndarray, np.ndarray]] = []
        self._pending = 0
        self._shard = np.full(self._n, -1, dtype=np.int32)     # row id -> shard holding it
        self._pos = np.zeros(self._n, dtype=np.int32)          # row id -> position in that shard

    def append(self, x: torch.Tensor, ids, labels=None) -> None:
        """Add rows x (B, d) (any float dtype, any device) with row ids (B,) and labels (B,) (None: all 0)."""
        x = x.detach().float().cpu()
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ProbeError(f"cache for dim {self.dim} got activations of shape {tuple(x.shape)}")
        ids = np.asarray(ids, dtype=np.int64)
        labels = np.zeros(len(ids), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        start = 0
        while start < len(x):
            take = min(len(x) - start, self.rows_per_shard - self._pending)
            self._buffer.append((x[start:start + take], ids[start:start + take], labels[start:start + take]))
            self._pending += take
            start += take
            if self._pending == self.rows_per_shard:
                self._write()

    def _write(self) -> None:
        if not self._pending:
            return
        x = torch.cat([b[0] for b in self._buffer])
        ids = np.concatenate([b[1] for b in self._buffer])
        order = np.argsort(np.concatenate([b[2] for b in self._buffer]), kind="stable")   # by label, then arrival
        self._buffer, self._pending = [], 0
        if len(ids) and (ids.min() < 0 or ids.max() >= self._n or (self._shard[ids] >= 0).any()):
            raise ProbeError(f"activation cache {self.directory}: row ids must be new and lie in [0, {self._n})")
        path = self.directory / f"shard-{len(self._paths):05d}.safetensors"
        save_tensors(path, {"x": x[torch.from_numpy(order)]})                              # (rows, d) float32
        self._shard[ids[order]] = len(self._paths)
        self._pos[ids[order]] = np.arange(len(order), dtype=np.int32)
        self._paths.append(path)

    def close(self) -> "ActivationCache":
        """Write the buffered rows; every row id must have been appended. Returns self, ready to read."""
        self._write()
        missing = int((self._shard < 0).sum())
        if missing:
            raise ProbeError(f"activation cache {self.directory}: {missing} of {self._n} rows were never written")
        return self

    def _read(self, shard: int, pos: np.ndarray) -> torch.Tensor:
        """Rows at positions `pos` of one shard: reads the slice [min(pos), max(pos)] only."""
        from safetensors import safe_open

        lo, hi = int(pos.min()), int(pos.max()) + 1
        with safe_open(str(self._paths[shard]), framework="pt") as f:
            part = f.get_slice("x")[lo:hi]                                                  # (hi - lo, d)
        if hi - lo == len(pos) and np.array_equal(pos, np.arange(lo, hi)):
            return part
        return part[torch.from_numpy(pos - lo)]

    def _by_shard(self, g: np.ndarray):
        """(positions into g, shard, positions in that shard) for each shard holding rows g, shard order."""
        shard = self._shard[g]
        order = np.argsort(shard, kind="stable")
        bounds = np.flatnonzero(np.diff(shard[order])) + 1
        for part in np.split(order, bounds) if len(g) else []:
            yield part, int(shard[part[0]]), self._pos[g[part]].astype(np.int64)

    def _take(self, g: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(g), self.dim), dtype=torch.float32)
        for where, shard, pos in self._by_shard(g):
            out[torch.from_numpy(where)] = self._read(shard, pos)
        return out

    def _blocks(self, g: np.ndarray):
        for where, shard, pos in self._by_shard(g):
            yield where, self._read(shard, pos)
