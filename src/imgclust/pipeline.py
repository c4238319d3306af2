"""The only module that knows the order of the stages:

discover -> decode/extract (cache) -> cluster (or choose k) -> evaluate -> outputs
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._fs import ensure_writable_dir, is_within
from .cache import EmbeddingCache, default_cache_dir
from .cluster import ClusterResult, cluster, get_clusterer, validate_k
from .config import RunConfig
from .errors import InputError, OutputError
from .features import Extractor, get_extractor
from .features.extract import Extraction, extract
from .io.discover import IMAGE_EXTENSIONS, ImageRecord, attach_labels, discover
from .metrics import confusion, evaluate
from .model import MODEL_DIR, save_model
from .outputs.tables import (
    ASSIGNMENTS,
    CONFUSION,
    SUMMARY,
    assignments_table,
    write_confusion,
    write_csv,
    write_summary,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
CacheSetting = str | os.PathLike[str] | bool | None


@dataclass
class Timer:
    """Seconds per stage, in the order the stages ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 4)


@dataclass
class Features:
    """What the first stages produce: the records, their vectors and the extractor that made them."""

    images_dir: Path
    records: list[ImageRecord]
    X: np.ndarray
    extractor: Extractor
    label_mode: str
    n_computed: int
    n_cached: int

    @property
    def usable(self) -> list[ImageRecord]:
        return [r for r in self.records if r.ok]

    @property
    def labels_true(self) -> list[str] | None:
        """Ground-truth labels of the usable records, or None when no usable record has one."""
        labels = [r.label for r in self.usable]
        if all(lab is None for lab in labels):
            return None
        return ["" if lab is None else lab for lab in labels]


@dataclass
class RunResult:
    """The result of :func:`run`: everything written to OUT_DIR, as data."""

    out_dir: Path
    config: RunConfig
    features: Features
    clustering: ClusterResult
    metrics: dict[str, float] | None
    summary: dict[str, Any]

    @property
    def labels(self) -> np.ndarray:
        return self.clustering.labels


def open_cache(cache: CacheSetting, extractor: Extractor) -> EmbeddingCache | None:
    """The embedding cache for ``extractor``: True/None -> the default folder, False -> none, a path -> there."""
    if cache is False:
        return None
    root = default_cache_dir() if cache in (None, True) else Path(cache)  # type: ignore[arg-type]
    return EmbeddingCache(root, extractor.cache_id(), extractor.dim, extractor.name)


