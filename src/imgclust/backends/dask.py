"""The Dask backend: extraction in shards on Dask workers, k-means over chunks held by the workers.

Extraction: the client looks every file up in the embedding cache and sends the missing ones to
the workers in shards. A worker builds the extractor once (one per worker process, kept for the
life of the process, so the network is loaded once) and runs the same extraction loop as a local
run on its shard, then stores the shard's vectors in the embedding store (its own append-only
segment file per worker process, indexed in the store's SQLite index; see
:mod:`imgclust.store.vectors`). **The cache folder must be on a filesystem that the client and
every worker see under the same path** (one machine, or a network filesystem whose locks SQLite
can use).

With at most ``max_client_rows`` usable images (20,000, the default clustering's sample size) the
client reads every vector back from the store and the run continues as a local one. With more,
the vectors stay in the store (:class:`StoreRows`): the client holds only where each row is, reads
a seeded sample itself, and every pass over all rows runs on the workers, block by block, each
worker reading its block from the store (:mod:`imgclust.cluster.rows`). For the default settings:
automatic k and the spectral graph on the sample here; the rows outside the sample find their
neighbours in it, and every row's cluster sum and distance to its centre, and its place on the
report's map, on the workers. The client's memory then holds the sample and a few numbers per
image, whatever n is.

A shard that runs twice (Dask reschedules the shards of a worker that died) finds its keys
already indexed and changes nothing: every key has one vector.

k-means: the vectors are cut into the same row chunks as the local engine uses and scattered to
the workers (or read there from the store); each Lloyd iteration sends the centres out, every worker assigns its chunks and
returns per-chunk labels, distances, sums and counts, and the client adds them up in chunk order.
The loop itself is :func:`imgclust.cluster.kmeans.lloyd`, so a Dask run and a local run with the
same seed give the same labels.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import EmbeddingCache, file_keys
from ..cluster import ClusterResult, cluster, validate_k
from ..cluster.kmeans import ArrayAssigner, fit_kmeans
from ..cluster.rows import BlockFn, Rows
from ..cluster.spectral import SAMPLE_SIZE
from ..config import RunConfig
from ..errors import CacheError, ParameterError, missing_dependency
from ..features import Extractor, get_extractor
from ..features.extract import Extraction, extract, unreadable
from ..io.discover import ImageRecord
from ..store import VectorStore
from . import Backend, Progress

log = logging.getLogger(__name__)

# Above this many usable images the vectors stay in the store and the workers process them (DaskBackend).
MAX_CLIENT_ROWS = SAMPLE_SIZE
# Images per shard at most: one part file of 256 x 1280 float32 = 1.3 MB for EfficientNet vectors.
MAX_SHARD = 256
# Row chunks for k-means: the local engine's default, so that sums are added in the same order.
CHUNK_ROWS: int = inspect.signature(fit_kmeans).parameters["chunk_size"].default


# -- on the workers ----------------------------------------------------------------------------

# One extractor per (features, options) per worker process: the network is loaded once and reused
# by every shard this worker runs.
_EXTRACTORS: dict[str, Extractor] = {}
_EXTRACTORS_LOCK = threading.Lock()


def worker_extractor(features: str, options: dict[str, Any], cache_id: str) -> Extractor:
    """This process's extractor for ``features`` with ``options``, built on first use.

    Raises:
        CacheError: it would make other vectors than the client's (another imgclust version).
    """
    key = json.dumps([features, options], sort_keys=True, default=str)
    with _EXTRACTORS_LOCK:
        extractor = _EXTRACTORS.get(key)
        if extractor is None:
            extractor = _EXTRACTORS[key] = get_extractor(features, **options)
    if extractor.cache_id() != cache_id:
        raise CacheError(f"A Dask worker's {features} makes other vectors ({extractor.cache_id()}) than this "
                         f"machine's ({cache_id}). Install the same imgclust version on every worker.")
    return extractor


@dataclass(frozen=True)
class Shard:
    """One task: records to embed and where their vectors go."""

    features: str
    feature_options: dict[str, Any]
    cache_id: str
    folder: str
    dim: int
    batch_size: int
    records: tuple[ImageRecord, ...]
    keys: tuple[str, ...]


@dataclass(frozen=True)
class ShardOutcome:
    """What a worker reports back: the status and error of every record of the shard, in order."""

    statuses: list[tuple[str, str]] = field(default_factory=list)
    n_vectors: int = 0


# One store per folder per worker process: one segment file per worker, not one per shard.
_STORES: dict[tuple[str, int], VectorStore] = {}


def worker_store(folder: str, dim: int) -> VectorStore:
    """This process's writer into the embedding store in ``folder``."""
    with _EXTRACTORS_LOCK:
        store = _STORES.get((folder, dim))
        if store is None:
            store = _STORES[(folder, dim)] = VectorStore(Path(folder), dim)
    return store


