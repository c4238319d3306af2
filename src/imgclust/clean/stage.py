"""The clean stage of a run: quality flags, near-duplicate groups and outlier scores, as columns.

:func:`measure` gets every usable image's quality measurements (taken while decoding, else from
the cache, else, only for images that were neither, by decoding them once);
:func:`run_checks` turns the measurements and the vectors into a :class:`CleanResult`, which
gives the columns of assignments.csv, the rows of duplicates.csv and the counts of summary.json.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache import EmbeddingCache, file_keys
from ..errors import ParameterError
from ..io.decode import decode
from ..io.discover import ImageRecord
from .neardup import DEFAULT_NEIGHBOURS, NearDuplicates, find_near_duplicates
from .neardup import validate as validate_near
from .outliers import Outliers, default_rule, outlier_scores
from .quality import (
    N_STATS,
    STATS,
    STATS_VERSION,
    Measurements,
    hash_bits,
    hash_words,
    image_stats,
    quality_counts,
    quality_flags,
    quality_text,
)

if TYPE_CHECKING:
    from ..cluster.rows import Rows
    from ..neighbors import NeighborIndex

log = logging.getLogger(__name__)

DUPLICATES_CSV = "duplicates.csv"
DUPLICATES_COLUMNS = ("group", "path", "kept", "similarity", "width", "height", "sharpness", "file_size")
KEEP_RULES = ("largest", "sharpest")
#: The settings RunConfig.clean_options may hold, with their defaults (None: the one measured for the
#: run's features: the near-duplicate method's threshold, the outlier rule of
#: :func:`imgclust.clean.outliers.default_rule`).
CLEAN_OPTIONS: dict[str, Any] = {"near_duplicates": "auto", "near_duplicate_threshold": None,
                                 "outlier_k": None, "outlier_cutoff": None}


def clean_settings(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` completed with the defaults, checked."""
    options = dict(options or {})
    unknown = set(options) - set(CLEAN_OPTIONS)
    if unknown:
        raise ParameterError(f"Unknown clean options: {', '.join(sorted(unknown))}. Known: {', '.join(CLEAN_OPTIONS)}.")
    settings = {**CLEAN_OPTIONS, **options}
    method = settings["near_duplicates"]
    validate_near("embedding" if method == "auto" else method, settings["near_duplicate_threshold"])
    return settings


# Extractors whose vectors are a network's embedding: the near-duplicate threshold was measured on those.
NETWORK_FEATURES = ("efficientnet-", "timm:")


def outlier_rule(settings: dict[str, Any], features: str, precision: str | None = None) -> tuple[int, float]:
    """The outlier ``(k, cutoff)`` of a run: those the settings give, each missing one from the rule measured
    for the features (:func:`imgclust.clean.outliers.default_rule`)."""
    k, cutoff = default_rule(features, precision)
    k = k if settings.get("outlier_k") is None else settings["outlier_k"]
    cutoff = cutoff if settings.get("outlier_cutoff") is None else settings["outlier_cutoff"]
    return k, cutoff


def near_duplicate_method(setting: str, features: str) -> str:
    """``auto`` -> ``embedding`` for network features, ``phash`` for hand-made ones (pixels, histograms, HOG:
    their cosines are high between any two images, so no embedding threshold fits them)."""
    if setting != "auto":
        return setting
    return "embedding" if features.startswith(NETWORK_FEATURES) else "phash"


def stats_cache_id(draft_size: tuple[int, int] | None) -> str:
    """The cache id of the quality measurements: they depend on the decode scale (a JPEG's draft)."""
    draft = "full" if draft_size is None else f"{draft_size[0]}x{draft_size[1]}"
    return f"quality-v{STATS_VERSION}-{N_STATS}-{draft}"


def open_stats_cache(root: Any, draft_size: tuple[int, int] | None) -> EmbeddingCache | None:
    """The cache of quality measurements beside the vectors (None without a cache folder)."""
    if root is None:
        return None
    return EmbeddingCache(root, stats_cache_id(draft_size), N_STATS, "quality measurements")