def check_out_dir(images_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder inside the images folder, or one that holds other people's files."""
    if is_within(out_dir, images_dir):
        raise OutputError(f"The output folder {out_dir} is inside the images folder {images_dir}. "
                          "Choose an output folder outside it, so outputs are never read as input.")
    if is_within(images_dir, out_dir):
        raise OutputError(f"The images folder {images_dir} is inside the output folder {out_dir}. "
                          "Choose a separate output folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / SUMMARY).exists():
        raise OutputError(f"The output folder {out_dir} is not empty and is not from an earlier imgclust run. "
                          "Choose an empty or new folder; imgclust never writes among other files.")


def load_features(images_dir: str | os.PathLike[str], config: RunConfig, *, cache: CacheSetting = True,
                  exclude: list[Path] | None = None, timer: Timer | None = None,
                  progress: Progress | None = None) -> Features:
    """Discover the images, attach labels, and get every usable image's vector (cache first).

    Raises:
        InputError: no image was found, or none could be used.
    """
    timer = timer or Timer()
    images_dir = Path(images_dir)
    with timer.stage("discover"):
        records = discover(images_dir, exclude=exclude or [])
        records, label_mode = attach_labels(records, config.labels)
    if not records:
        raise InputError(f"Found 0 images under {images_dir}. Supported extensions: {' '.join(IMAGE_EXTENSIONS)}.")
    extractor = get_extractor(config.features, **config.feature_options)
    with timer.stage("extract"):
        store = open_cache(cache, extractor)
        ex: Extraction = extract(records, extractor, cache=store, batch_size=config.batch_size,
                                 identity=config.identity, progress=progress)
    if len(ex.X) == 0:
        reasons = Counter(r.status for r in ex.records)
        raise InputError(f"None of the {len(records)} files under {images_dir} is a usable image "
                         f"({', '.join(f'{n} {s}' for s, n in reasons.most_common())}). See assignments.csv "
                         "of a run with at least one good image for each file's reason.")
    return Features(images_dir.resolve(), ex.records, ex.X, extractor, label_mode, ex.n_computed, ex.n_cached)


def run(images_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], config: RunConfig | None = None, *,
        cache: CacheSetting = True, progress: Progress | None = None, **settings: Any) -> RunResult:
    """Cluster a folder of images and write the outputs.

    Args:
        images_dir: the folder of images (searched recursively).
        out_dir: where assignments.csv, summary.json, confusion.csv (with labels) and the rest go.
        config: a :class:`RunConfig`; or give its fields as keyword arguments (``features=``, ``k=``, ...).
        cache: True (default folder), False (no cache) or a folder for the embedding cache.
        progress: called as ``progress(stage, done, total)`` during long stages.

    Returns:
        :class:`RunResult`.

    Example:
        >>> r = run("photos", "out", features="pixels", k=3)  # doctest: +SKIP
        >>> r.summary["cluster_sizes"]  # doctest: +SKIP
    """
    config = config or RunConfig(**settings)
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise InputError(f"The images folder {images_dir} does not exist or is not a folder.")
    check_out_dir(images_dir, out_dir)
    get_clusterer(config.method)  # fail on an unknown method before any work is done
    timer = Timer()
    feats = load_features(images_dir, config, cache=cache, exclude=[out_dir], timer=timer, progress=progress)
    ensure_writable_dir(out_dir)

    k_info: dict[str, Any] = {"k_auto": False}
    with timer.stage("cluster"):
        if config.k is None:
            from .cluster.choose_k import choose_k

            choice = choose_k(feats.X, k_range=config.k_range, method=config.method, seed=config.seed,
                              **config.method_options)
            k = choice.k
            k_info = {"k_auto": True, "k_reason": choice.reason, "k_range": list(config.k_range)}
            result = choice.result
        else:
            k = validate_k(config.k, len(feats.X))
            result = cluster(feats.X, k, method=config.method, seed=config.seed, **config.method_options)

    with timer.stage("evaluate"):
        labels_true = feats.labels_true
        metrics = evaluate(labels_true, result.labels) if labels_true is not None else None

    with timer.stage("write"):
        summary = _summary(feats, config, result, metrics, timer, k_info, out_dir)
        rows = assignments_table(feats.records, result.labels, result.distances, with_labels=labels_true is not None)
        write_csv(out_dir / ASSIGNMENTS, rows)
        if labels_true is not None:
            conf = confusion(labels_true, result.labels)
            write_confusion(out_dir / CONFUSION, conf, conf.hungarian_mapping())
        write_summary(out_dir / SUMMARY, summary)
        save_model(out_dir / MODEL_DIR, feats.extractor, config, result, summary)
    summary["timings"] = dict(timer.seconds)
    write_summary(out_dir / SUMMARY, summary)
    return RunResult(out_dir, config, feats, result, metrics, summary)


def _summary(feats: Features, config: RunConfig, result: ClusterResult, metrics: dict[str, float] | None,
             timer: Timer, k_info: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    statuses = Counter(r.status for r in feats.records)
    n_ok = statuses.get("ok", 0)
    summary: dict[str, Any] = {
        "imgclust_version": __version__,
        "images_dir": str(feats.images_dir),
        "out_dir": str(out_dir.resolve()),
        "n_images": len(feats.records),
        "n_ok": n_ok,
        "n_failed": len(feats.records) - n_ok,
        "statuses": dict(sorted(statuses.items())),
        "k": result.k,
        **k_info,
        "features": config.features,
        "extractor": feats.extractor.describe(),
        "method": config.method,
        "seed": config.seed,
        "labels_mode": feats.label_mode,
        "cluster_sizes": [int(s) for s in result.sizes],
        "inertia": result.inertia,
        "n_vectors_computed": feats.n_computed,
        "n_vectors_cached": feats.n_cached,
        "config": config.to_dict(),
        "timings": dict(timer.seconds),
    }
    if metrics is not None:
        summary["metrics"] = metrics
        summary["n_labels"] = len(set(feats.labels_true or []))
    return summary
