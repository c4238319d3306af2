"""Extraction: records in, vectors out, through the cache, with decoding overlapped with inference."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..cache import EmbeddingCache, file_keys
from ..io.decode import DEFAULT_MAX_PIXELS, Decoded, decode, shared_budget
from ..io.discover import ImageRecord
from .base import Extractor

if TYPE_CHECKING:
    from ..cluster.rows import Rows

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Prepared:
    """One decoded and prepared image, or why it failed."""

    array: np.ndarray | None
    status: str = "ok"
    error: str = ""
    stats: np.ndarray | None = None  # quality measurements (imgclust.clean.quality.image_stats)


def prepare_one(extractor: Extractor, record: ImageRecord, max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Decode one file and turn it into the extractor's input. Never raises for a bad file.

    The decoded image's bytes stay counted in the process's decode memory budget (shared by every decode
    thread) until it has been resized and dropped.
    """
    budget = shared_budget()
    decoded = decode(record.path, max_pixels=max_pixels, draft_size=extractor.draft_size, budget=budget,
                     keep_reserved=True)
    try:
        if decoded.image is None:
            return Prepared(None, decoded.status, decoded.error)
        try:
            return Prepared(extractor.prepare(decoded.image), stats=_quality_stats(decoded))
        except (ValueError, OSError, MemoryError) as exc:
            return Prepared(None, "corrupt", f"Could not resize the image: {exc}.")
    finally:
        reserved = decoded.reserved
        del decoded  # the full-size image goes now, then its bytes go back to the budget
        budget.release(reserved)


def _quality_stats(decoded: Decoded) -> np.ndarray | None:
    """Quality measurements of the pixels just decoded (so the file is not read again for them)."""
    from ..clean.quality import image_stats

    if decoded.image is None:
        return None
    try:
        return image_stats(decoded.image, decoded.original_size)
    except (ValueError, OSError, MemoryError) as exc:  # never fail a good image over its quality
        log.warning("Could not measure the quality of an image: %s", exc)
        return None


def embed_shard(extractor: Extractor, records: Sequence[ImageRecord], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                pool: ThreadPoolExecutor | None = None) -> tuple[np.ndarray, list[Prepared]]:
    """Decode, prepare and embed one shard of records (used by every backend).

    Returns:
        (vectors of the images that decoded, shape (n_good, dim) float32; one Prepared per record).
    """
    if pool is not None:
        prepared = list(pool.map(lambda r: prepare_one(extractor, r, max_pixels), records))
    else:
        prepared = [prepare_one(extractor, r, max_pixels) for r in records]
    return _embed_prepared(extractor, prepared), prepared


def _embed_prepared(extractor: Extractor, prepared: Sequence[Prepared]) -> np.ndarray:
    good = [p.array for p in prepared if p.array is not None]
    if not good:
        return np.zeros((0, extractor.dim), dtype=np.float32)
    X = extractor.embed(np.stack(good))
    if X.shape != (len(good), extractor.dim):
        raise RuntimeError(f"{extractor.name} returned shape {X.shape} for {len(good)} images")
    return X