def _stats_of_file(record: ImageRecord, draft_size: tuple[int, int] | None) -> np.ndarray:
    decoded = decode(record.path, draft_size=draft_size)
    if decoded.image is None:
        return np.full(N_STATS, np.nan, np.float32)
    return image_stats(decoded.image, decoded.original_size)


def measure(usable: Sequence[ImageRecord], decoded_stats: np.ndarray | None, *, draft_size: tuple[int, int] | None,
            cache: EmbeddingCache | None = None, identity: str = "stat", threads: int = 2,
            progress: Callable[[str, int, int], None] | None = None) -> tuple[Measurements, int]:
    """The quality measurements of every usable image.

    Args:
        usable: the usable records, in the order of the vectors.
        decoded_stats: np.ndarray of shape (len(usable), N_STATS) taken while decoding (NaN rows
            for images whose vectors came from the cache), or None.
        draft_size: the extractor's decode scale (measurements are taken at that scale).
        cache: where measurements are kept between runs (see :func:`open_stats_cache`).

    Returns:
        (:class:`~imgclust.clean.quality.Measurements` of the len(usable) images; how many images had to be
        decoded again). Rows go to and come from the cache in pieces of :data:`_CACHE_ROWS`, so no second
        copy of them all is made.
    """
    n = len(usable)
    M = Measurements.unknown(n) if decoded_stats is None else Measurements.from_rows(decoded_stats)
    known = M.known
    keys: list[str | None] = [None] * n
    if cache is not None:
        # One batched lookup; content digests come from the cache's remembered ones (no file re-read).
        digests = cache.digests if identity == "content" else None
        keys = [k if isinstance(k, str) else None for k in file_keys(usable, identity, digests)]
        present = np.zeros(n, dtype=bool)
        with_key = [i for i in range(n) if keys[i] is not None]
        present[with_key] = cache.contains_many([k for k in keys if k is not None])
        fresh = [int(i) for i in np.flatnonzero(known) if keys[i] is not None and not present[i]]
        for part in _pieces(fresh):
            cache.put_many([keys[i] for i in part], M.rows(part))  # type: ignore[misc]
        hits = [int(i) for i in np.flatnonzero(~known) if present[i]]
        for part in _pieces(hits):
            M.put(part, cache.get_many([keys[i] for i in part]))  # type: ignore[misc]
        known[hits] = True
    todo = np.flatnonzero(~known).tolist()
    if todo:
        log.info("Decoding %d images for their quality measurements (not measured before).", len(todo))
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for j, row in enumerate(pool.map(lambda i: _stats_of_file(usable[i], draft_size), todo)):
                M.put([todo[j]], row)
                if progress:
                    progress("quality", j + 1, len(todo))
        if cache is not None:
            measured = M.known
            done = [i for i in todo if keys[i] is not None and measured[i]]
            for part in _pieces(done):
                cache.put_many([keys[i] for i in part], M.rows(part))  # type: ignore[misc]
    return M, len(todo)


# Rows of measurements read from or written to the cache at a time (8,192 rows of N_STATS float32: 9 MB).
_CACHE_ROWS = 1 << 13


def _pieces(idx: Sequence[int]) -> list[list[int]]:
    return [list(idx[s:s + _CACHE_ROWS]) for s in range(0, len(idx), _CACHE_ROWS)]