def embed_shard_to_store(shard: Shard) -> ShardOutcome:
    """Runs on a worker: embed one shard with the local extraction loop and store its vectors (one batch)."""
    extractor = worker_extractor(shard.features, shard.feature_options, shard.cache_id)
    ex = extract(shard.records, extractor, batch_size=shard.batch_size)
    keys = [key for key, r in zip(shard.keys, ex.records, strict=True) if r.ok]
    if keys:
        worker_store(shard.folder, shard.dim).put_many(keys, ex.X)
    return ShardOutcome([(r.status, r.error) for r in ex.records], len(keys))


def read_block(folder: str, dim: int, segments: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Runs on a worker: the vectors at (segments, rows) of the embedding store in ``folder``."""
    return worker_store(folder, dim).read_located(segments, rows)


class LocatedReader:
    """Reads rows by index from the embedding store in ``folder`` where it runs (see :meth:`StoreRows.reader`);
    pickles as the folder and each row's place (16 bytes a row), not the vectors."""

    def __init__(self, folder: str, dim: int, segments: np.ndarray, rows: np.ndarray) -> None:
        self.folder, self.dim, self.segments, self.rows = folder, dim, segments, rows

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return read_block(self.folder, self.dim, self.segments[idx], self.rows[idx])


def run_block(folder: str, dim: int, segments: np.ndarray, rows: np.ndarray, start: int, fn: BlockFn,
              pieces: list[np.ndarray], shared: tuple[Any, ...]) -> Any:
    """Runs on a worker: read one block of rows from the store and call ``fn`` on it (see :class:`StoreRows`)."""
    return fn(start, read_block(folder, dim, segments, rows), *pieces, *shared)


def _assign_chunk(chunk: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return ArrayAssigner(chunk, chunk_size=max(1, len(chunk))).assign(centers)


def _take(chunk: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.asarray(chunk[idx], dtype=np.float32)


# -- on the client -----------------------------------------------------------------------------

class DaskAssigner:
    """The k-means :class:`~imgclust.cluster.kmeans.Assigner` over row chunks held by Dask workers.

    Args:
        client: a ``distributed.Client``.
        chunks: futures of the row chunks, in order, each of ``chunk_size`` rows (the last may be shorter).
        shape: (n_samples, n_features) of all chunks together.

    Use :meth:`scatter` for an array held here, or :meth:`StoreRows.assigner` for rows the workers
    read from the embedding store.
    """

    def __init__(self, client: Any, chunks: list[Any], shape: tuple[int, int], chunk_size: int = CHUNK_ROWS) -> None:
        self.client = client
        self.n_samples, self.n_features = shape
        self.chunk_size = chunk_size
        self.starts = list(range(0, self.n_samples, chunk_size))
        self.chunks = chunks

    @classmethod
    def scatter(cls, client: Any, X: np.ndarray, chunk_size: int = CHUNK_ROWS) -> DaskAssigner:
        """``X`` (n_samples, n_features), float32, cut into chunks of ``chunk_size`` rows sent to the workers once."""
        starts = range(0, len(X), chunk_size)
        chunks = client.scatter([np.asarray(X[s:s + chunk_size], dtype=np.float32) for s in starts])
        return cls(client, chunks, (int(X.shape[0]), int(X.shape[1])), chunk_size)

    def assign(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        centers = np.asarray(centers, dtype=np.float32)
        k = len(centers)
        # Sent once to every worker (not once per chunk); released when ``shared`` goes out of scope.
        shared = self.client.scatter(centers, broadcast=True, hash=False)
        parts = self.client.gather([self.client.submit(_assign_chunk, c, shared, pure=False) for c in self.chunks])
        sums = np.zeros((k, self.n_features), dtype=np.float64)
        counts = np.zeros(k, dtype=np.int64)
        for _, _, chunk_sums, chunk_counts in parts:  # in chunk order, as the local engine adds them
            sums += chunk_sums
            counts += chunk_counts
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), sums, counts)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # The same draw as the local engine, so the same seed picks the same rows.
        idx = np.sort(rng.choice(self.n_samples, size=min(n, self.n_samples), replace=False))
        return self.rows(idx)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.n_features), dtype=np.float32)
        which = idx // self.chunk_size
        wanted = {int(c): np.flatnonzero(which == c) for c in np.unique(which)}
        futures = {c: self.client.submit(_take, self.chunks[c], idx[pos] - self.starts[c], pure=False)
                   for c, pos in wanted.items()}
        for c, rows in zip(futures, self.client.gather(list(futures.values())), strict=True):
            out[wanted[c]] = rows
        return out

    def close(self) -> None:
        self.client.cancel(self.chunks)


