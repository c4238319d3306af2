"""k-means (Lloyd) written against a tiny data interface, so in-memory, memory-mapped and
Dask-chunked data share one loop (the second seam of the design).

An *assigner* knows the data; the loop only knows centres::

    assigner.assign(centers) -> (labels, squared distances, per-cluster sums, per-cluster counts)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

import numpy as np
from sklearn.cluster import kmeans_plusplus

from ..errors import ParameterError
from .base import ClustererSpec, ClusterResult, register_clusterer

log = logging.getLogger(__name__)


class Assigner(Protocol):
    """The data side of the Lloyd loop."""

    n_samples: int
    n_features: int

    def assign(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Nearest centre of every sample.

        Returns:
            labels (n,), int64; squared distances (n,), float32; sums (k, d), float64; counts (k,), int64.
        """
        ...

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random rows (for initialisation), shape (n, d), float32."""
        ...

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The rows at ``idx``, float32."""
        ...


def nearest_centers(X: np.ndarray, centers: np.ndarray, c_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centre, for each row of ``X`` (one GEMM)."""
    X = np.asarray(X, dtype=np.float32)
    if c_sq is None:
        c_sq = np.einsum("ij,ij->i", centers, centers)
    d = X @ centers.T
    d *= -2.0
    d += c_sq[None, :]
    labels = np.argmin(d, axis=1)
    x_sq = np.einsum("ij,ij->i", X, X)
    sq = np.maximum(d[np.arange(len(X)), labels] + x_sq, 0.0).astype(np.float32)
    return labels.astype(np.int64), sq


class ArrayAssigner:
    """Assigner over an in-memory or memory-mapped array, in chunks (memory stays bounded)."""

    def __init__(self, X: np.ndarray, chunk_size: int = 32768) -> None:
        self.X = X
        self.n_samples, self.n_features = X.shape
        self.chunk_size = chunk_size

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.n_samples, self.chunk_size):
            yield start, np.asarray(self.X[start:start + self.chunk_size], dtype=np.float32)

    def assign(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        k = len(centers)
        centers = np.asarray(centers, dtype=np.float32)
        c_sq = np.einsum("ij,ij->i", centers, centers)
        labels = np.empty(self.n_samples, dtype=np.int64)
        sq = np.empty(self.n_samples, dtype=np.float32)
        sums = np.zeros((k, self.n_features), dtype=np.float64)
        counts = np.zeros(k, dtype=np.int64)
        for start, chunk in self.chunks():
            lab, d = nearest_centers(chunk, centers, c_sq)
            labels[start:start + len(chunk)] = lab
            sq[start:start + len(chunk)] = d
            _add_by_label(sums, lab, chunk)
            counts += np.bincount(lab, minlength=k)
        return labels, sq, sums, counts

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        idx = np.sort(rng.choice(self.n_samples, size=min(n, self.n_samples), replace=False))
        return self.rows(idx)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.X[np.asarray(idx)], dtype=np.float32)


def _add_by_label(sums: np.ndarray, labels: np.ndarray, chunk: np.ndarray) -> None:
    # One sparse-dense product instead of a Python loop: sums += onehot(labels).T @ chunk.
    from scipy.sparse import csr_matrix

    k = sums.shape[0]
    onehot = csr_matrix((np.ones(len(labels), dtype=np.float64), (labels, np.arange(len(labels)))),
                        shape=(k, len(labels)))
    sums += onehot @ chunk.astype(np.float64)


def lloyd(assigner: Assigner, k: int, *, seed: int = 0, n_init: int = 1, max_iter: int = 100, tol: float = 1e-4,
          init_sample: int | None = None) -> ClusterResult:
    """Run k-means ``n_init`` times from k-means++ seeds and keep the lowest inertia.

    Args:
        assigner: the data (see :class:`Assigner`).
        k: number of clusters.
        seed: random seed.
        n_init: number of restarts.
        max_iter: iterations per restart.
        tol: stop when the relative decrease of inertia is below this.
        init_sample: k-means++ runs on at most this many sampled rows (default max(20 k, 10,000)).
    """
    if n_init < 1 or max_iter < 1:
        raise ParameterError(f"n_init and max_iter must be at least 1; got {n_init} and {max_iter}.")
    rng = np.random.default_rng(seed)
    n = assigner.n_samples
    best: ClusterResult | None = None
    sample_n = init_sample or max(20 * k, 10_000)
    for run in range(n_init):
        run_seed = int(rng.integers(0, 2**31 - 1))
        run_rng = np.random.default_rng(run_seed)
        S = assigner.sample(sample_n, run_rng) if n > sample_n else assigner.rows(np.arange(n))
        centers, _ = kmeans_plusplus(S.astype(np.float64), k, random_state=run_seed)
        centers = centers.astype(np.float32)
        history: list[float] = []
        prev = np.inf
        labels = sq = None
        for _it in range(max_iter):
            labels, sq, sums, counts = assigner.assign(centers)
            inertia = float(sq.sum(dtype=np.float64))
            history.append(inertia)
            new_centers = centers.copy()
            nonempty = counts > 0
            new_centers[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
            empty = np.flatnonzero(~nonempty)
            if len(empty):
                # Reseed empty clusters on the samples farthest from their centres.
                far = np.argsort(sq)[::-1][:len(empty)]
                new_centers[empty] = assigner.rows(np.sort(far))[np.argsort(np.argsort(far))]
            centers = new_centers
            if prev - inertia <= tol * max(inertia, 1e-12) and not len(empty):
                break
            prev = inertia
        labels, sq, _, _ = assigner.assign(centers)
        inertia = float(sq.sum(dtype=np.float64))
        result = ClusterResult(labels=labels, centers=centers, distances=np.sqrt(sq).astype(np.float32),
                               inertia=inertia, k=k, seed=seed, method="kmeans", n_iter=len(history),
                               history=tuple(history), info={"n_init": n_init, "restart": run})
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def fit_kmeans(X: np.ndarray | Assigner, k: int, *, seed: int = 0, n_init: int | str = "auto", max_iter: int = 100,
               tol: float = 1e-4, chunk_size: int = 32768) -> ClusterResult:
    """k-means on the rows of ``X`` (the original method's clusterer).

    ``X`` may also be an :class:`Assigner` (e.g. vectors held by Dask workers), so every backend
    runs this same loop. ``n_init="auto"`` uses 10 restarts for small problems and fewer as n * k grows.
    """
    assigner: Assigner = ArrayAssigner(X, chunk_size) if isinstance(X, np.ndarray) else X
    if n_init == "auto":
        work = assigner.n_samples * k
        n_init = 10 if work <= 2_000_000 else 3 if work <= 20_000_000 else 1
    if not isinstance(n_init, int):
        raise ParameterError(f"n_init must be a whole number or 'auto'; got {n_init!r}.")
    return lloyd(assigner, k, seed=seed, n_init=n_init, max_iter=max_iter, tol=tol)


register_clusterer(ClustererSpec(
    name="kmeans",
    fit=fit_kmeans,
    description="k-means (Lloyd, k-means++ seeds, best of several restarts): the original method.",
))