@dataclass
class CleanResult:
    """The checks of a run, one entry per usable image.

    Attributes:
        stats: np.ndarray of shape (n, N_NAMED), float32: the named quality measurements (NaN where unknown;
            the thumbnails are not kept once the checks have compared them).
        flags: the quality flags of each image.
        near: the near-duplicate groups; outliers: the outlier scores.
        settings: the clean settings used.
    """

    stats: np.ndarray
    flags: list[list[str]]
    near: NearDuplicates
    outliers: Outliers
    settings: dict[str, Any]

    def columns(self) -> dict[str, Sequence[Any]]:
        """The new columns of assignments.csv (one value per usable image, each made when its row is written)."""
        from ..outputs.tables import Column

        return {
            "near_duplicate_group": Column(self.near.group, lambda g: "" if g < 0 else int(g)),
            "outlier_score": Column(self.outliers.score, lambda s: "" if np.isnan(s) else f"{float(s):.4f}"),
            "outlier": Column(self.outliers.outlier, int),
            "quality": Column(self.flags, quality_text),
        }

    def summary(self) -> dict[str, Any]:
        """The counts written to summary.json."""
        counts = quality_counts(self.flags)
        return {
            "quality_counts": counts,
            "n_quality_flagged": sum(1 for f in self.flags if f),
            "near_duplicates": {"method": self.near.method,
                                "threshold": None if math.isnan(self.near.threshold) else self.near.threshold,
                                "n_groups": self.near.n_groups, "n_images": int((self.near.group >= 0).sum()),
                                "n_extra": self.near.n_extra},
            "outliers": {"n_outliers": self.outliers.n_outliers, "k": self.outliers.k, "cutoff": self.outliers.cutoff,
                         "rule": f"distance to the {self.outliers.k}-th nearest neighbour divided by the mean of "
                                 f"the neighbours' own, at least {self.outliers.cutoff:g}"},
        }

    def duplicate_rows(self, usable: Sequence[ImageRecord]) -> list[dict[str, Any]]:
        """The rows of duplicates.csv: every member of every group, the kept one (largest) marked."""
        rows: list[dict[str, Any]] = []
        col = {name: i for i, name in enumerate(STATS)}
        for g, members in enumerate(self.near.groups):
            group_rows = []
            for i in members:
                s = self.stats[i]
                group_rows.append({"group": g, "path": usable[i].relpath, "kept": 0,
                                   "similarity": f"{float(self.near.similarity[i]):.4f}",
                                   "width": _int_or_blank(s[col["width"]]), "height": _int_or_blank(s[col["height"]]),
                                   "sharpness": "" if np.isnan(s[col["sharpness"]]) else f"{float(s[col['sharpness']]):.4f}",
                                   "file_size": usable[i].size})
            group_rows[pick_kept(group_rows, "largest")]["kept"] = 1
            rows.extend(group_rows)
        return rows


def _int_or_blank(v: float) -> int | str:
    return "" if np.isnan(v) else int(v)


def _num(row: Mapping[str, Any], name: str) -> float:
    try:
        return float(row.get(name, "") or "nan")
    except ValueError:
        return float("nan")


def pick_kept(rows: Sequence[Mapping[str, Any]], rule: str = "largest") -> int:
    """Which member of a near-duplicate group to keep (an index into ``rows``, rows of duplicates.csv).

    ``largest``: most pixels, then the larger file, then the sharper; ``sharpest``: the highest
    sharpness, then the most pixels. Ties go to the first path in sort order.
    """
    if rule not in KEEP_RULES:
        raise ParameterError(f"The image kept per duplicate group is the largest or the sharpest; got '{rule}'.")

    def key(j: int) -> tuple[float, ...]:
        r = rows[j]
        pixels = _num(r, "width") * _num(r, "height")
        pixels = -1.0 if math.isnan(pixels) else pixels
        sharp = _num(r, "sharpness")
        sharp = -1.0 if math.isnan(sharp) else sharp
        size = _num(r, "file_size")
        size = -1.0 if math.isnan(size) else size
        return (pixels, size, sharp) if rule == "largest" else (sharp, pixels, size)

    order = sorted(range(len(rows)), key=lambda j: str(rows[j]["path"]))
    return max(order, key=key)


