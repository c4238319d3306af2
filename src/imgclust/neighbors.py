"""Nearest neighbours by cosine similarity: exact in blocks for small data, a faiss index above.

One module for every feature that needs each vector's most similar vectors (the default
clustering's graph, near-duplicate groups, outlier scores, ``imgclust similar``).

- :func:`unit_rows` L2-normalises rows (cosine similarity = inner product of unit rows).
- :func:`knn` gives every row its ``n_neighbors`` most similar OTHER rows.
- :class:`NeighborIndex` is built once over unit rows and answers queries for new rows.

Exact or approximate: below ``exact_below`` rows (default :data:`EXACT_BELOW`) the search is exact,
a float32 matrix product in blocks of about 4M similarities (memory stays bounded); above it, a
faiss ``IndexIVFFlat`` with the inner-product metric:

- ``nlist`` = 2 sqrt(n) inverted lists (between 16 and 16,384), trained by faiss's k-means (10
  iterations) on at most 32 rows per list drawn with ``seed`` (faiss's clustering seed is set from it
  too);
- ``nprobe`` (lists visited per query) is calibrated on the data: 256 rows drawn with ``seed`` are
  searched exactly and with the index, and ``nprobe`` doubles from 8 until the recall of their
  ``n_neighbors`` neighbours is at least :data:`TARGET_RECALL` (0.95), every list is visited, or
  :data:`MAX_NPROBE` lists are (data with no structure: the recall then falls short, and is logged).
  The calibration is recorded in :attr:`NeighborIndex.recall` and :attr:`NeighborIndex.nprobe`.

IVF rather than HNSW because it is deterministic: faiss's HNSW inserts rows on several threads in
an order that varies from run to run, so two builds over the same rows differ; an IVF index trained
with a fixed seed and searched with a fixed ``nprobe`` returns the same neighbours every time.

Arrays only: no IO here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import ParameterError

log = logging.getLogger(__name__)

# Exact search below this many rows: 20,000 x 20,000 x 1280 is about 1e12 multiply-adds, ~10-20 s on
# two cores; above it the IVF index is faster and its cost grows roughly as n^1.5 instead of n^2.
EXACT_BELOW = 20_000
# Similarity blocks of at most this many float32 entries (16 MB), so memory stays bounded: with the partial
# sort's temporaries a block costs about six times its size (98 MB at 19,000 x 1,280; 194 MB with blocks
# twice as large, no faster; 50 MB with blocks half as large, 20% slower), and the Dask client's peak
# depends on it.
_BLOCK_ENTRIES = 1 << 22
TARGET_RECALL = 0.95
# At most this many lists visited per query: a query then reads about 16 sqrt(n) rows, so the search
# stays near n^1.5 even on data with little structure (noise, drawn test images), where no nprobe
# short of every list reaches the target recall and the search would turn quadratic. Lite0 vectors of
# the three shared sets (27,000 rows with noisy copies) reach the target at 8 (10 neighbours) and 16
# (40); the recall reached is recorded and a shortfall logged.
MAX_NPROBE = 32
# Above ``exact_below`` rows, :func:`knn` on vectors of more than PROJECT_DIMS values searches their
# projection onto the PROJECT_DIMS leading singular directions (of at most _PROJECT_ROWS rows) for
# _CANDIDATES x n_neighbors candidates, then keeps the n_neighbors most similar by their exact cosine.
PROJECT_DIMS = 128
_PROJECT_ROWS = 5_000
_CANDIDATES = 2
_RERANK_CHUNK = 2_048
_CALIBRATION_QUERIES = 256
# Rows per search in NeighborIndex.knn_self and per addition to an IVF index (its per-row arrays are then
# at most ~16-32 MB a chunk).
_SELF_CHUNK = 65_536
_TRAIN_PER_LIST = 32


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 norm (all-zero rows stay zero).

    Args:
        X: np.ndarray of shape (n_samples, n_features).

    Returns:
        np.ndarray of shape (n_samples, n_features), float32, C-contiguous.

    Example:
        >>> unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ParameterError(f"X must be a 2-D array of shape (n_samples, n_features); got shape {X.shape}.")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, 1e-12), dtype=np.float32)


def _check_m(n_neighbors: Any, n_base: int, *, self_excluded: bool) -> int:
    limit = n_base - 1 if self_excluded else n_base
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or not 1 <= n_neighbors <= limit:
        raise ParameterError(f"n_neighbors must be a whole number between 1 and {limit} "
                             f"(the number of {'other ' if self_excluded else ''}rows); got {n_neighbors!r}.")
    return int(n_neighbors)


def _exact_search(base: np.ndarray, Q: np.ndarray, m: int, self_offset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``m`` inner products of each row of ``Q`` with ``base``, in blocks of queries.

    With ``self_offset`` set, query row i is base row ``self_offset + i`` and is excluded.
    """
    n = len(base)
    block = max(1, _BLOCK_ENTRIES // max(n, 1))
    sims = np.empty((len(Q), m), dtype=np.float32)
    idx = np.empty((len(Q), m), dtype=np.int64)
    for start in range(0, len(Q), block):
        S = Q[start:start + block] @ base.T
        rows = np.arange(len(S))
        if self_offset is not None:
            S[rows, self_offset + start + rows] = -np.inf  # never your own neighbour
        part = np.argpartition(-S, m - 1, axis=1)[:, :m] if m < n else np.broadcast_to(np.arange(n), (len(S), n))
        vals = np.take_along_axis(S, part, axis=1)
        # Most similar first; equal similarities by index, so the order is reproducible.
        order = np.lexsort((part, -vals), axis=1)
        idx[start:start + len(S)] = np.take_along_axis(part, order, axis=1)
        sims[start:start + len(S)] = np.take_along_axis(vals, order, axis=1)
    return sims, idx


class NeighborIndex:
    """An index over unit rows that returns the most similar rows for new queries.

    Exact (blocked matrix products) below ``exact_below`` rows, a calibrated faiss IVF index above
    (see the module docstring). Deterministic for a given ``seed``.

    Args:
        Z: np.ndarray of shape (n_samples, n_features), rows of unit length (see :func:`unit_rows`).
        exact_below: exact search below this many rows.
        seed: seed of the IVF training sample, its k-means and the calibration queries.
        n_neighbors: the neighbour count the IVF index is calibrated for (its recall target).
        half_precision: the IVF index keeps the rows as float16 (for a search whose candidates are
            then ranked by their exact similarity, as :func:`knn` does).

    Attributes:
        exact: True for exact search.
        nlist, nprobe: the IVF index's lists and lists visited per query (0 when exact).
        recall: the calibrated recall at ``n_neighbors`` (1.0 when exact).

    Example:
        >>> Z = unit_rows(np.eye(4) + 0.1)
        >>> sims, idx = NeighborIndex(Z).search(Z[:1], 1)
        >>> int(idx[0, 0])
        0
    """

    def __init__(self, Z: np.ndarray, *, exact_below: int = EXACT_BELOW, seed: int = 0, n_neighbors: int = 10,
                 half_precision: bool = False) -> None:
        Z = np.ascontiguousarray(Z, dtype=np.float32)
        if Z.ndim != 2 or len(Z) == 0:
            raise ParameterError(f"A neighbour index needs a non-empty 2-D array; got shape {Z.shape}.")
        self.Z: np.ndarray | None = Z
        self.n, self.d = (int(v) for v in Z.shape)
        self.exact = len(Z) < exact_below
        self.nlist = 0
        self.nprobe = 0
        self.recall = 1.0
        self._index: Any = None
        self.half_precision = bool(half_precision)
        if not self.exact:
            self._build_ivf(seed, min(max(1, n_neighbors), len(Z) - 1))

    def __len__(self) -> int:
        return self.n

    @property
    def n_features(self) -> int:
        return self.d

    def _rows(self) -> np.ndarray:
        if self.Z is None:
            raise RuntimeError("This index was built block by block (IVFBuilder) and holds no rows; it only searches.")
        return self.Z

    def _build_ivf(self, seed: int, m: int) -> None:
        Z = self._rows()
        train, queries = ivf_sample_rows(self.n, seed)
        builder = IVFBuilder(self.n, Z[train] if train is not None else Z, Z[queries], seed=seed, n_neighbors=m,
                             half_precision=self.half_precision)
        for start in range(0, self.n, _SELF_CHUNK):  # in chunks: faiss's temporaries (residuals, codes) stay small
            builder.add(Z[start:start + _SELF_CHUNK])
        built = builder.finish()
        self._index, self.nlist, self.nprobe, self.recall = built._index, built.nlist, built.nprobe, built.recall

    def search(self, Q: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n_neighbors`` most similar indexed rows of each query row.

        Args:
            Q: np.ndarray of shape (n_queries, n_features), rows of unit length.
            n_neighbors: 1 <= n_neighbors <= len(self).

        Returns:
            (sims, idx): np.ndarray of shape (n_queries, n_neighbors), float32 cosine similarities,
            most similar first, and int64 indices into the indexed rows (-1 where the approximate
            index found fewer, with similarity -inf).
        """
        m = _check_m(n_neighbors, self.n, self_excluded=False)
        Q = self._queries(Q)
        if self.exact:
            return _exact_search(self._rows(), Q, m)
        return self._ivf_search(Q, m)

    def _queries(self, Q: np.ndarray) -> np.ndarray:
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        if Q.ndim != 2 or Q.shape[1] != self.n_features:
            raise ParameterError(f"Queries must have shape (n, {self.n_features}); got {Q.shape}.")
        return Q

    def _ivf_search(self, Q: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = self._index.search(Q, m)
        sims = np.where(idx < 0, -np.inf, sims).astype(np.float32)
        return sims, idx.astype(np.int64)

    def knn_self(self, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """Every indexed row's ``n_neighbors`` most similar OTHER indexed rows (see :func:`knn`)."""
        m = _check_m(n_neighbors, self.n, self_excluded=True)
        Z = self._rows()
        if self.exact:
            return _exact_search(Z, Z, m, self_offset=0)
        out_sims = np.empty((self.n, m), dtype=np.float32)
        out_idx = np.empty((self.n, m), dtype=np.int64)
        for start in range(0, self.n, _SELF_CHUNK):  # in chunks, so the search's own arrays stay small
            stop = min(start + _SELF_CHUNK, self.n)
            out_sims[start:stop], out_idx[start:stop] = self.search_self(start, Z[start:stop], m)
        return out_sims, out_idx

    def search_self(self, start: int, Q: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n_neighbors`` most similar OTHER indexed rows of the indexed rows ``start, start + 1, ...``,
        given as ``Q`` (so a process that holds a block of the rows, not the index's copy, can search them).

        Returns:
            (sims, idx) as :meth:`search`; a row is never its own neighbour (an identical copy of it may be).
        """
        m = _check_m(n_neighbors, self.n, self_excluded=True)
        Q = self._queries(Q)
        if self.exact:
            return _exact_search(self._rows(), Q, m, self_offset=start)
        sims, idx = self._ivf_search(Q, m + 1)
        is_self = idx == np.arange(start, start + len(idx))[:, None]
        # Drop the row itself where found; otherwise drop the last (least similar) neighbour.
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), m)
        keep = np.ones_like(idx, dtype=bool)
        keep[np.arange(len(idx)), drop] = False
        return sims[keep].reshape(len(idx), m), idx[keep].reshape(len(idx), m)

    def __getstate__(self) -> dict[str, Any]:
        # A faiss index does not pickle; its serialised bytes do (the Dask backend sends indexes to workers).
        state = dict(self.__dict__)
        if self._index is not None:
            import faiss

            state["_index"] = faiss.serialize_index(self._index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._index is not None:
            import faiss

            self._index = faiss.deserialize_index(self._index)
            self._index.nprobe = self.nprobe


def ivf_sample_rows(n: int, seed: int) -> tuple[np.ndarray | None, np.ndarray]:
    """The rows an IVF index over ``n`` rows is trained on (sorted; None: every row) and the rows its
    ``nprobe`` is calibrated with (sorted), both drawn with ``seed``: what :class:`IVFBuilder` needs first."""
    nlist = ivf_lists(n)
    rng = np.random.default_rng(seed)
    n_train = min(n, _TRAIN_PER_LIST * nlist)
    train = None if n_train == n else np.sort(rng.choice(n, size=n_train, replace=False))
    return train, np.sort(rng.choice(n, size=min(_CALIBRATION_QUERIES, n), replace=False))


def ivf_lists(n: int) -> int:
    """The inverted lists of an IVF index over ``n`` rows: 2 sqrt(n), between 16 and 16,384 (and n / 4)."""
    return int(min(16_384, max(16, round(2 * math.sqrt(n))), n // 4 or 1))


class IVFBuilder:
    """Builds the IVF :class:`NeighborIndex` over ``n`` rows given block by block, in row order, so the
    rows are never all held at once (the index keeps its own copy, float16 with ``half_precision``).

    Args:
        n: rows the index will hold.
        train: the rows at :func:`ivf_sample_rows`'s training rows (every row when it gives None).
        queries: the rows at its calibration rows: their exact neighbours are kept up to date as the
            blocks come (the calibration of ``nprobe`` needs them, and the rows are not kept).
        seed, n_neighbors, half_precision: as :class:`NeighborIndex`.

    Use :meth:`add` for every block, then :meth:`finish`. The index equals the one
    ``NeighborIndex(Z, exact_below=1, ...)`` builds over the same rows.
    """

    def __init__(self, n: int, train: np.ndarray, queries: np.ndarray, *, seed: int = 0, n_neighbors: int = 10,
                 half_precision: bool = False) -> None:
        import faiss  # a core dependency (faiss-cpu); imported here so small runs do not pay for it

        train = np.ascontiguousarray(train, dtype=np.float32)
        self.n, self.d = n, int(train.shape[1])
        self.nlist = ivf_lists(n)
        self.m = min(max(1, n_neighbors), n - 1)
        self.half_precision = bool(half_precision)
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.added = 0
        # The calibration queries' most similar rows so far (the row itself among them), most similar first.
        self.truth_sims = np.full((len(queries), 0), -np.inf, np.float32)
        self.truth_idx = np.zeros((len(queries), 0), np.int64)
        quantizer = faiss.IndexFlatIP(self.d)
        index: Any
        if self.half_precision:  # half the bytes to scan per list: about twice as fast (see knn)
            index = faiss.IndexIVFScalarQuantizer(quantizer, self.d, self.nlist, faiss.ScalarQuantizer.QT_fp16,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, self.d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed) % (2**31)
        index.cp.niter = 10
        index.cp.min_points_per_centroid = 1  # no warning when there are few rows per list
        index.train(train)
        self.index = index

    def add(self, block: np.ndarray) -> None:
        """Add the next rows (rows ``added, added + 1, ...``): np.ndarray of shape (b, d)."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self.added + len(block) > self.n:
            raise ValueError(f"{self.added + len(block)} rows added to an index built for {self.n}")
        self.index.add(block)
        keep = self.m + 1
        sims, idx = _exact_search(block, self.queries, min(keep, len(block)))
        sims = np.concatenate([self.truth_sims, sims], axis=1)
        idx = np.concatenate([self.truth_idx, idx + self.added], axis=1)
        order = np.lexsort((idx, -sims), axis=1)[:, :keep]  # as _exact_search orders: ties by row
        self.truth_sims = np.take_along_axis(sims, order, axis=1)
        self.truth_idx = np.take_along_axis(idx, order, axis=1)
        self.added += len(block)

    def finish(self) -> NeighborIndex:
        """The index, its ``nprobe`` calibrated: the smallest power of two from 8 whose recall on the
        calibration queries is at least :data:`TARGET_RECALL` (module docstring). It holds no rows (only
        faiss's own copy): small to hold and to send to other processes, it serves
        :meth:`NeighborIndex.search` and :meth:`NeighborIndex.search_self`."""
        if self.added != self.n:
            raise ValueError(f"{self.added} rows added to an index built for {self.n}")
        index, m, n = self.index, self.m, self.n
        nprobe = min(8, self.nlist)
        while True:
            index.nprobe = nprobe
            _, found = index.search(self.queries, m + 1)
            hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(self.truth_idx, found, strict=True))
            recall = hits / self.truth_idx.size
            if recall >= TARGET_RECALL or nprobe >= min(self.nlist, MAX_NPROBE):
                break
            nprobe = min(self.nlist, MAX_NPROBE, nprobe * 2)
        if recall < TARGET_RECALL:
            log.warning("The approximate neighbour search over %d rows finds %.0f%% of the true %d nearest "
                        "neighbours (target %.0f%%): the vectors have little structure. Visiting more lists "
                        "would make the search quadratic; results that use neighbours are less exact.",
                        n, 100 * recall, m, 100 * TARGET_RECALL)
        log.debug("IVF index over %d rows: nlist=%d, nprobe=%d, recall@%d=%.3f", n, self.nlist, nprobe, m, recall)
        out = NeighborIndex.__new__(NeighborIndex)
        out.Z, out.n, out.d, out.exact = None, n, self.d, False
        out.nlist, out.nprobe, out.recall = self.nlist, nprobe, recall
        out._index, out.half_precision = index, self.half_precision
        return out


def knn(Z: np.ndarray, n_neighbors: int, *, exact_below: int = EXACT_BELOW, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``n_neighbors`` most similar other rows, by cosine similarity of unit rows.

    Exact below ``exact_below`` rows; above, a faiss IVF index calibrated for a recall of at least
    0.95 (module docstring), over the rows projected onto their :data:`PROJECT_DIMS` leading
    directions when they are wider (kept as float16), with the candidates it finds ranked by their
    exact cosine. A row
    is never its own neighbour (an identical copy of it may be).

    Args:
        Z: np.ndarray of shape (n_samples, n_features), rows of unit length (see :func:`unit_rows`).
        n_neighbors: 1 <= n_neighbors < n_samples.
        exact_below: exact search below this many rows.
        seed: seed of the approximate index (deterministic for a seed).

    Returns:
        (sims, idx): np.ndarray of shape (n_samples, n_neighbors), float32 similarities, most similar
        first, and int64 row indices (-1 with similarity -inf where the approximate index found fewer).

    Example:
        >>> Z = unit_rows(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
        >>> knn(Z, 1)[1].ravel().tolist()
        [1, 0, 1]
    """
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    if Z.ndim != 2 or len(Z) < 2:
        raise ParameterError(f"knn needs a 2-D array with at least 2 rows; got shape {Z.shape}.")
    m = _check_m(n_neighbors, len(Z), self_excluded=True)
    if len(Z) < exact_below or Z.shape[1] <= PROJECT_DIMS or len(Z) <= PROJECT_DIMS:
        return NeighborIndex(Z, exact_below=exact_below, seed=seed, n_neighbors=m).knn_self(m)
    # Large and wide: candidates from the projection (several times fewer multiply-adds per query,
    # which is what keeps a million rows affordable), then the exact cosine decides among them.
    P = leading_directions(Z, PROJECT_DIMS, seed=seed)
    mc = min(len(Z) - 1, _CANDIDATES * m)
    # The index keeps the projected rows as float16: half the bytes to scan, about twice as fast, and the
    # candidates it finds agree with a float32 index's to 99.7% (bench: 200,000 rows), before the ranking.
    _, cand = NeighborIndex(unit_rows(Z @ P), exact_below=exact_below, seed=seed, n_neighbors=mc,
                            half_precision=True).knn_self(mc)
    return rerank(Z, cand, m)


def leading_directions(Z: np.ndarray, dims: int, *, seed: int = 0, rows: int = _PROJECT_ROWS) -> np.ndarray:
    """The ``dims`` leading right singular directions of (a seeded sample of at most ``rows`` rows of) ``Z``.

    The leading eigenvectors of the Gram matrix S^T S are the leading right singular vectors of S, and a
    d x d eigensolve is far cheaper than an SVD of the rows.

    Returns:
        np.ndarray of shape (n_features, dims), float32: ``Z @ P`` projects rows onto them.
    """
    S = Z if len(Z) <= rows else Z[projection_sample(len(Z), seed=seed, rows=rows)]
    S = np.asarray(S, dtype=np.float64)
    _, vecs = np.linalg.eigh(S.T @ S)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dims], dtype=np.float32)


def projection_sample(n: int, *, seed: int = 0, rows: int = _PROJECT_ROWS) -> np.ndarray:
    """The sorted rows (of ``n`` > ``rows``) whose leading directions :func:`leading_directions` finds."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:rows])


def rerank(Z: np.ndarray, cand: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` candidates of each row with the highest exact inner product (missing candidates, -1, last).

    Args:
        Z: np.ndarray of shape (n_samples, n_features), unit rows (cosine similarity).
        cand: np.ndarray of shape (n_samples, c), int64 candidate row indices (-1: none), c >= m.
        m: how many to keep.

    Returns:
        (sims, idx) of shape (n_samples, m), as :func:`knn` returns them.
    """
    return rerank_queries(Z, cand, m, lambda rows: Z[rows])


def rerank_queries(Q: np.ndarray, cand: np.ndarray, m: int,
                   read: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rerank` of the query rows ``Q`` (unit rows) whose candidates' unit rows ``read`` returns.

    Args:
        Q: np.ndarray of shape (n_queries, n_features); cand: (n_queries, c) int64 candidates (-1: none).
        read: the unit rows at sorted, distinct row indices (rows elsewhere: read where they are held).

    Candidates are read a chunk of queries at a time, so at most ``2,048 x c`` rows are held at once.
    """
    n = len(Q)
    sims = np.empty((n, m), dtype=np.float32)
    idx = np.empty((n, m), dtype=np.int64)
    for start in range(0, n, _RERANK_CHUNK):
        c = cand[start:start + _RERANK_CHUNK]
        wanted, where = np.unique(np.maximum(c, 0).ravel(), return_inverse=True)
        s = np.einsum("ij,ikj->ik", Q[start:start + len(c)], read(wanted)[where.reshape(c.shape)])
        s = np.where(c >= 0, s, -np.inf).astype(np.float32)
        order = np.lexsort((c, -s), axis=1)[:, :m]
        idx[start:start + len(c)] = np.take_along_axis(c, order, axis=1)
        sims[start:start + len(c)] = np.take_along_axis(s, order, axis=1)
    return sims, idx