class StoreRows(Rows):
    """Rows that stay in the embedding store: the workers read and process them block by block.

    The client holds where each row is (segment and row in the store: 16 bytes a row), reads the
    few rows of a sample itself (the store's folder is shared), and sends :meth:`map_blocks` work to
    the workers, each reading its block with positioned reads. Results come back in block order.
    """

    def __init__(self, backend: DaskBackend, store: VectorStore, segments: np.ndarray, rows: np.ndarray) -> None:
        self.backend = backend
        self.store = store
        self.folder = str(store.folder.resolve())
        self.n, self.dim = len(rows), store.dim
        self.segments, self.rows = segments, rows

    def take(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return self.store.read_located(self.segments[idx], self.rows[idx])

    def map_blocks(self, fn: BlockFn, *shared: Any, split: Sequence[np.ndarray] = ()) -> Iterator[Any]:
        client = self.backend.client
        # Sent once to every worker, not once per block.
        sent = client.scatter([tuple(shared)], broadcast=True, hash=False)[0]
        pending = deque(client.submit(run_block, self.folder, self.dim, self.segments[start:stop],
                                      self.rows[start:stop], start, fn, [a[start:stop] for a in split], sent,
                                      pure=False)
                        for start, stop in self.blocks())
        while pending:  # in block order; each result is let go once taken
            yield pending.popleft().result()

    def reader(self) -> LocatedReader:
        return LocatedReader(self.folder, self.dim, self.segments, self.rows)

    def assigner(self, chunk_size: int) -> DaskAssigner:
        client = self.backend.client
        starts = range(0, self.n, chunk_size)
        chunks = [client.submit(read_block, self.folder, self.dim, self.segments[s:s + chunk_size],
                                self.rows[s:s + chunk_size], pure=False) for s in starts]
        return DaskAssigner(client, chunks, self.shape, chunk_size)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class DaskBackend(Backend):
    """Extraction and k-means on a Dask cluster.

    Args:
        scheduler: address of a running scheduler (``tcp://HOST:8786``); None starts a
            ``LocalCluster`` on this machine.
        workers: worker processes of that local cluster (default: one per core), each with one
            task thread (the network uses the cores).
        shard_size: images per task (default: enough shards for about four per worker, at most 256).
        timeout: seconds to wait for the scheduler and for a first worker.
        max_client_rows: with at most this many usable images (default 20,000, the size of the
            default clustering's sample), this machine reads every vector back from the store; with
            more, the vectors stay in the store (:class:`StoreRows`): this machine reads a sample and
            the workers process every block of rows, so its memory does not grow with the vectors.

    The cluster is started (or connected to) on first use and closed by :meth:`close`.

    Example:
        >>> with DaskBackend("tcp://10.0.0.5:8786") as backend:  # doctest: +SKIP
        ...     imgclust.run("/shared/photos", "out", k=20, cache="/shared/cache", backend=backend)
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, *, workers: int | None = None, shard_size: int | None = None,
                 timeout: float = 30.0, max_client_rows: int = MAX_CLIENT_ROWS) -> None:
        if importlib.util.find_spec("distributed") is None:
            raise missing_dependency("dask[distributed]", extra="dask", purpose="--backend dask")
        if scheduler is not None and workers is not None:
            raise ParameterError("Give either --scheduler (connect to a running cluster) or --workers "
                                 "(start one on this machine), not both.")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ParameterError(f"workers must be a whole number >= 1; got {workers!r}.")
        if shard_size is not None and (not isinstance(shard_size, int) or shard_size < 1):
            raise ParameterError(f"shard_size must be a whole number >= 1; got {shard_size!r}.")
        self.scheduler = scheduler
        self.workers = workers
        self.shard_size = shard_size
        self.timeout = timeout
        self.max_client_rows = max_client_rows
        self._cluster: Any = None
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The ``distributed.Client``, connected (or the local cluster started) on first use."""
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.scheduler is None:
                self._cluster = LocalCluster(n_workers=self.workers or _cores(), threads_per_worker=1,
                                             processes=True, dashboard_address=None)
                self._client = Client(self._cluster, set_as_default=False)
            else:
                try:
                    self._client = Client(self.scheduler, timeout=self.timeout, set_as_default=False)
                except (OSError, TimeoutError, ValueError) as exc:
                    raise ParameterError(
                        f"Cannot reach the Dask scheduler at {self.scheduler} ({exc}). Start one with "
                        f"'dask scheduler' and workers with 'dask worker {self.scheduler}', or leave out "
                        "--scheduler to start workers on this machine.") from exc
                try:
                    self._client.wait_for_workers(1, timeout=self.timeout)
                except TimeoutError as exc:
                    self.close()
                    raise ParameterError(f"The Dask scheduler at {self.scheduler} has no workers after "
                                         f"{self.timeout:g} s. Start some with 'dask worker {self.scheduler}'.") from exc
        return self._client

    @property
    def n_workers(self) -> int:
        return len(self.client.nthreads())

    def describe(self) -> dict[str, Any]:
        """Always the same keys. ``n_workers`` is 0 and ``scheduler`` None when no work was sent to Dask
        (every vector came from the cache and the clustering ran on this machine): then no cluster was
        started or connected to, and none is started just to be described."""
        if self._client is None:
            return {"name": self.name, "scheduler": None, "n_workers": 0}
        return {"name": self.name, "scheduler": self._client.scheduler.address, "n_workers": self.n_workers}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    # -- seam 1: extraction -------------------------------------------------------------------
    def extract(self, records: Sequence[ImageRecord], extractor: Extractor, config: RunConfig, *,
                cache: EmbeddingCache | None, progress: Progress | None = None) -> Extraction:
        """Embed the files missing from ``cache`` on the workers, then read every vector from ``cache``,
        or, above ``max_client_rows`` usable images, leave them there: ``X`` is then :class:`StoreRows`.

        Raises:
            ParameterError: no cache (the workers need one to write into).
            CacheError: the workers' vectors cannot be read back (the cache folder is not shared).
        """
        if cache is None:
            raise ParameterError("The dask backend stores vectors in the embedding cache, which every worker "
                                 "writes into; it cannot run with --no-cache. Pass --cache DIR on a filesystem "
                                 "that every worker shares.")
        records = list(records)
        ok = [i for i, r in enumerate(records) if r.ok]
        digests = cache.digests if config.identity == "content" else None
        # An OSError (unreadable file) is recorded below (by extract() or _leave_in_store) as the reason.
        keyed = list(zip(ok, file_keys([records[i] for i in ok], config.identity, digests), strict=True))
        known = [(i, key) for i, key in keyed if isinstance(key, str)]
        n_usable = len(known)
        present = cache.contains_many([key for _, key in known])
        todo = [pair for pair, p in zip(known, present, strict=True) if not p]
        n_computed = 0
        if todo:
            n_computed = self._embed_on_workers(records, todo, extractor, config, cache, n_usable, progress)
            wanted = [key for i, key in todo if records[i].ok]
            lost = [key for key, p in zip(wanted, cache.contains_many(wanted), strict=True) if not p]
            if lost:
                raise CacheError(f"The Dask workers embedded {len(lost)} images into {cache.folder}, but this "
                                 "machine cannot read them there. The cache folder must be on a filesystem "
                                 "that this machine and every worker share, under the same path (--cache DIR).")
        if n_usable > self.max_client_rows:
            return self._leave_in_store(records, keyed, cache, n_computed)
        ex = extract(records, extractor, cache=cache, batch_size=config.batch_size, identity=config.identity,
                     progress=progress)
        return replace(ex, n_computed=ex.n_computed + n_computed, n_cached=ex.n_cached - n_computed)

    def _leave_in_store(self, records: list[ImageRecord], keyed: list[tuple[int, str | OSError]],
                        cache: EmbeddingCache, n_computed: int) -> Extraction:
        """Where every usable vector is in the store (:class:`StoreRows`), without reading one."""
        known = []
        for i, key in keyed:
            if isinstance(key, OSError):
                records[i] = unreadable(records[i], key)
            else:
                known.append((i, key))
        keys = [key for i, key in known if records[i].ok]
        segments, rows = cache.locate(keys)
        if (segments < 0).any():
            raise CacheError(f"{int((segments < 0).sum())} vectors vanished from the embedding store {cache.folder} "
                             "during this run. Run again; they will be computed again.")
        log.info("%d vectors stay in the store %s: the workers read them block by block", len(keys), cache.folder)
        return Extraction(X=np.empty((0, cache.dim), dtype=np.float32), records=records, n_computed=n_computed,
                          n_cached=len(keys) - n_computed, rows=StoreRows(self, cache, segments, rows))

    def _embed_on_workers(self, records: list[ImageRecord], todo: list[tuple[int, str]], extractor: Extractor,
                          config: RunConfig, cache: EmbeddingCache, n_usable: int, progress: Progress | None) -> int:
        from distributed import as_completed

        client = self.client
        size = self.shard_size or min(MAX_SHARD, max(1, math.ceil(len(todo) / (4 * max(1, self.n_workers)))))
        pieces = [todo[s:s + size] for s in range(0, len(todo), size)]
        shards = [Shard(config.features, dict(config.feature_options), extractor.cache_id(), str(cache.folder.resolve()),
                        cache.dim, config.batch_size, tuple(records[i] for i, _ in piece), tuple(key for _, key in piece))
                  for piece in pieces]
        futures = client.map(embed_shard_to_store, shards, pure=False)
        piece_of = {f.key: piece for f, piece in zip(futures, pieces, strict=True)}
        done = n_usable - len(todo)
        if progress:
            progress("extract", done, n_usable)
        n_computed = 0
        for fut in as_completed(futures, loop=client.loop):
            outcome: ShardOutcome = fut.result()
            piece = piece_of[fut.key]
            for (i, _), (status, error) in zip(piece, outcome.statuses, strict=True):
                if status != "ok":
                    records[i] = records[i].failed(status, error)
            n_computed += outcome.n_vectors
            done += len(piece)
            if progress:
                progress("extract", done, n_usable)
        log.info("%d workers embedded %d images in %d shards", self.n_workers, n_computed, len(shards))
        return n_computed

    # -- seam 2: k-means ----------------------------------------------------------------------
    def cluster(self, X: np.ndarray | Rows, k: int, config: RunConfig) -> ClusterResult:
        """k-means runs on the workers. Spectral clustering builds its graph on a sample here; with the
        vectors left in the store (:class:`StoreRows`), the other rows find their neighbours in the
        sample, vote and are measured on the workers (:mod:`imgclust.cluster.rows`)."""
        if config.method != "kmeans":
            return cluster(X, k, method=config.method, seed=config.seed, **config.method_options)
        k = validate_k(k, len(X))
        options = dict(config.method_options)
        chunk_size = options.get("chunk_size", CHUNK_ROWS)
        assigner = (X.assigner(chunk_size) if isinstance(X, StoreRows)
                    else DaskAssigner.scatter(self.client, np.asarray(X, dtype=np.float32), chunk_size))
        try:
            return fit_kmeans(assigner, k, seed=config.seed, **options)
        finally:
            assigner.close()