def run_checks(X: np.ndarray | Rows, stats: np.ndarray | Measurements | Callable[[], Measurements],
               settings: dict[str, Any] | None = None, *,
               features: str = "efficientnet-lite0", precision: str | None = None, seed: int = 0) -> CleanResult:
    """Quality flags, near-duplicate groups and outlier scores of n images.

    Args:
        X: np.ndarray of shape (n, dim), or Rows: the run's vectors (Rows held elsewhere, such as the
            Dask backend's, stay there: see :func:`centred_neighbours`).
        stats: their quality measurements: :func:`measure`'s, or rows of
            :func:`~imgclust.clean.quality.image_stats` (np.ndarray of shape (n, N_STATS)); or a function
            that returns :func:`measure`'s, called after the neighbour search (so a large run never holds
            the measurements and the search's index at once).
        settings: see :data:`CLEAN_OPTIONS` (defaults for missing keys).
        features, precision: the extractor's name (picks the near-duplicate method when it is ``auto``) and
            the precision its network ran at (None: fp32); with it they pick the outlier rule the settings
            leave open (:func:`outlier_rule`).

    One neighbour search serves every check: each image's nearest rows by the cosine of the centred
    vectors (:func:`centred_neighbours`). The outliers rank them so; the near-duplicates by the
    cosine of the vectors themselves, computed from the same search (:func:`raw_cosines`), so no
    second search and no second copy of the vectors is made; the perceptual hashes by their Hamming
    distance (in a large run; below :data:`imgclust.neighbors.EXACT_BELOW` images the hashes are
    searched on their own, exactly).
    """
    settings = clean_settings(settings)
    n = len(X)
    m = min(DEFAULT_NEIGHBOURS, n - 1)
    out_k, out_cutoff = outlier_rule(settings, features, precision)
    if isinstance(out_k, bool) or not isinstance(out_k, int | np.integer) or out_k < 1:
        raise ParameterError(f"The outlier neighbour k must be a whole number of at least 1; got {out_k!r}.")
    m_out = min(int(out_k), n - 1)
    method = settings["near_duplicates"] = near_duplicate_method(settings["near_duplicates"], features)
    validate_near(method, settings["near_duplicate_threshold"])
    threshold = settings["near_duplicate_threshold"]
    searched = centred_neighbours(X, max(m, m_out), seed=seed) if max(m, m_out) >= 1 else None
    measured = stats() if callable(stats) else stats
    measured = measured if isinstance(measured, Measurements) else Measurements.from_rows(measured)
    if len(measured) != n:
        raise ValueError(f"{len(measured)} quality measurements for {n} vectors")
    flags = quality_flags(measured.named)
    if method == "phash":
        from ..neighbors import EXACT_BELOW

        large = searched is not None and n >= EXACT_BELOW
        near = _phash_groups(measured.named, threshold, seed, candidates=searched.idx if large else None)  # type: ignore[union-attr]
    else:
        # A flat image has no content to compare: two flat images of any colours look alike to a network.
        low = np.array(["low_information" in f for f in flags], dtype=bool)
        pairs = None
        if m >= 1 and searched is not None:
            sims, idx = searched.raw_cosines(m)
            keep = ~low[:, None] & ~low[np.clip(idx, 0, None)] & (idx >= 0)
            pairs = (np.where(keep, sims, -np.inf).astype(np.float32), idx)
        # The search's pairs are given: the vectors are not read again (only their count), so rows held
        # elsewhere need not come here.
        near = find_near_duplicates(X if isinstance(X, np.ndarray) else np.zeros((n, 0), np.float32), method=method,
                                    threshold=threshold, seed=seed, knn_result=pairs, thumbs=measured.thumbs,
                                    known=measured.known)
    # Outliers on the centred vectors (see imgclust.clean.outliers).
    if m_out < 1 or searched is None:
        centred = np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    else:
        centred = searched.sims[:, :m_out], searched.idx[:, :m_out]
    outliers = outlier_scores(*centred, k=int(out_k), cutoff=float(out_cutoff))
    return CleanResult(measured.named, flags, near, outliers, settings)