def default_threads() -> int:
    """The cores this process may use (threads for decoding and for the network)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Extraction:
    """The vectors of a set of records.

    Attributes:
        X: np.ndarray of shape (n_usable, dim), float32: one row per record whose status is ok,
            in the order of ``records`` (no rows when ``rows`` is set).
        records: every record, with the status of those that failed to decode updated.
        n_computed: vectors computed in this call; n_cached: vectors read from the cache.
        stats: np.ndarray of shape (n_usable, N_STATS), float32: the quality measurements of the images
            decoded in this call (see :mod:`imgclust.clean.quality`); NaN rows for vectors read from the
            cache (their files were not decoded). None when no backend measured them.
        rows: the vectors left where they are, as :class:`~imgclust.cluster.rows.Rows` (a Dask run of
            many images leaves them in the embedding store), or None when ``X`` holds them.
    """

    X: np.ndarray
    records: list[ImageRecord]
    n_computed: int = 0
    n_cached: int = 0
    stats: np.ndarray | None = None
    rows: Rows | None = None

    @property
    def vectors(self) -> np.ndarray | Rows:
        """``rows`` when the vectors were left where they are, else ``X``."""
        return self.X if self.rows is None else self.rows

    @property
    def usable(self) -> list[ImageRecord]:
        return [r for r in self.records if r.ok]


def unreadable(record: ImageRecord, exc: OSError) -> ImageRecord:
    """``record`` failed: its file cannot be read (``exc`` says why)."""
    return record.failed("unreadable", f"Cannot read the file: {exc.strerror or exc}.")


def extract(
    records: Sequence[ImageRecord],
    extractor: Extractor,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    identity: str = "stat",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_threads: int | None = None,
    progress: Progress | None = None,
) -> Extraction:
    """Vectors for every usable record: from the cache where present, computed (and cached) otherwise.

    Decoding and resizing of the next batch run in ``decode_threads`` threads (default: one per
    core; Pillow releases the GIL while it decodes and resizes) while the network embeds the
    current one. Each finished batch is written to the cache at once, so an interrupted run
    resumes from the last finished batch.

    Example:
        >>> from imgclust.features import get_extractor
        >>> ex = extract(discover("photos"), get_extractor("pixels"))  # doctest: +SKIP
        >>> ex.X.shape  # doctest: +SKIP
        (120, 3072)
    """
    records = list(records)
    todo_idx = [i for i, r in enumerate(records) if r.ok]
    digests = cache.digests if cache is not None and identity == "content" else None
    keys: dict[int, str] = {}
    for i, key in zip(todo_idx, file_keys([records[i] for i in todo_idx], identity, digests), strict=True):
        if isinstance(key, OSError):
            records[i] = unreadable(records[i], key)
        else:
            keys[i] = key
    todo_idx = [i for i in todo_idx if i in keys]
    # One array for every vector (row j belongs to records[todo_idx[j]]), never one object per image.
    dim = extractor.dim
    X_all = np.empty((len(todo_idx), dim), dtype=np.float32)
    stats: dict[int, np.ndarray] = {}  # image statistics of the images decoded now (cached ones have none)
    row_of = {i: j for j, i in enumerate(todo_idx)}
    filled = np.zeros(len(todo_idx), dtype=bool)
    if cache is not None and todo_idx:
        segments, rows = cache.locate([keys[i] for i in todo_idx])
        hit_rows = np.flatnonzero(segments >= 0)
        if len(hit_rows) == len(todo_idx):  # all cached: read straight into the result, no second copy
            cache.read_located(segments, rows, out=X_all)
        elif len(hit_rows):
            X_all[hit_rows] = cache.read_located(segments[hit_rows], rows[hit_rows])
        filled[hit_rows] = True
    n_cached = int(filled.sum())
    missing = [i for i, f in zip(todo_idx, filled, strict=True) if not f]
    total = len(todo_idx)
    done = n_cached
    if progress:
        progress("extract", done, total)

    batches = [missing[s:s + batch_size] for s in range(0, len(missing), batch_size)]
    n_computed = 0
    threads = decode_threads if decode_threads is not None else default_threads()
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="imgclust-decode") as pool:
        def submit(batch: list[int]) -> list[Future[Prepared]]:
            return [pool.submit(prepare_one, extractor, records[i], max_pixels) for i in batch]

        pending = submit(batches[0]) if batches else []
        for b, batch in enumerate(batches):
            prepared = [f.result() for f in pending]
            pending = submit(batches[b + 1]) if b + 1 < len(batches) else []
            X = _embed_prepared(extractor, prepared)
            good_idx = []
            for i, p in zip(batch, prepared, strict=True):
                if p.array is None:
                    records[i] = records[i].failed(p.status, p.error)
                else:
                    good_idx.append(i)
                    if p.stats is not None:
                        stats[i] = p.stats
            if good_idx:
                done_rows = [row_of[i] for i in good_idx]
                X_all[done_rows] = X
                filled[done_rows] = True
            if cache is not None and good_idx:
                cache.put_many([keys[i] for i in good_idx], X)
            n_computed += len(good_idx)
            done += len(batch)
            if progress:
                progress("extract", done, total)

    X_out = X_all if filled.all() else X_all[filled]
    usable = [i for i, f in zip(todo_idx, filled, strict=True) if f]
    return Extraction(X=X_out, records=records, n_computed=n_computed, n_cached=n_cached,
                      stats=_stack_stats(stats, usable))


def _stack_stats(stats: dict[int, np.ndarray], usable: list[int]) -> np.ndarray:
    from ..clean.quality import N_STATS

    out = np.full((len(usable), N_STATS), np.nan, dtype=np.float32)
    for row, i in enumerate(usable):
        if i in stats:
            out[row] = stats[i]
    return out


