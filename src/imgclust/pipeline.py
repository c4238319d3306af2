"""The only module that knows the order of the stages:

discover -> decode/extract (cache) -> cluster (or choose k) -> evaluate -> outputs
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import __version__
from ._fs import is_within
from ._paths import inside_images
from .backends import Backend
from .backends.local import LocalBackend
from .cache import EmbeddingCache, default_cache_dir, file_keys
from .clean.neardup import NearDuplicates
from .clean.outliers import Outliers
from .clean.quality import Measurements
from .clean.stage import DUPLICATES_COLUMNS, DUPLICATES_CSV, CleanResult, clean_settings
from .cluster import ClusterResult, get_clusterer, validate_k
from .cluster.choose_k import (
    SWEEP_COLUMNS,
    KCandidate,
    KChoice,
    KPick,
    Sweep,
    SweepRow,
    pick_k,
    result_from_labels,
    score_sweep,
    sweep_k,
)
from .cluster.rows import Rows
from .config import RunConfig
from .errors import InputError, OutputError, ParameterError
from .features import Extractor, get_extractor
from .features.default import default_features
from .features.extract import Extraction
from .io.discover import IMAGE_EXTENSIONS, ImageRecord, attach_labels, discover
from .io.duplicates import find_duplicates
from .metrics import confusion, evaluate
from .model import MODEL_DIR, save_model
from .outdir import OUT_MARKER, claim_out_dir, holds_out_lock, keep_outputs
from .outputs.k_candidates import K_CANDIDATES, load_candidate, save_candidates
from .outputs.report import (
    REPORT_DATA,
    load_report_data,
    map_2d,
    save_report_data,
    suggest_names,
    write_report,
)
from .outputs.tables import (
    ASSIGNMENTS,
    CONFUSION,
    SUMMARY,
    assignments_table,
    read_assignments,
    read_summary,
    write_confusion,
    write_csv,
    write_summary,
)
from .store import FileDigests
from .store.results import ResultsCache, results_key, vectors_id

log = logging.getLogger(__name__)

SWEEP_CSV = "sweep.csv"
ELBOW_PNG = "elbow.png"
CRITERIA_PNG = "criteria.png"

Progress = Callable[[str, int, int], None]
CacheSetting = str | os.PathLike[str] | bool | None
T = TypeVar("T")

# The classes a cached result of each stage may be made of, its own first (imgclust.store.results builds
# no other). A given k keeps a ClusterResult alone.
CLUSTER_TYPES = (KChoice, ClusterResult, Sweep, SweepRow, KPick, KCandidate)
CLEAN_TYPES = (CleanResult, NearDuplicates, Outliers)


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
            return_freed_memory()


def return_freed_memory() -> None:
    """Give the memory freed by a stage back to the system (glibc keeps freed heap pages for reuse; the
    many small objects of a large folder's stage leave much of it), so that the next stage's peak does
    not sit on top of it. Nothing happens where the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


@dataclass
class Features:
    """What the first stages produce: the records, their vectors and the extractor that made them."""

    images_dir: Path
    records: list[ImageRecord]
    X: np.ndarray | Rows  # Rows: left where they are (the embedding store of a Dask run of many images)
    extractor: Extractor
    label_mode: str
    n_computed: int
    n_cached: int
    stats: np.ndarray | None = None  # quality measurements taken while decoding (imgclust.clean.quality)

    @property
    def usable(self) -> list[ImageRecord]:
        return [r for r in self.records if r.ok]

    @property
    def array(self) -> np.ndarray:
        """``X`` in memory: what features loaded without a Dask backend always are.

        Raises:
            TypeError: the vectors were left in the embedding store (use ``X``, a :class:`Rows`).
        """
        if isinstance(self.X, Rows):
            raise TypeError("These vectors were left in the embedding store; read them through X (Rows).")
        return self.X

    @property
    def labels_true(self) -> list[str | None] | None:
        """Ground-truth labels of the usable records (None: this image has none and is not scored), or None
        when no usable record has one."""
        labels = [r.label for r in self.usable]
        if all(lab is None for lab in labels):
            return None
        return labels

    def label_note(self) -> dict[str, Any]:
        """What summary.json says about usable images that have no label while others have one."""
        labels = self.labels_true
        n = 0 if labels is None else sum(lab is None for lab in labels)
        if not n:
            return {}
        where = " at the top level of the images folder" if self.label_mode == "folder" else ""
        return {"n_unlabelled": n, "unlabelled_note": f"{n} images{where} have no {self.label_mode} label: they "
                                                     "were clustered but left out of the scores."}


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
    root = cache_root(cache)
    return None if root is None else EmbeddingCache(root, extractor.cache_id(), extractor.dim, extractor.name)


def open_digests(cache: CacheSetting) -> FileDigests | None:
    """The remembered content digests of files (so a rerun reads no unchanged file), or None without a cache."""
    root = cache_root(cache)
    return None if root is None else FileDigests(root)


def open_results(cache: CacheSetting) -> ResultsCache | None:
    """The results cache (chosen k, clusterings, clean checks of earlier runs), or None without a cache."""
    root = cache_root(cache)
    return None if root is None else ResultsCache(root)


def vectors_identity(feats: Features, config: RunConfig, cache: CacheSetting) -> str:
    """:func:`~imgclust.store.results.vectors_id` of a run's vectors: the extractor's cache id and each usable
    file's identity as the store knows it (path, size and modification time; or the content digest it
    remembers), so no file is read. Without remembered digests (content identity, no cache) the vectors
    themselves are hashed."""
    keys: list[str] | None = None
    if config.identity == "stat":
        keys = [f"{r.file}|{r.size}|{r.mtime_ns}" for r in feats.usable]
    else:
        digests = open_digests(cache)
        if digests is not None:
            found = file_keys(feats.usable, config.identity, digests)  # all remembered by the extraction
            keys = [k for k in found if isinstance(k, str)]
            keys = keys if len(keys) == len(found) else None
    return vectors_id(feats.extractor.cache_id(), keys, None if keys is not None else feats.X)


def cached_result(results: ResultsCache | None, stage: str, key: str, types: Sequence[type],
                  compute: Callable[[], T], hits: list[str]) -> T:
    """The result kept in ``results`` under (stage, key) (its stage name added to ``hits``), else
    ``compute()``, kept there for the next run."""
    if results is not None:
        value = results.get(stage, key, types)
        if value is not None:
            hits.append(stage)
            return value
    value = compute()
    if results is not None:
        results.put(stage, key, value)
    return value


def cache_root(cache: CacheSetting) -> Path | None:
    """The cache folder a cache setting means: True/None -> the default folder, False -> none, a path -> there."""
    if cache is False:
        return None
    return default_cache_dir() if cache in (None, True) else Path(cache)  # type: ignore[arg-type]


def figure_cache(cache: CacheSetting) -> Path | None:
    """Where the report keeps drawn plots: a ``figures`` folder in the cache folder."""
    root = cache_root(cache)
    return None if root is None else root / "figures"


def check_out_dir(images_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder inside the images folder (however reached: through a symlinked subfolder too),
    or one that holds other people's files."""
    if inside_images(out_dir, images_dir):
        how = "" if is_within(out_dir, images_dir) else ", reached through a symlinked folder in it"
        raise OutputError(f"The output folder {out_dir} is inside the images folder {images_dir}{how}. "
                          "Choose an output folder outside it, so outputs are never read as input.")
    if is_within(images_dir, out_dir):
        raise OutputError(f"The images folder {images_dir} is inside the output folder {out_dir}. "
                          "Choose a separate output folder.")
    if out_dir.is_dir() and not (out_dir / SUMMARY).exists() and not (out_dir / OUT_MARKER).exists():
        # Leftover temporary files of a killed atomic write (".NAME.xxxx.tmp") are not other people's files.
        if any(not (p.name.startswith(".") and p.name.endswith(".tmp")) for p in out_dir.iterdir()):
            raise OutputError(f"The output folder {out_dir} is not empty and is not from an earlier imgclust run. "
                              "Choose an empty or new folder; imgclust never writes among other files.")
    _check_can_create(out_dir)


def _check_can_create(out_dir: Path) -> None:
    """Fail before any work when ``out_dir`` clearly cannot be created or written (nothing is created here)."""
    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"Cannot create the output folder {out_dir}: {existing} is a file, not a folder. "
                          "Choose another output folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"Permission denied: cannot write in {existing}. Choose an output folder you can write to.")


def load_features(images_dir: str | os.PathLike[str], config: RunConfig, *, cache: CacheSetting = True,
                  exclude: list[Path] | None = None, timer: Timer | None = None,
                  progress: Progress | None = None, backend: Backend | None = None,
                  ks: Sequence[int] = ()) -> Features:
    """Discover the images, attach labels, and get every usable image's vector (cache first).

    ``ks``: the k the caller will ask for; refused as soon as the files are found when there are fewer
    candidate images than one of them (before any image is decoded).

    ``backend`` runs the extraction (default: :class:`~imgclust.backends.local.LocalBackend`; see
    :func:`imgclust.backends.get_backend` for a Dask cluster).

    Raises:
        InputError: no image was found, or none could be used.
    """
    timer = timer or Timer()
    images_dir = Path(images_dir)
    config = with_features(config)
    with timer.stage("discover"):
        records = discover(images_dir, exclude=exclude or [])
        records, label_mode = attach_labels(records, config.labels)
    if not records:
        raise InputError(f"Found 0 images under {images_dir}. Supported extensions: {' '.join(IMAGE_EXTENSIONS)}.")
    check_k_fits(ks, sum(r.ok for r in records))
    check_cache_dir(images_dir, cache)
    extractor = get_extractor(config.features, **config.feature_options)
    with timer.stage("extract"):
        store = open_cache(cache, extractor)
        ex: Extraction = (backend or LocalBackend()).extract(records, extractor, config, cache=store, progress=progress)
    if len(ex.vectors) == 0:
        reasons = Counter(r.status for r in ex.records)
        raise InputError(f"None of the {len(records)} files under {images_dir} is a usable image "
                         f"({', '.join(f'{n} {s}' for s, n in reasons.most_common())}). See assignments.csv "
                         "of a run with at least one good image for each file's reason.")
    return Features(images_dir.resolve(), ex.records, ex.vectors, extractor, label_mode, ex.n_computed, ex.n_cached,
                    ex.stats)


def with_features(config: RunConfig) -> RunConfig:
    """``config`` with its features settled: a config without features gets the default ones for this machine
    (:func:`imgclust.features.default.default_features`), so that what a run records is what ran."""
    if config.features:
        return config
    features, options = default_features(config.feature_options)
    return dataclasses.replace(config, features=features, feature_options=options)


def check_cache_dir(images_dir: Path, cache: CacheSetting) -> None:
    """Refuse an embedding cache (``--cache``, ``$IMGCLUST_CACHE``, hidden or not) inside the images folder,
    however reached: its plots would be clustered as images by the next run."""
    root = cache_root(cache)
    if root is not None and inside_images(root, images_dir):
        raise OutputError(f"The cache folder {root} is inside the images folder {images_dir} (or a folder linked "
                          "from it), so its files would be read as images. Choose a cache folder outside it "
                          "(--cache or $IMGCLUST_CACHE), or run with --no-cache.")


def check_k_fits(ks: Sequence[int], n: int, *, decoded: bool = False) -> None:
    """Refuse a k larger than the number of images: before extraction against the ``n`` files found, then
    (``decoded``) against the ``n`` images that decoded."""
    too_big = [k for k in ks if k > n]
    if too_big:
        raise ParameterError(f"k must be between 1 and the number of usable images ({n}); got "
                             f"{', '.join(map(str, too_big))}." + (" Give smaller --ks." if len(ks) > 1 else "")
                             + ("" if decoded else f" (Checked before decoding: {n} files look like images.)"))


@holds_out_lock
def run(images_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], config: RunConfig | None = None, *,
        cache: CacheSetting = True, progress: Progress | None = None, backend: Backend | None = None,
        **settings: Any) -> RunResult:
    """Cluster a folder of images and write the outputs.

    Args:
        images_dir: the folder of images (searched recursively).
        out_dir: where assignments.csv, summary.json, confusion.csv (with labels) and the rest go.
        config: a :class:`RunConfig`; or give its fields as keyword arguments (``features=``, ``k=``, ...).
        cache: True (default folder), False (no cache) or a folder for the embedding cache.
        progress: called as ``progress(stage, done, total)`` during long stages.
        backend: where extraction and k-means run (default: this machine); e.g.
            ``imgclust.backends.get_backend("dask", workers=4)``. The caller closes it. Same result either way.

    Returns:
        :class:`RunResult`.

    Example:
        >>> r = run("photos", "out", features="pixels", k=3)  # doctest: +SKIP
        >>> r.summary["cluster_sizes"]  # doctest: +SKIP
    """
    config = with_features(config or RunConfig(**settings))
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise InputError(f"The images folder {images_dir} does not exist or is not a folder.")
    check_out_dir(images_dir, out_dir)
    get_clusterer(config.method)  # an unknown method fails now, not after extraction
    clean_settings(config.clean_options)
    timer = Timer()
    backend = backend or LocalBackend()
    feats = load_features(images_dir, config, cache=cache, exclude=[out_dir], timer=timer, progress=progress,
                          backend=backend, ks=[config.k] if config.k is not None else [])
    if config.k is not None:
        validate_k(config.k, len(feats.X))  # before anything is written to out_dir
    with timer.stage("duplicates"):
        dups = find_duplicates(feats.usable, digests=open_digests(cache))
    # What the results of the stages below depend on (imgclust.store.results): kept there by an earlier run
    # of the same vectors and settings, they are taken instead of computed again.
    results, from_cache = open_results(cache), list[str]()
    vectors = vectors_identity(feats, config, cache)
    with timer.stage("clean"):
        key = results_key(vectors, stage="clean", clean=clean_settings(config.clean_options),
                          features=config.features, draft_size=feats.extractor.draft_size, seed=config.seed)
        cleaned = cached_result(results, "clean", key, CLEAN_TYPES,
                                lambda: clean_checks(feats, config, cache, progress), from_cache)
    claim_out_dir(out_dir, "This folder holds the outputs of an imgclust run.\n")

    k_info: dict[str, Any] = {"k_auto": False}
    with timer.stage("cluster"):
        fingerprint = results_key(vectors, method=config.method, method_options=config.method_options,
                                  seed=config.seed)
        if config.k is None:
            from .cluster.choose_k import choose_k

            key = results_key(fingerprint, stage="cluster", k_range=list(config.k_range))
            choice = cached_result(results, "cluster", key, CLUSTER_TYPES, lambda: choose_k(
                feats.X, k_range=config.k_range, method=config.method, seed=config.seed, **config.method_options),
                from_cache)
            # k_reason: the rule's, plus the sample it ran on when that is not every image.
            k_info = {"k_auto": True, "k_range": list(config.k_range), **k_summary(choice.pick),
                      "k_reason": choice.reason, "k_sample": choice.sample_size}
            result = choice.result
            sweep_table: Sweep | None = score_sweep(choice.sweep, feats.labels_true)
        else:
            k = validate_k(config.k, len(feats.X))
            # A k that an earlier automatic run of the same vectors and settings already clustered.
            saved = load_candidate(out_dir, fingerprint, k)
            if saved is not None:
                result = result_from_labels(feats.X, saved, k, seed=config.seed, method=config.method,
                                            info={"from": K_CANDIDATES})
                k_info["k_from_sweep"] = True
                k_info.update(_earlier_k_choice(out_dir))
                keep_outputs(out_dir, SWEEP_CSV, K_CANDIDATES)  # still this grouping's sweep: not stale
            else:
                key = results_key(fingerprint, stage="cluster", k=k, backend=type(backend).__name__)
                result = cached_result(results, "cluster", key, (ClusterResult,),
                                       lambda: backend.cluster(feats.X, k, config), from_cache)
            sweep_table = None

    with timer.stage("evaluate"):
        labels_true = feats.labels_true
        metrics = evaluate(labels_true, result.labels) if labels_true is not None else None

    with timer.stage("write"):
        summary = _summary(feats, config, result, metrics, timer, k_info, out_dir)
        summary["backend"] = backend.describe()
        summary["results_cached"] = from_cache  # stages whose results an earlier run computed
        summary["n_duplicates"], summary["duplicates"] = dups.n_duplicates, dups.groups
        summary.update(cleaned.summary())
        rows = assignments_table(feats.records, result.labels, result.distances, with_labels=labels_true is not None,
                                 extra={"duplicate_of": dups.duplicate_of, **cleaned.columns()})
        retire_edits(out_dir)  # an earlier run's corrections do not apply to this clustering
        write_csv(out_dir / ASSIGNMENTS, rows)
        write_csv(out_dir / DUPLICATES_CSV, cleaned.duplicate_rows(feats.usable), DUPLICATES_COLUMNS)
        if labels_true is not None:
            conf = confusion(labels_true, result.labels)
            write_confusion(out_dir / CONFUSION, conf, conf.hungarian_mapping())
        if sweep_table is not None:
            write_csv(out_dir / SWEEP_CSV, [r.as_row() for r in sweep_table.rows], SWEEP_COLUMNS)
            kept = {k: v for k, v in sweep_table.labels.items() if k in choice.pick.candidates and len(v) == len(feats.X)}
            save_candidates(out_dir, fingerprint, kept | {result.k: result.labels})
    with timer.stage("report"):  # names go into summary.json; the page itself is built from the files
        key = results_key(vectors, stage="names", labels=vectors_id("labels", X=result.labels), k=result.k,
                          seed=config.seed)
        summary.update(cached_result(results, "names", key, (dict,),
                                     lambda: suggest_names(feats.extractor, feats.X, result.labels, result.k,
                                                           seed=config.seed),
                                     from_cache))
        coords = cached_result(results, "map", results_key(vectors, stage="map", method="pca", seed=config.seed),
                               (np.ndarray,), lambda: map_2d(feats.X, "pca", seed=config.seed), from_cache)
        save_report_data(out_dir, feats.X, result.labels, centers=result.centers, seed=config.seed, coords=coords)
    with timer.stage("model"):  # after the names, so the saved model carries them
        save_model(out_dir / MODEL_DIR, feats.extractor, config, result, summary)
    summary["timings"] = dict(timer.seconds)
    write_summary(out_dir / SUMMARY, summary)
    write_report(out_dir, figure_cache=figure_cache(cache))
    return RunResult(out_dir, config, feats, result, metrics, summary)


def clean_checks(feats: Features, config: RunConfig, cache: CacheSetting = True,
                 progress: Progress | None = None) -> CleanResult:
    """Quality flags, near-duplicate groups and outlier scores of the usable images (see :mod:`imgclust.clean`)."""
    from .clean.stage import measure, open_stats_cache, run_checks

    draft = feats.extractor.draft_size
    # The precision the network ran at (int8 may have fallen back to fp32): the outlier rule was measured per network.
    precision = getattr(feats.extractor, "precision", None)

    def measured() -> Measurements:  # after the neighbour search: the two are never held at once
        return measure(feats.usable, feats.stats, draft_size=draft, cache=open_stats_cache(cache_root(cache), draft),
                       identity=config.identity, progress=progress)[0]

    return run_checks(feats.X, measured, config.clean_options, features=config.features, precision=precision,
                      seed=config.seed)


@holds_out_lock.without_cleanup
def rebuild_report(out_dir: str | os.PathLike[str], *, map_method: str | None = None,
                   cache: CacheSetting = True, progress: Progress | None = None) -> Path:
    """Rebuild OUT_DIR/report.html from the files of a finished run.

    The map and centres come from OUT_DIR/report-data.npz. When that file is missing, or another
    ``map_method`` (pca, tsne, umap) is asked for, the vectors are loaded again (from the embedding
    cache when they are there, else recomputed) and the file is rewritten.

    Raises:
        InputError: OUT_DIR is not a run's output folder, or its images changed so the vectors no longer match.
    """
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    check_cache_dir(Path(summary.get("images_dir") or out_dir), cache)  # its plots go to the cache folder
    if map_method is not None or not (out_dir / REPORT_DATA).is_file():
        config = RunConfig.from_dict(summary["config"])
        rows = [r for r in read_assignments(out_dir) if r.get("status") == "ok" and r.get("cluster", "") != ""]
        X = run_vectors(out_dir, cache=cache, progress=progress, purpose="the map cannot be recomputed")
        labels = np.array([int(r["cluster"]) for r in rows])
        saved = load_report_data(out_dir, labels)  # keeps the clusterer's own centres when they were saved
        save_report_data(out_dir, X, labels, centers=None if saved is None else saved["centers"],
                         map_method=map_method or "pca", seed=config.seed)
    return write_report(out_dir, figure_cache=figure_cache(cache))


def retire_edits(out_dir: Path) -> Path | None:
    """Rename an earlier run's OUT_DIR/edits.jsonl to edits-until-TIME.jsonl (kept, no longer applied)."""
    from .edits import EDITS

    journal = out_dir / EDITS
    if not journal.is_file():
        return None
    kept = out_dir / f"edits-until-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    os.replace(journal, kept)
    log.warning("%s held the edits of an earlier run in this folder; kept as %s.", journal, kept.name)
    return kept


def run_vectors(out_dir: str | os.PathLike[str], *, cache: CacheSetting = True, progress: Progress | None = None,
                purpose: str = "its vectors cannot be loaded") -> np.ndarray:
    """The vectors of a finished run's clustered images, in assignments.csv order (cache first, else recomputed).

    Returns:
        np.ndarray of shape (n_clustered, dim), float32.

    Raises:
        InputError: OUT_DIR is not a run's output folder, or some of its images can no longer be read.
    """
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    config = RunConfig.from_dict(summary["config"])
    rows = [r for r in read_assignments(out_dir) if r.get("status") == "ok" and r.get("cluster", "") != ""]
    feats = load_features(summary["images_dir"], config, cache=cache, exclude=[out_dir], progress=progress)
    index = {r.relpath: i for i, r in enumerate(feats.usable)}
    missing = [r["path"] for r in rows if r["path"] not in index]
    if missing:
        raise InputError(f"{len(missing)} clustered images (e.g. {missing[0]}) can no longer be read under "
                         f"{summary['images_dir']}, so {purpose}. Run imgclust run again.")
    return feats.array[[index[r["path"]] for r in rows]]


def _earlier_k_choice(out_dir: Path) -> dict[str, Any]:
    """The candidates of the automatic run whose clusterings a ``--k`` rerun reuses, so that its report
    still lists them (empty when that summary is gone or unreadable)."""
    try:
        earlier = read_summary(out_dir)
    except InputError:
        return {}
    keys = ("k_candidates", "elbow_k", "silhouette_k", "eigengap_k", "k_range")
    if not (earlier.get("k_auto") or earlier.get("k_from_sweep")):
        return {}
    return {key: earlier[key] for key in keys if key in earlier}


def k_summary(pick: KPick) -> dict[str, Any]:
    """summary.json's account of an automatic k: the reason, the candidates with theirs, the signals."""
    return {"k_reason": pick.reason,
            "k_candidates": [c.as_dict() for c in pick.alternatives] or [{"k": k} for k in pick.candidates],
            "elbow_k": pick.elbow, "silhouette_k": pick.silhouette_k,
            "eigengap_k": pick.eigengap_k}


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
        summary["n_labels"] = len(set(feats.labels_true or []) - {None})
        summary.update(feats.label_note())
    return summary


@dataclass
class SweepResult:
    """The result of :func:`sweep`: the criteria over k, the k the automatic rule picks, and the files."""

    out_dir: Path
    config: RunConfig
    features: Features
    sweep: Sweep
    pick: KPick
    summary: dict[str, Any]

    @property
    def k(self) -> int:
        return self.pick.k


@holds_out_lock
def sweep(images_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], config: RunConfig | None = None, *,
          ks: Sequence[int] | None = None, cache: CacheSetting = True, progress: Progress | None = None,
          **settings: Any) -> SweepResult:
    """Cluster a folder of images at every k of ``ks``, score each k, pick one, and write the table and plots.

    Writes OUT_DIR/sweep.csv (one row per k: k, inertia, silhouette, calinski_harabasz, davies_bouldin and,
    with labels, accuracy_majority, accuracy_hungarian (only where k equals the number of labels), nmi,
    ari), elbow.png (inertia against k, chosen k marked), criteria.png and summary.json.

    Args:
        images_dir: the folder of images (searched recursively).
        out_dir: where the outputs go.
        config: a :class:`RunConfig` (``k`` is ignored); or give its fields as keyword arguments.
        ks: the k to try; default every k in ``config.k_range``.
        cache: True (default folder), False (no cache) or a folder for the embedding cache.
        progress: called as ``progress(stage, done, total)`` during long stages.

    Returns:
        :class:`SweepResult`.

    Example:
        >>> r = sweep("photos", "out", ks=[2, 4, 8], features="pixels")  # doctest: +SKIP
        >>> r.k, r.pick.reason  # doctest: +SKIP
    """
    config = with_features(config or RunConfig(**settings))
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise InputError(f"The images folder {images_dir} does not exist or is not a folder.")
    check_out_dir(images_dir, out_dir)
    timer = Timer()
    ks = sorted(set(ks if ks is not None else range(config.k_range[0], config.k_range[1] + 1)))
    feats = load_features(images_dir, config, cache=cache, exclude=[out_dir], timer=timer, progress=progress,
                          ks=ks)
    check_k_fits(ks, len(feats.X), decoded=True)
    claim_out_dir(out_dir, "This folder holds the outputs of an imgclust run.\n")
    with timer.stage("sweep"):
        table = sweep_k(feats.array, ks, seed=config.seed, labels_true=feats.labels_true, method=config.method,
                        progress=progress, **config.method_options)
        pick = pick_k(table)

    with timer.stage("write"):
        from .outputs.plots import criteria_figure, elbow_figure, save_figure

        write_csv(out_dir / SWEEP_CSV, [r.as_row() for r in table.rows], SWEEP_COLUMNS)
        save_figure(elbow_figure(table.ks, table.column("inertia"), chosen_k=pick.k, elbow_k=pick.elbow,
                                 title=f"Inertia against k ({config.features}, {len(feats.X)} images)"),
                    out_dir / ELBOW_PNG)
        save_figure(criteria_figure(table.ks, {c: table.column(c) for c in SWEEP_COLUMNS[1:]}, chosen_k=pick.k),
                    out_dir / CRITERIA_PNG)
        statuses = Counter(r.status for r in feats.records)
        summary: dict[str, Any] = {
            "imgclust_version": __version__,
            "kind": "sweep",
            "images_dir": str(feats.images_dir),
            "out_dir": str(out_dir.resolve()),
            "n_images": len(feats.records),
            "n_ok": statuses.get("ok", 0),
            "n_failed": len(feats.records) - statuses.get("ok", 0),
            "statuses": dict(sorted(statuses.items())),
            "ks": table.ks,
            "k": pick.k,
            "k_auto": True,
            **k_summary(pick),
            "sweep_engine": table.engine,
            "silhouette_sample": table.silhouette_sample,
            "features": config.features,
            "extractor": feats.extractor.describe(),
            "method": config.method,
            "seed": config.seed,
            "labels_mode": feats.label_mode,
            "n_vectors_computed": feats.n_computed,
            "n_vectors_cached": feats.n_cached,
            "config": config.to_dict(),
        }
        if feats.labels_true is not None:
            summary["n_labels"] = len(set(feats.labels_true) - {None})
            summary.update(feats.label_note())
        write_summary(out_dir / SUMMARY, summary)
    summary["timings"] = dict(timer.seconds)
    write_summary(out_dir / SUMMARY, summary)
    return SweepResult(out_dir, config, feats, table, pick, summary)