@dataclass(frozen=True)
class Neighbours:
    """Each row's nearest other rows by the cosine of the centred vectors, and what turns those
    cosines into the cosines of the vectors themselves.

    Attributes:
        sims, idx: np.ndarray of shape (n, k): centred cosines (most similar first) and rows (-1: none).
        norms: np.ndarray of shape (n,), float64: the length of each centred row.
        along: np.ndarray of shape (n,), float64: each centred row's inner product with the mean.
        mean_sq: the squared length of the mean.
    """

    sims: np.ndarray
    idx: np.ndarray
    norms: np.ndarray
    along: np.ndarray
    mean_sq: float

    def raw_cosines(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` of each row's neighbours with the highest cosine of the uncentred vectors.

        With x = c + mu: x_i . x_j = cos_c(i, j) |c_i| |c_j| + c_i . mu + c_j . mu + |mu|^2 and
        |x_i|^2 = |c_i|^2 + 2 c_i . mu + |mu|^2, all known from the search (no row is read again).

        Returns:
            (sims, idx) of shape (n, m), most similar first (ties by row), as :func:`imgclust.neighbors.knn`.
        """
        n = len(self.idx)
        length = np.sqrt(np.maximum(self.norms ** 2 + 2 * self.along + self.mean_sq, 0.0))
        out_sims = np.empty((n, min(m, self.idx.shape[1])), np.float32)
        out_idx = np.empty(out_sims.shape, self.idx.dtype)
        for a in range(0, n, _ROW_CHUNK):  # a chunk of rows at a time: the float64 temporaries stay small
            b = min(a + _ROW_CHUNK, n)
            idx = self.idx[a:b]
            safe = np.clip(idx, 0, None)
            dot = (self.sims[a:b] * self.norms[a:b, None] * self.norms[safe] + self.along[a:b, None] + self.along[safe]
                   + self.mean_sq)
            cos = dot / np.maximum(length[a:b, None] * length[safe], 1e-12)
            cos = np.where(idx >= 0, np.clip(cos, -1.0, 1.0), -np.inf).astype(np.float32)
            order = np.lexsort((idx, -cos), axis=1)[:, :m]
            out_sims[a:b], out_idx[a:b] = np.take_along_axis(cos, order, axis=1), np.take_along_axis(idx, order, axis=1)
        return out_sims, out_idx


def centred_neighbours(X: np.ndarray | Rows, k: int, *, seed: int = 0) -> Neighbours:
    """Each row's ``k`` nearest other rows by the cosine of the vectors centred on their mean.

    The search of :func:`imgclust.neighbors.knn` (exact in blocks below its size; above, candidates
    from a faiss IVF index over the rows projected onto their leading directions, ranked by their
    exact cosine), run block by block over :class:`~imgclust.cluster.rows.Rows`, so the rows may stay
    where they are held (the Dask backend's store): this process holds the mean, the projection's
    sample, the index (the projected rows as ``PROJECT_DIMS`` float16 values a row, added block by block)
    and the per-row results; each block is projected again where it is read, searches the index (sent
    there once) and ranks its candidates there, reading their rows there too.

    Args:
        X: np.ndarray of shape (n, dim), or Rows, n >= 2; k: 1 <= k < n.
    """
    from .. import neighbors as nb
    from ..cluster.rows import as_rows

    rows = as_rows(X)
    n = rows.n
    if n < 2:
        raise ParameterError(f"The neighbour search needs at least 2 rows; got {n}.")
    m = nb._check_m(k, n, self_excluded=True)
    total = np.zeros(rows.dim, dtype=np.float64)
    for part in rows.map_blocks(_sum_block):
        total += part
    mean = total / n
    mean32 = mean.astype(np.float32)
    if n < nb.EXACT_BELOW or rows.dim <= nb.PROJECT_DIMS or n <= nb.PROJECT_DIMS:
        # Small (or narrow) enough to search here: the centred rows, at most EXACT_BELOW x dim values
        # (or n x PROJECT_DIMS, the size of the projection below).
        parts = list(rows.map_blocks(_centred_block, mean32))
        sims, idx = nb.knn(np.concatenate([p[0] for p in parts]), m, seed=seed)
        norms = np.concatenate([p[1] for p in parts])
        along = np.concatenate([p[2] for p in parts])
    else:
        sample = nb.projection_sample(n, seed=seed, rows=nb._PROJECT_ROWS) if n > nb._PROJECT_ROWS else np.arange(n)
        P = nb.leading_directions(_centre(rows.take(sample), mean32)[0], nb.PROJECT_DIMS, seed=seed,
                                  rows=nb._PROJECT_ROWS)
        mc = min(n - 1, nb._CANDIDATES * m)
        # The IVF index is trained on, and calibrated with, a sample projected here; every block's projection is
        # added to it as it comes, so the projected rows are never all held: the index keeps them as float16
        # (see imgclust.neighbors.knn), and nothing else. Each block is then projected again where it is read,
        # finds its candidates and ranks them there.
        train, queries = nb.ivf_sample_rows(n, seed)
        builder = nb.IVFBuilder(n, _projected_rows(rows, np.arange(n) if train is None else train, mean32, P),
                                _projected_rows(rows, queries, mean32, P), seed=seed, n_neighbors=mc,
                                half_precision=True)
        norms, along = np.empty(n), np.empty(n)
        for (start, stop), (y, block_norms, block_along) in zip(
                rows.blocks(), rows.map_blocks(_projected_block, mean32, P), strict=True):
            builder.add(y)
            norms[start:stop], along[start:stop] = block_norms, block_along
        index = builder.finish()
        found = list(rows.map_blocks(_search_block, mean32, P, index, mc, m, rows.reader()))
        sims = np.concatenate([f[0] for f in found])
        idx = np.concatenate([f[1] for f in found])
    return Neighbours(sims, idx, norms, along, float(mean @ mean))


def _one_thread() -> Any:
    """The matrix products of the search's blocks on one thread: a product's last bits depend on how many
    threads share it, and a Dask worker runs one while this process may run several (a last bit can
    change which candidates the index finds)."""
    from ..cluster.kmeans import _thread_controller

    return _thread_controller().limit(limits=1)


def _centre(block: np.ndarray, mean32: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows centred on the mean and scaled to unit length, their centred lengths and inner products with the mean."""
    Zc = np.asarray(block, dtype=np.float32) - mean32  # a new array: scaled in place below
    norms = np.linalg.norm(Zc, axis=1).astype(np.float64)
    with _one_thread():
        along = (Zc @ mean32).astype(np.float64)
    Zc /= np.maximum(norms, 1e-12).astype(np.float32)[:, None]
    return Zc, norms, along


# Block functions of centred_neighbours (they may run on a Dask worker).

def _sum_block(start: int, block: np.ndarray) -> np.ndarray:
    return block.sum(axis=0, dtype=np.float64)


def _centred_block(start: int, block: np.ndarray, mean32: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _centre(block, mean32)


def _projected_block(start: int, block: np.ndarray, mean32: np.ndarray,
                     P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..neighbors import unit_rows

    Zc, norms, along = _centre(block, mean32)
    with _one_thread():
        return unit_rows(Zc @ P), norms, along


def _projected_rows(rows: Rows, idx: np.ndarray, mean32: np.ndarray, P: np.ndarray) -> np.ndarray:
    """The rows at ``idx`` (sorted) projected as :func:`_projected_block` projects a block, read a few
    thousand at a time (so only their projections are held)."""
    parts = [_projected_block(0, rows.take(idx[s:s + _TAKE_ROWS]), mean32, P)[0] for s in range(0, len(idx), _TAKE_ROWS)]
    return np.concatenate(parts) if parts else np.empty((0, P.shape[1]), np.float32)


# Rows read at a time by _projected_rows (4,096 x 1,280 float32: 21 MB).
_TAKE_ROWS = 4096
# Rows at a time in the per-row computations on the neighbour lists (their float64 temporaries: a few MB).
_ROW_CHUNK = 1 << 15


def _search_block(start: int, block: np.ndarray, mean32: np.ndarray, P: np.ndarray, index: NeighborIndex, mc: int,
                  m: int, read: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The block's ``mc`` candidates from the index of every projected row (the same projection as
    :func:`_projected_block`, so the same query), ranked by their exact centred cosine: the ``m`` best."""
    from ..neighbors import rerank_queries, unit_rows

    Zc = _centre(block, mean32)[0]
    with _one_thread():
        Y = unit_rows(Zc @ P)
    _, cand = index.search_self(start, Y, mc)
    return rerank_queries(Zc, cand, m, lambda idx: _centre(read(idx), mean32)[0])


def _phash_groups(stats: np.ndarray, threshold: float | None, seed: int,
                  candidates: np.ndarray | None = None) -> NearDuplicates:
    """Near-duplicates by perceptual hash, among the images whose hash is known.

    ``candidates`` (n, c) row indices, when given, are the rows compared with each row (the shared
    search of a large run); otherwise each hash's nearest hashes are searched.
    """
    from ..neighbors import knn, unit_rows

    n = len(stats)
    known = np.flatnonzero(~np.isnan(stats).any(axis=1))
    group = np.full(n, -1, np.int64)
    similarity = np.full(n, np.nan, np.float32)
    t = validate_near("phash", threshold)
    if len(known) >= 2:
        m = min(DEFAULT_NEIGHBOURS, len(known) - 1)
        if candidates is not None:
            # The shared candidates, as positions among the known rows (-1 where unknown), ranked by hash.
            pos = np.full(n, -1, np.int64)
            pos[known] = np.arange(len(known))
            nearest = _hash_rerank(hash_words(stats[known]), candidates, known, pos, m)
        else:
            nearest = knn(unit_rows(hash_bits(stats[known])), m, seed=seed)
        sub = find_near_duplicates(np.zeros((len(known), 0), np.float32), method="phash", threshold=threshold,
                                   seed=seed, knn_result=nearest)
        group[known], similarity[known] = sub.group, sub.similarity
    return NearDuplicates(group, similarity, "phash", t)


_BITS_SET = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _hash_rerank(words: np.ndarray, candidates: np.ndarray, known: np.ndarray, pos: np.ndarray,
                 m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` candidates of each known row whose hash differs in the fewest bits, as
    :func:`imgclust.neighbors.rerank` of :func:`hash_bits` rows ranks them (the cosine of two hashes that
    differ in d of 64 bits is ``1 - 2 d / 64``; equal ones by row), from 8 bytes a hash, a chunk of rows
    at a time.

    Args:
        words: np.ndarray of shape (n_known,), uint64: the known rows' hashes (:func:`hash_words`).
        candidates: np.ndarray of shape (n, c): every row's candidates (rows; -1: none).
        known: the known rows; pos: each row's position among them (-1: unknown).
    """
    sims = np.empty((len(known), m), np.float32)
    idx = np.empty((len(known), m), np.int64)
    for a in range(0, len(known), _ROW_CHUNK):
        rows = known[a:a + _ROW_CHUNK]
        cand = candidates[rows]
        cand = np.where(cand >= 0, pos[np.maximum(cand, 0)], -1)
        differ = np.bitwise_xor(words[a:a + len(rows), None], words[np.maximum(cand, 0)])
        bits = _BITS_SET[differ.view(np.uint8)].reshape(*differ.shape, 8).sum(axis=-1, dtype=np.int64)
        s = np.where(cand >= 0, (64 - 2 * bits) / 64, -np.inf).astype(np.float32)
        order = np.lexsort((cand, -s), axis=1)[:, :m]
        idx[a:a + len(rows)] = np.take_along_axis(cand, order, axis=1)
        sims[a:a + len(rows)] = np.take_along_axis(s, order, axis=1)
    return sims, idx
