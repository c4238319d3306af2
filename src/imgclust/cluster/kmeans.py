"""k-means (Lloyd) written against a tiny data interface, so in-memory, memory-mapped and
Dask-chunked data share one loop (the second seam of the design).

An *assigner* knows the data; the loop only knows centres::

    assigner.assign(centers) -> (labels, squared distances, per-cluster sums, per-cluster counts)

At scale, two things make it fast (the same two that make faiss's k-means fast):

- k-means++ seeding runs on a sample of rows, never on all of them;
- with ``max_points_per_centroid`` set, the Lloyd iterations run on a random sample of at most
  ``max_points_per_centroid * k`` rows (faiss's default is 256 per centre); every row is then
  assigned once to the final centres, so labels, distances and inertia cover all the data.

The assignment step is one float32 GEMM per chunk of rows (measured here 1.8x faster than
``faiss.knn`` on 32768 x 1280 rows and 100 centres), so memory stays bounded: a memory-mapped
``.npy`` is read chunk by chunk with ordinary file reads, never mapped whole.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import mmap
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from ..errors import ParameterError
from .base import ClustererSpec, ClusterResult, register_clusterer
from .rows import Rows

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


def nearest_centers(X: np.ndarray, centers: np.ndarray, c_sq: np.ndarray | None = None,
                    x_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centre, for each row of ``X`` (one GEMM).

    ``c_sq`` and ``x_sq`` are the squared norms of the centres and of the rows, when known.
    """
    X = np.asarray(X, dtype=np.float32)
    if c_sq is None:
        c_sq = np.einsum("ij,ij->i", centers, centers)
    d = X @ centers.T
    d *= -2.0
    d += c_sq[None, :]
    labels = np.argmin(d, axis=1)
    if x_sq is None:
        x_sq = np.einsum("ij,ij->i", X, X)
    sq = np.maximum(d[np.arange(len(X)), labels] + x_sq, 0.0).astype(np.float32)
    return labels.astype(np.int64), sq


