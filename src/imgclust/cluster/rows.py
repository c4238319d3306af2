"""Rows of vectors that may live elsewhere: the data interface of the passes over every row.

A clustering of n vectors touches most rows only in passes that go block by block: the rows outside
the spectral graph's sample look up their neighbours in it, every row is added to its cluster's sum,
every row's distance to its centre is measured. :class:`Rows` is that interface: ``n`` rows of
``dim`` float32 values, :meth:`Rows.take` to read a few rows (a sample), and
:meth:`Rows.map_blocks` to run a function on every block of :data:`BLOCK_ROWS` consecutive rows.

- :class:`ArrayRows` holds an in-memory array (or reads a memory-mapped ``.npy`` in blocks) and runs
  the function here.
- The Dask backend's ``StoreRows`` (:mod:`imgclust.backends.dask`) leaves the rows in the embedding
  store and runs the function on the workers, each reading its block from the store, so the caller
  never holds more than a sample and the per-row results.

Both cut the rows into the same blocks and call the same function on each, and the caller folds the
results in block order, so a run gives the same numbers whichever holds the rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .kmeans import Assigner

# Rows per block: 16,384 x 1280 float32 is 84 MB.
BLOCK_ROWS = 16_384

BlockFn = Callable[..., Any]


class Rows(ABC):
    """``n`` rows of ``dim`` float32 values, read in blocks where they are held.

    Attributes:
        n, dim: the shape.
    """

    n: int
    dim: int
    ndim = 2

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.dim)

    def __len__(self) -> int:
        return self.n

    def blocks(self) -> list[tuple[int, int]]:
        """(start, stop) of every block, in order."""
        return [(s, min(s + BLOCK_ROWS, self.n)) for s in range(0, self.n, BLOCK_ROWS)]

    @abstractmethod
    def take(self, idx: np.ndarray) -> np.ndarray:
        """The rows at ``idx`` (sorted, a sample), np.ndarray of shape (len(idx), dim), float32."""

    @abstractmethod
    def map_blocks(self, fn: BlockFn, *shared: Any, split: Sequence[np.ndarray] = ()) -> Iterator[Any]:
        """``fn(start, block, *pieces, *shared)`` for every block, results in block order.

        Args:
            fn: a module-level function (it may run in another process); ``block`` is
                np.ndarray of shape (stop - start, dim), float32.
            shared: arguments every block gets (sent once).
            split: arrays of n rows; each block gets its own slice ``a[start:stop]`` of each.
        """

    @abstractmethod
    def assigner(self, chunk_size: int) -> Assigner:
        """A k-means :class:`~imgclust.cluster.kmeans.Assigner` over these rows (see :func:`fit_kmeans`)."""

    def reader(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function that reads the rows at sorted indices wherever it runs (a block function can take it
        as a shared argument to read rows outside its block: the candidates of a neighbour search).

        This one calls :meth:`take`; a holder whose blocks run in other processes gives one that reads
        there (the Dask backend's reads the embedding store on the worker).
        """
        return self.take


class ArrayRows(Rows):
    """Rows held by this process: an array, or a memory-mapped ``.npy`` read block by block."""

    def __init__(self, X: np.ndarray) -> None:
        from .kmeans import ArrayAssigner

        self.X = X
        self.n, self.dim = (int(s) for s in X.shape)
        self._reader = ArrayAssigner(X)

    def take(self, idx: np.ndarray) -> np.ndarray:
        if isinstance(self.X, np.memmap):
            return self._reader.rows(idx)
        return np.asarray(self.X[np.asarray(idx, dtype=np.int64)], dtype=np.float32)

    def map_blocks(self, fn: BlockFn, *shared: Any, split: Sequence[np.ndarray] = ()) -> Iterator[Any]:
        for start, stop in self.blocks():
            yield fn(start, self._reader._read(start, stop), *(a[start:stop] for a in split), *shared)

    def assigner(self, chunk_size: int) -> Assigner:
        from .kmeans import ArrayAssigner

        return ArrayAssigner(self.X, chunk_size)


def as_rows(X: np.ndarray | Rows) -> Rows:
    """``X`` itself when it is :class:`Rows`, else :class:`ArrayRows` over it."""
    return X if isinstance(X, Rows) else ArrayRows(X)


def _sums_block(start: int, block: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from .kmeans import _add_by_label

    sums = np.zeros((k, block.shape[1]), dtype=np.float64)
    _add_by_label(sums, labels, block)
    return sums, block.sum(axis=0, dtype=np.float64)


def _sq_distances_block(start: int, block: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    diff = block - centers[labels]
    return np.einsum("ij,ij->i", diff, diff).astype(np.float64)


def centers_and_distances(X: np.ndarray | Rows, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Each cluster's mean (the mean of all rows for an empty cluster) and each row's distance to its own.

    Two passes over the blocks (sums, then distances), added in block order.

    Returns:
        (centers (k, dim) float32, distances (n,) float32, inertia = sum of squared distances).
    """
    rows = as_rows(X)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, rows.dim), dtype=np.float64)
    total = np.zeros(rows.dim, dtype=np.float64)
    for block_sums, block_total in rows.map_blocks(_sums_block, k, split=(labels,)):
        sums += block_sums
        total += block_total
    centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], total / max(rows.n, 1))
    centers = centers.astype(np.float32)
    sq = np.concatenate([np.empty(0), *rows.map_blocks(_sq_distances_block, centers, split=(labels,))])
    return centers, np.sqrt(sq).astype(np.float32), float(sq.sum())
