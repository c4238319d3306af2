"""Find the images of a finished run that look most like some query images.

The run's vectors come from the embedding cache (those missing there, e.g. after ``--no-cache``,
are computed once and stored); the queries are embedded with the run's own extractor, so query and
run vectors are comparable. The search uses :class:`imgclust.neighbors.NeighborIndex` (exact in
blocks for small runs, a faiss index above): no n x n matrix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import InputError, ParameterError

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SimilarMatch:
    """One image of the run: its path (relative to the images folder), cluster and cosine similarity to the query."""

    path: str
    cluster: int
    similarity: float


@dataclass
class SimilarResult:
    """The nearest images of the run for one query image, most similar first."""

    query: str
    matches: list[SimilarMatch] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "matches": [{"path": m.path, "cluster": m.cluster,
                                                   "similarity": round(m.similarity, 6)} for m in self.matches]}


def _check_queries(queries: Sequence[str | os.PathLike[str]]) -> list[Path]:
    if not queries:
        raise ParameterError("Give at least one query image.")
    paths = [Path(q) for q in queries]
    for p in paths:
        if not p.exists():
            raise InputError(f"The query image {p} does not exist.")
        if not p.is_file():
            raise InputError(f"The query {p} is not a file. Give image files (a folder is not a query).")
    return paths


def similar(out_dir: str | os.PathLike[str], queries: Sequence[str | os.PathLike[str]], *, top: int = 5,
            cache: Any = True, progress: Progress | None = None) -> list[SimilarResult]:
    """The ``top`` images of a run nearest to each query image (cosine of the run's vectors).

    Args:
        out_dir: the output folder of ``imgclust run``.
        queries: image files (inside or outside the run's images folder).
        top: matches per query (at most the number of clustered images).
        cache: True (default folder), False (no cache: the run's vectors are computed again) or a folder.

    Returns:
        One :class:`SimilarResult` per query, in the order given.

    Raises:
        InputError: a query is missing or not a usable image, or OUT_DIR is not a run's output folder.
        ParameterError: ``top`` is below 1.

    Example:
        >>> res = similar("out", ["new/cat.jpg"], top=3)  # doctest: +SKIP
        >>> [(m.path, round(m.similarity, 2)) for m in res[0].matches]  # doctest: +SKIP
        [('cats/017.jpg', 0.93), ('cats/201.jpg', 0.91), ('cats/044.jpg', 0.9)]
    """
    from ..features import get_extractor
    from ..features.extract import extract, prepare_one
    from ..io.discover import ImageRecord, discover
    from ..neighbors import NeighborIndex, unit_rows
    from ..outputs.tables import read_assignments, read_summary
    from ..pipeline import open_cache

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ParameterError(f"top must be a whole number of at least 1; got {top!r}.")
    paths = _check_queries(queries)
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    if summary.get("kind") == "sweep":
        raise InputError(f"{out_dir} holds a sweep, which clusters nothing; give the output folder of imgclust run.")
    config = RunConfig.from_dict(summary["config"])
    extractor = get_extractor(config.features, **config.feature_options)

    # The queries first: a bad one fails before the run's vectors are loaded.
    prepared = [prepare_one(extractor, ImageRecord(str(p.absolute()), str(p))) for p in paths]
    for p, prep in zip(paths, prepared, strict=True):
        if prep.array is None:
            raise InputError(f"The query {p} cannot be used: {prep.status.replace('_', ' ')}. {prep.error}")
    Q = extractor.embed(np.stack([prep.array for prep in prepared if prep.array is not None]))

    images_dir = Path(summary["images_dir"])
    rows = [r for r in read_assignments(out_dir) if r.get("status") == "ok" and r.get("cluster", "") != ""]
    found = {r.relpath: r for r in discover(images_dir, exclude=[out_dir])} if images_dir.is_dir() else {}
    records = [found[r["path"]] for r in rows if r["path"] in found]
    clusters = {r["path"]: int(r["cluster"]) for r in rows}
    if not records:
        raise InputError(f"None of the images clustered in {out_dir} is still under {images_dir}; "
                         "nothing to compare the queries with.")
    ex = extract(records, extractor, cache=open_cache(cache, extractor), batch_size=config.batch_size,
                 identity=config.identity, progress=progress)
    usable = [r for r in ex.records if r.ok]
    index = NeighborIndex(unit_rows(ex.X), seed=config.seed)
    sims, idx = index.search(unit_rows(Q), min(top, len(usable)))
    results = []
    for p, srow, irow in zip(paths, sims, idx, strict=True):
        matches = [SimilarMatch(usable[int(j)].relpath, clusters[usable[int(j)].relpath], float(s))
                   for s, j in zip(srow, irow, strict=True) if j >= 0]
        results.append(SimilarResult(str(p), matches))
    return results