class ArrayAssigner:
    """Assigner over an in-memory or memory-mapped array, in chunks (memory stays bounded).

    Args:
        X: np.ndarray of shape (n_samples, n_features), or an ``np.memmap`` (e.g. a
            ``.npy`` loaded with ``mmap_mode="r", allow_pickle=False``) of a file far larger than memory.
        chunk_size: rows per assignment chunk (a chunk of 32768 x 1280 float32 is 168 MB).
    """

    def __init__(self, X: np.ndarray, chunk_size: int = 32768) -> None:
        self.X = X
        self.n_samples, self.n_features = X.shape
        self.chunk_size = chunk_size
        # Squared row norms per chunk, kept across iterations for data held in memory (4 bytes a
        # row): one pass over the data fewer per iteration.
        self._norms: dict[int, np.ndarray] | None = None if isinstance(X, np.memmap) else {}

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.n_samples, self.chunk_size):
            yield start, self._read(start, min(start + self.chunk_size, self.n_samples))

    def _file(self) -> tuple[str, int] | None:
        """(file name, byte offset of row 0) when X is a whole-file memmap, else None."""
        X = self.X
        if isinstance(X, np.memmap) and isinstance(X.base, mmap.mmap) and X.flags.c_contiguous and X.filename:
            return str(X.filename), int(X.offset)
        return None

    def _read(self, start: int, stop: int) -> np.ndarray:
        # A whole-file memmap is read with plain file reads, so that the pages of the file never
        # count towards this process's memory (pages read through the map stay resident, and the
        # kernel maps neighbouring pages too: random rows would soon map the whole file).
        backing = self._file()
        if backing is None:
            return np.asarray(self.X[start:stop], dtype=np.float32)
        name, offset = backing
        rows = np.fromfile(name, dtype=self.X.dtype, count=(stop - start) * self.n_features,
                           offset=offset + start * self.n_features * self.X.dtype.itemsize)
        return rows.reshape(stop - start, self.n_features).astype(np.float32, copy=False)

    def assign(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        k = len(centers)
        centers = np.asarray(centers, dtype=np.float32)
        c_sq = np.einsum("ij,ij->i", centers, centers)
        labels = np.empty(self.n_samples, dtype=np.int64)
        sq = np.empty(self.n_samples, dtype=np.float32)
        sums = np.zeros((k, self.n_features), dtype=np.float64)
        counts = np.zeros(k, dtype=np.int64)
        for start, chunk in self.chunks():
            x_sq = self._norms.get(start) if self._norms is not None else None
            if x_sq is None:
                x_sq = np.einsum("ij,ij->i", chunk, chunk)
                if self._norms is not None:
                    self._norms[start] = x_sq
            lab, d = nearest_centers(chunk, centers, c_sq, x_sq)
            labels[start:start + len(chunk)] = lab
            sq[start:start + len(chunk)] = d
            _add_by_label(sums, lab, chunk)
            counts += np.bincount(lab, minlength=k)
        return labels, sq, sums, counts

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        idx = np.sort(rng.choice(self.n_samples, size=min(n, self.n_samples), replace=False))
        return self.rows(idx)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        backing = self._file()
        if backing is None:
            return np.asarray(self.X[idx], dtype=np.float32)
        name, offset = backing
        row_bytes = self.n_features * self.X.dtype.itemsize
        out = np.empty((len(idx), self.n_features), dtype=self.X.dtype)
        with open(name, "rb") as fh:
            for j, i in enumerate(idx.tolist()):
                fh.seek(offset + i * row_bytes)
                fh.readinto(memoryview(out[j]).cast("B"))
        return out.astype(np.float32, copy=False)


def _add_by_label(sums: np.ndarray, labels: np.ndarray, chunk: np.ndarray) -> None:
    # One sparse-dense product instead of a Python loop: sums += onehot(labels).T @ chunk. It runs in
    # float32 within a chunk (no float64 copy of the chunk) and accumulates across chunks in float64.
    from scipy.sparse import csr_matrix

    k = sums.shape[0]
    onehot = csr_matrix((np.ones(len(labels), dtype=np.float32), (labels, np.arange(len(labels)))),
                        shape=(k, len(labels)))
    sums += onehot @ chunk


def kmeans_plusplus(S: np.ndarray, k: int, rng: np.random.Generator, n_local_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeds (the variant scikit-learn uses), in float32.

    Each new centre is the best of ``2 + log(k)`` candidates drawn with probability proportional to
    the squared distance to the nearest centre so far. (scikit-learn's own version computes these
    distances through a float64 upcast, several times slower on float32 data.)

    Args:
        S: np.ndarray of shape (n, d), float32: the rows to seed from (k <= n).
        k: number of centres.
        rng: random generator.

    Returns:
        np.ndarray of shape (k, d), float32: rows of ``S``.
    """
    S = np.asarray(S, dtype=np.float32)
    n = len(S)
    trials = n_local_trials or 2 + int(np.log(k))
    s_sq = np.einsum("ij,ij->i", S, S)

    def sq_dist(idx: np.ndarray) -> np.ndarray:  # (n, len(idx)) squared distances from every row to S[idx]
        d = S @ S[idx].T  # (n, d) @ (d, t): measured faster than the transposed product
        d *= -2.0
        d += s_sq[:, None]
        d += s_sq[None, idx]
        return np.maximum(d, 0.0, out=d)

    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    closest = sq_dist(chosen[:1])[:, 0]
    for c in range(1, k):
        cumulative = np.cumsum(closest, dtype=np.float64)
        if cumulative[-1] <= 0:  # fewer distinct rows than k: take any rows not chosen yet
            chosen[c] = np.setdiff1d(np.arange(n), chosen[:c])[0] if c < n else 0
            continue
        candidates = np.minimum(np.searchsorted(cumulative, rng.random(trials) * cumulative[-1]), n - 1)
        new = np.minimum(closest[:, None], sq_dist(candidates))
        best = int(np.argmin(new.sum(axis=0, dtype=np.float64)))
        chosen[c] = candidates[best]
        closest = np.ascontiguousarray(new[:, best])
    return S[chosen].copy()


# n_samples * n_features * k at or below which the loop runs BLAS on one thread.
SMALL_PROBLEM = 100_000_000


def lloyd(assigner: Assigner, k: int, *, seed: int = 0, n_init: int = 1, max_iter: int = 100, tol: float = 1e-4,
          init_sample: int | None = None, max_points_per_centroid: int | None = None,
          init: np.ndarray | None = None) -> ClusterResult:
    """Run k-means ``n_init`` times from k-means++ seeds and keep the lowest inertia.

    Args:
        assigner: the data (see :class:`Assigner`).
        k: number of clusters.
        seed: random seed.
        n_init: number of restarts.
        max_iter: iterations per restart.
        tol: stop when the relative decrease of inertia is below this.
        init_sample: k-means++ runs on at most this many sampled rows (default max(20 k, 10,000)).
        max_points_per_centroid: None (default) iterates on every row. A number m iterates on a
            random sample of m * k rows when there are more rows than that (as faiss does, with m = 256
            by default), then assigns every row to the final centres. ``history`` then holds the
            sample's inertia per iteration; ``inertia``, ``labels`` and ``distances`` cover all rows.
        init: start from these (k, n_features) centres instead of k-means++ seeds (then n_init must be 1).

    Returns:
        :class:`ClusterResult`; ``info`` records ``n_init``, the best ``restart``,
        ``max_points_per_centroid`` and ``n_train`` (rows the iterations ran on).
    """
    if n_init < 1 or max_iter < 1:
        raise ParameterError(f"n_init and max_iter must be at least 1; got {n_init} and {max_iter}.")
    if init is not None and (n_init != 1 or np.shape(init) != (k, assigner.n_features)):
        raise ParameterError(f"init must be {k} x {assigner.n_features} centres with n_init=1; "
                             f"got shape {np.shape(init)} and n_init={n_init}.")
    if max_points_per_centroid is not None and max_points_per_centroid < 1:
        raise ParameterError(f"max_points_per_centroid must be at least 1 or None; got {max_points_per_centroid}.")
    with small_problem_threads(assigner.n_samples * assigner.n_features * k):
        return _lloyd(assigner, k, seed, n_init, max_iter, tol, init_sample, max_points_per_centroid, init)


def small_problem_threads(size: int) -> contextlib.AbstractContextManager[Any]:
    """One thread (BLAS and OpenMP) while ``size`` (n_samples x n_features x k) is at most SMALL_PROBLEM.

    Small products run faster on one thread: waking and synchronising threads costs more than it saves
    (measured: 5x faster for 1000 x 1280, k = 2, n_init = 10, on a busy 2-core machine; the automatic-k
    sweep of 1000 x 1280 vectors, k = 2-30, 5.97 s -> 2.76 s on an idle one).
    """
    if size > SMALL_PROBLEM:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=1)


@functools.lru_cache(maxsize=4)
def _thread_controller_for(loaded: tuple[str, ...]) -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _thread_controller() -> Any:
    """A threadpoolctl controller, made again only when a library with its own thread pool was imported
    since: finding the pools reads the process's loaded libraries (about 3 ms each time, which a sweep
    of small fits would pay hundreds of times)."""
    return _thread_controller_for(tuple(m for m in ("numpy", "scipy", "sklearn", "torch", "faiss", "onnxruntime")
                                        if m in sys.modules))


def _lloyd(assigner: Assigner, k: int, seed: int, n_init: int, max_iter: int, tol: float, init_sample: int | None,
           max_points_per_centroid: int | None, init: np.ndarray | None = None) -> ClusterResult:
    rng = np.random.default_rng(seed)
    n = assigner.n_samples
    best: ClusterResult | None = None
    sample_n = init_sample or max(20 * k, 10_000)
    n_train = n if max_points_per_centroid is None else min(n, max_points_per_centroid * k)
    for run in range(n_init):
        run_seed = int(rng.integers(0, 2**31 - 1))
        run_rng = np.random.default_rng(run_seed)
        # The iterations run on `train`: all the data, or a random sample of n_train rows held in memory.
        train: Assigner = assigner if n_train == n else ArrayAssigner(assigner.sample(n_train, run_rng))
        if init is None:
            S = train.sample(sample_n, run_rng) if n_train > sample_n else train.rows(np.arange(n_train))
            centers = kmeans_plusplus(S, k, run_rng)
        else:
            centers = np.array(init, dtype=np.float32)
        history: list[float] = []
        prev = np.inf
        labels = sq = None
        for _it in range(max_iter):
            labels, sq, sums, counts = train.assign(centers)
            inertia = float(sq.sum(dtype=np.float64))
            history.append(inertia)
            new_centers = centers.copy()
            nonempty = counts > 0
            new_centers[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
            empty = np.flatnonzero(~nonempty)
            if len(empty):
                # Reseed empty clusters on the samples farthest from their centres.
                far = np.argsort(sq)[::-1][:len(empty)]
                new_centers[empty] = train.rows(np.sort(far))[np.argsort(np.argsort(far))]
            centers = new_centers
            if prev - inertia <= tol * max(inertia, 1e-12) and not len(empty):
                break
            prev = inertia
        labels, sq, _, _ = assigner.assign(centers)
        inertia = float(sq.sum(dtype=np.float64))
        result = ClusterResult(labels=labels, centers=centers, distances=np.sqrt(sq).astype(np.float32),
                               inertia=inertia, k=k, seed=seed, method="kmeans", n_iter=len(history),
                               history=tuple(history), info={"n_init": n_init, "restart": run,
                                                             "max_points_per_centroid": max_points_per_centroid,
                                                             "n_train": n_train})
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


# With max_points_per_centroid="auto", data this large iterate on a sample of 256 rows per centre
# (faiss's default); smaller data, like most folders of images, iterate on every row.
AUTO_SUBSAMPLE_FROM = 100_000
FAISS_POINTS_PER_CENTROID = 256


def fit_kmeans(X: np.ndarray | Rows | Assigner, k: int, *, seed: int = 0, n_init: int | str = "auto", max_iter: int = 100,
               tol: float = 1e-4, chunk_size: int = 32768,
               max_points_per_centroid: int | str | None = "auto") -> ClusterResult:
    """k-means on the rows of ``X`` (the original method's clusterer).

    Args:
        X: np.ndarray of shape (n_samples, n_features); a memory-mapped ``.npy`` works too
            (``np.load(path, mmap_mode="r", allow_pickle=False)``): it is read in chunks of ``chunk_size`` rows. ``X`` may
            also be an :class:`Assigner` (e.g. vectors held by Dask workers), or :class:`Rows` (which
            make their own), so every backend runs this same loop.
        k: number of clusters.
        seed: random seed.
        n_init: restarts; ``"auto"`` uses 10 for small problems and fewer as n * k grows.
        max_iter, tol: see :func:`lloyd`.
        chunk_size: rows per assignment chunk.
        max_points_per_centroid: iterate on a sample of this many rows per centre, then assign every
            row (see :func:`lloyd`); None iterates on every row; ``"auto"`` (default) is 256, faiss's
            default, when X has at least 100,000 rows, else None.

    Example:
        >>> X = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10]
        >>> fit_kmeans(X, 2).sizes.tolist()
        [5, 5]
    """
    if isinstance(X, Rows):
        X = X.assigner(chunk_size)
    assigner: Assigner = ArrayAssigner(X, chunk_size) if isinstance(X, np.ndarray) else X
    if n_init == "auto":
        work = assigner.n_samples * k
        n_init = 10 if work <= 2_000_000 else 3 if work <= 20_000_000 else 1
    if not isinstance(n_init, int):
        raise ParameterError(f"n_init must be a whole number or 'auto'; got {n_init!r}.")
    if max_points_per_centroid == "auto":
        max_points_per_centroid = FAISS_POINTS_PER_CENTROID if assigner.n_samples >= AUTO_SUBSAMPLE_FROM else None
    if isinstance(max_points_per_centroid, str):
        raise ParameterError(f"max_points_per_centroid must be a whole number, None or 'auto'; "
                             f"got {max_points_per_centroid!r}.")
    return lloyd(assigner, k, seed=seed, n_init=n_init, max_iter=max_iter, tol=tol,
                 max_points_per_centroid=max_points_per_centroid)


register_clusterer(ClustererSpec(
    name="kmeans",
    fit=fit_kmeans,
    description="k-means (Lloyd, k-means++ seeds, best of several restarts): the original method.",
))
