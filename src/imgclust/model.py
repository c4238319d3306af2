"""Saved models: what a run learned, as plain data, and :func:`assign` to sort new images with it.

Every run writes ``OUT_DIR/model/``::

    model.json    the extractor (name, options, cache id, preprocessing), the transform applied
                  before clustering, k, method, seed, per-cluster size, fit-time 95th-percentile
                  distance and name (if any), the imgclust version
    centers.npz   the centres, shape (k, dim) float32, and any transform arrays (plain NumPy,
                  read with ``np.load(allow_pickle=False)``; no pickle anywhere)

How assignment works (every method): the new vectors get the same transform the clusterer applied
before clustering (``ClusterResult.info["transform"]``, see :data:`TRANSFORM_OPS`), then each goes to
the nearest centre by Euclidean distance, with the same code k-means uses for its final assignment.
For k-means this reproduces the fitted labels exactly. For methods whose labels do not come from the
nearest centre (e.g. graph-based ones), the centre is the mean of the cluster's members in the
transformed space, so a point the method placed by its neighbours rather than by distance may go to
another cluster. A new image is an ``outlier`` when its distance is beyond the 95th percentile of the
distances of that cluster's members at fit time.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._fs import atomic_write_bytes, atomic_write_json, is_within
from .cluster import ClusterResult
from .cluster.kmeans import ArrayAssigner
from .config import RunConfig
from .errors import InputError, OutputError, ParameterError
from .features import Extractor, get_extractor
from .outdir import claim_out_dir, holds_out_lock

log = logging.getLogger(__name__)

MODEL_DIR = "model"
MODEL_JSON = "model.json"
CENTERS_NPZ = "centers.npz"
MODEL_FORMAT = "imgclust-model"
MODEL_FORMAT_VERSION = 1
OUTLIER_PERCENTILE = 95.0

# The steps a clusterer may record in ClusterResult.info["transform"] (a list, applied in order):
#   {"op": "l2_normalize"}                 each row divided by its L2 norm (zero rows stay zero)
#   {"op": "subtract", "vector": (d,)}     X - vector
#   {"op": "scale", "vector": (d,)}        X * vector (per feature; e.g. whitening scales)
#   {"op": "project", "matrix": (d, d')}   X @ matrix (PCA and other linear projections)
TRANSFORM_OPS: dict[str, tuple[str, ...]] = {
    "l2_normalize": (),
    "subtract": ("vector",),
    "scale": ("vector",),
    "project": ("matrix",),
}


def apply_transform(X: np.ndarray, steps: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> np.ndarray:
    """Apply transform steps (see :data:`TRANSFORM_OPS`) to the rows of ``X``.

    Args:
        X: np.ndarray of shape (n_samples, n_features).
        steps: the steps, with their arrays as NumPy arrays or nested lists.

    Returns:
        np.ndarray of shape (n_samples, n_features_out), float32.

    Example:
        >>> apply_transform(np.array([[3.0, 4.0]]), [{"op": "l2_normalize"}]).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    X = np.asarray(X, dtype=np.float32)
    for step in steps:
        op = step.get("op")
        if op == "l2_normalize":
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.where(norms > 0, norms, 1.0).astype(np.float32)
        elif op == "subtract":
            X = X - np.asarray(step["vector"], dtype=np.float32)
        elif op == "scale":
            X = X * np.asarray(step["vector"], dtype=np.float32)
        elif op == "project":
            X = X @ np.asarray(step["matrix"], dtype=np.float32)
        else:
            raise ValueError(f"Unknown transform step {op!r}; known: {', '.join(TRANSFORM_OPS)}.")
    return np.ascontiguousarray(X, dtype=np.float32)


def fit_thresholds(labels: np.ndarray, distances: np.ndarray, k: int,
                   percentile: float = OUTLIER_PERCENTILE) -> np.ndarray:
    """Per-cluster ``percentile`` of the members' distances, shape (k,) float32 (NaN for an empty cluster)."""
    out = np.full(k, np.nan, dtype=np.float32)
    for c in range(k):
        d = distances[labels == c]
        if len(d):
            out[c] = np.percentile(d.astype(np.float64), percentile)
    return out


@dataclass(frozen=True)
class Assignment:
    """Nearest-centre assignment of vectors to a saved model's clusters.

    Attributes:
        labels: np.ndarray of shape (n_samples,), int64 in [0, k).
        distances: np.ndarray of shape (n_samples,), float32: distance to the assigned centre.
        outlier: np.ndarray of shape (n_samples,), bool: distance beyond the cluster's fit-time threshold.
    """

    labels: np.ndarray
    distances: np.ndarray
    outlier: np.ndarray


@dataclass(frozen=True)
class SavedModel:
    """A model read back from ``OUT_DIR/model``.

    Attributes:
        path: the model folder.
        features: the registry name of the extractor (``--features``).
        feature_options: the options it was built with (e.g. ``{"size": 32}``).
        extractor: its ``describe()`` at fit time (name, dim, cache_id, preprocessing).
        method: the clusterer; k: number of clusters; seed: the seed.
        centers: np.ndarray of shape (k, d), float32, in the transformed space.
        thresholds: np.ndarray of shape (k,), float32: fit-time 95th-percentile distance (NaN: no members).
        transform: the steps applied to vectors before measuring distances, arrays as np.ndarray.
        cluster_names: cluster id (as a string) -> name, when the run named its clusters.
        imgclust_version: the version that wrote it.
    """

    path: Path
    features: str
    feature_options: dict[str, Any]
    extractor: dict[str, Any]
    method: str
    k: int
    seed: int
    centers: np.ndarray
    thresholds: np.ndarray
    transform: tuple[dict[str, Any], ...]
    cluster_names: dict[str, str]
    imgclust_version: str
    cluster_ids: np.ndarray | None = None
    n_edits: int = 0

    def assign_vectors(self, X: np.ndarray) -> Assignment:
        """Assign raw extractor vectors, shape (n_samples, dim), to the nearest centre (after the transform)."""
        try:
            Z = apply_transform(X, self.transform)
        except ValueError as exc:  # vectors of another size than the transform's arrays
            raise InputError(f"Vectors of shape {np.shape(X)} do not fit the model's transform: {exc}.") from exc
        if Z.shape[1] != self.centers.shape[1]:
            raise InputError(f"Vectors of size {Z.shape[1]} after the transform do not match the model's centres "
                             f"of size {self.centers.shape[1]}.")
        # The same code path as k-means' final assignment, so fitted vectors get their fitted labels.
        labels, sq, _, _ = ArrayAssigner(Z).assign(self.centers)
        distances = np.sqrt(sq).astype(np.float32)
        outlier = ~(distances <= self.thresholds[labels])  # NaN threshold (empty at fit time): always outlier
        if self.cluster_ids is not None:  # edited model: row j of the centres is cluster cluster_ids[j]
            labels = self.cluster_ids[labels]
        return Assignment(labels, distances, outlier)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (what ``np.savez`` writes, readable by ``np.load(allow_pickle=False)``) with fixed zip
    timestamps, so the same model is the same bytes (``np.savez`` stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), npy.getvalue())
    return buf.getvalue()


def save_model(model_dir: str | os.PathLike[str], extractor: Extractor, config: RunConfig, result: ClusterResult,
               summary: dict[str, Any]) -> Path:
    """Write ``model.json`` and ``centers.npz`` for a finished clustering (called by :func:`imgclust.run`).

    Args:
        model_dir: the folder to write (normally ``OUT_DIR/model``).
        extractor: the extractor that made the vectors.
        config: the run's settings (features and their options).
        result: the clustering; ``result.info["transform"]`` (if any) lists the steps applied before clustering.
        summary: the run's summary (cluster names are taken from ``summary["cluster_names"]`` if present).

    Returns:
        The model folder.
    """
    model_dir = Path(model_dir)
    k = int(result.k)
    centers = np.ascontiguousarray(result.centers, dtype=np.float32)
    thresholds = fit_thresholds(result.labels, result.distances, k)
    sizes = np.bincount(result.labels, minlength=k)
    arrays: dict[str, np.ndarray] = {"centers": centers}
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(result.info.get("transform") or []):
        op = step.get("op")
        if op not in TRANSFORM_OPS:
            raise ValueError(f"The clusterer {result.method!r} recorded a transform step {op!r} that saved models "
                             f"cannot replay; known: {', '.join(TRANSFORM_OPS)}.")
        saved: dict[str, Any] = {"op": op}
        for key in TRANSFORM_OPS[op]:
            name = f"transform_{i}_{key}"
            arrays[name] = np.asarray(step[key], dtype=np.float32)
            saved[key] = {"npz": name, "shape": list(arrays[name].shape)}
        steps.append(saved)
    names = {str(c): str(n) for c, n in (summary.get("cluster_names") or {}).items()}
    doc = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "imgclust_version": __version__,
        "features": config.features,
        "feature_options": dict(config.feature_options),
        "extractor": extractor.describe(),
        "transform": steps,
        "method": result.method,
        "method_options": dict(config.method_options),
        "k": k,
        "seed": int(result.seed),
        "dim": int(centers.shape[1]),
        "distance": "euclidean",
        "assignment": "nearest centre by Euclidean distance, after the transform",
        "outlier_percentile": OUTLIER_PERCENTILE,
        "clusters": [{"cluster": c, "size": int(sizes[c]),
                      "distance_p95": None if np.isnan(thresholds[c]) else float(thresholds[c]),
                      **({"name": names[str(c)]} if str(c) in names else {})} for c in range(k)],
        "cluster_names": names,
        "fitted_on": {"images_dir": summary.get("images_dir"), "n_images": int(len(result.labels))},
        "arrays": {"file": CENTERS_NPZ, "names": sorted(arrays)},
    }
    atomic_write_bytes(model_dir / CENTERS_NPZ, npz_bytes(arrays))
    atomic_write_json(model_dir / MODEL_JSON, doc)
    return model_dir


def load_model(path: str | os.PathLike[str]) -> SavedModel:
    """Read a saved model: ``OUT_DIR/model`` or the run's ``OUT_DIR`` itself.

    Raises:
        InputError: the folder holds no model, or a damaged or newer one.
    """
    path = Path(path)
    if not (path / MODEL_JSON).is_file() and (path / MODEL_DIR / MODEL_JSON).is_file():
        path = path / MODEL_DIR
    json_path = path / MODEL_JSON
    if not json_path.is_file():
        raise InputError(f"{path} holds no {MODEL_JSON}: give the model folder of a run (OUT_DIR/{MODEL_DIR}) "
                         "written by imgclust run.")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        with np.load(path / CENTERS_NPZ, allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in npz.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(f"Cannot read the model in {path}: {exc}. Run imgclust run again to write a new one.") from exc
    return _validated_model(path, json_path, doc, arrays)


class _Damaged(Exception):
    """One thing wrong in a model file (turned into an InputError that names the model)."""


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise _Damaged(what)


def _int(doc: dict[str, Any], key: str, low: int | None = None) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise _Damaged(f"'{key}' must be a whole number; got {v!r}")
    _need(low is None or v >= low, f"'{key}' must be at least {low}; got {v!r}")
    return v


def _str(doc: dict[str, Any], key: str) -> str:
    v = doc.get(key)
    _need(isinstance(v, str), f"'{key}' must be text; got {v!r}")
    return str(v)


def _dict(doc: dict[str, Any], key: str) -> dict[str, Any]:
    v = doc.get(key)
    _need(isinstance(v, dict), f"'{key}' must be a JSON object; got {type(v).__name__}")
    return dict(v)  # type: ignore[arg-type]


def _array(arrays: dict[str, np.ndarray], ref: Any, what: str, ndim: int) -> np.ndarray:
    """The finite float32 array a model.json entry ``{"npz": NAME, ...}`` points to."""
    _need(isinstance(ref, dict) and isinstance(ref.get("npz"), str),
          f"{what} must name an array of {CENTERS_NPZ} as {{\"npz\": NAME}}; got {ref!r}")
    name = ref["npz"]
    _need(name in arrays, f"{what} names the array '{name}', which {CENTERS_NPZ} does not hold")
    arr = arrays[name]
    _need(arr.dtype.kind in "fiu", f"{what} ('{name}') must hold numbers; it holds {arr.dtype}")
    _need(arr.ndim == ndim, f"{what} ('{name}') must have {ndim} dimension(s); it has shape {arr.shape}")
    _need(bool(np.isfinite(arr).all()), f"{what} ('{name}') holds NaN or infinite values")
    return arr.astype(np.float32)


def _validated_model(path: Path, json_path: Path, doc: Any, arrays: dict[str, np.ndarray]) -> SavedModel:
    """Check every field of a model document and its arrays; a damaged or tampered model is an InputError."""
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise InputError(f"{json_path} is not an imgclust model.")
    try:
        version = _int(doc, "format_version", 1)
        if version > MODEL_FORMAT_VERSION:
            raise InputError(f"The model in {path} was written by a newer imgclust ({doc.get('imgclust_version')}); "
                             f"this is {__version__}. Upgrade imgclust to use it.")
        k, dim, seed = _int(doc, "k", 1), _int(doc, "dim", 1), _int(doc, "seed")
        features, method = _str(doc, "features"), _str(doc, "method")
        imgclust_version = str(doc.get("imgclust_version", ""))
        feature_options, extractor = _dict(doc, "feature_options"), _dict(doc, "extractor")
        in_dim = extractor.get("dim")
        _need(isinstance(in_dim, int) and not isinstance(in_dim, bool) and in_dim >= 1,
              f"'extractor.dim' must be a whole number of at least 1; got {in_dim!r}")
        steps_doc = doc.get("transform")
        if not isinstance(steps_doc, list):
            raise _Damaged(f"'transform' must be a list; got {type(steps_doc).__name__}")
        steps: list[dict[str, Any]] = []
        # the arrays must chain: each step's array fits the vectors the step before made, from the extractor's
        width = int(in_dim)  # type: ignore[arg-type]
        for i, step in enumerate(steps_doc):
            _need(isinstance(step, dict), f"transform step {i} must be a JSON object; got {step!r}")
            op = step.get("op")
            _need(op in TRANSFORM_OPS, f"transform step {i} has the unknown op {op!r}; known: {', '.join(TRANSFORM_OPS)}")
            done: dict[str, Any] = {"op": op}
            for key in TRANSFORM_OPS[op]:
                arr = _array(arrays, step.get(key), f"transform step {i} ({op}) '{key}'", 2 if key == "matrix" else 1)
                _need(arr.shape[0] == width,
                      f"transform step {i} ({op}) '{key}' has shape {arr.shape} for vectors of size {width}")
                if key == "matrix":
                    width = arr.shape[1]
                done[key] = arr
            steps.append(done)
        _need(width == dim, f"the transform makes vectors of size {width}, but 'dim' is {dim}")
        centers = _array(arrays, {"npz": "centers"}, "the centres", 2)
        _need(centers.shape == (k, dim), f"centres of shape {centers.shape} for k={k} and dim={dim}")
        clusters = doc.get("clusters")
        _need(isinstance(clusters, list) and len(clusters) == k, f"'clusters' must be a list of {k} entries")
        thresholds = np.full(k, np.nan, dtype=np.float32)
        for c, entry in enumerate(clusters):  # type: ignore[arg-type]
            _need(isinstance(entry, dict), f"clusters[{c}] must be a JSON object; got {entry!r}")
            p95 = entry.get("distance_p95")
            _need(p95 is None or (isinstance(p95, int | float) and not isinstance(p95, bool)
                                  and np.isfinite(p95) and p95 >= 0),
                  f"clusters[{c}].distance_p95 must be a finite distance or null; got {p95!r}")
            if p95 is not None:
                thresholds[c] = p95
        names = doc.get("cluster_names") or {}
        _need(isinstance(names, dict) and all(isinstance(n, str) for n in names.values()),
              "'cluster_names' must map cluster numbers to text")
    except _Damaged as exc:
        raise InputError(f"The model in {path} is damaged or was edited by hand: {exc}. "
                         "Run imgclust run again to write a new one.") from None
    return SavedModel(path=path, features=features, feature_options=feature_options, extractor=extractor,
                      method=method, k=k, seed=seed, centers=centers, thresholds=thresholds, transform=tuple(steps),
                      cluster_names={str(c): n for c, n in names.items()}, imgclust_version=imgclust_version)


def with_edits(model: SavedModel, *, cache: Any = True, progress: Any = None) -> SavedModel:
    """The model with its run's edits (OUT_DIR/edits.jsonl) applied, or ``model`` itself when there are none.

    The centres are recomputed from the edited membership: the mean of each edited cluster's members
    (the run's vectors, from the embedding cache or recomputed, after the model's transform), with
    the 95th-percentile outlier thresholds measured again; new clusters keep their ids and given names.

    Raises:
        InputError: the run's images can no longer be read, so its vectors cannot be loaded.
    """
    from . import edits
    from .pipeline import run_vectors

    run_dir = model.path.parent
    if not (run_dir / edits.EDITS).is_file():
        return model
    edited = edits.load(run_dir)
    if edited.n_edits == 0:
        return model
    X = run_vectors(run_dir, cache=cache, progress=progress,
                    purpose="the model's centres cannot be recomputed from the edits")
    ids, centers, thresholds = edits.edited_centers(apply_transform(X, model.transform), edited)
    return dataclasses.replace(model, k=edited.k, centers=centers, thresholds=thresholds, cluster_ids=ids,
                               cluster_names={str(c): n for c, n in edited.names.items()}, n_edits=edited.n_edits)


def check_compatible(model: SavedModel, extractor: Extractor) -> None:
    """Refuse an extractor whose vectors differ from those the model was fitted on.

    Raises:
        InputError: naming what differs (cache id, vector size, preprocessing entries).
    """
    fitted = model.extractor
    if fitted.get("cache_id") == extractor.cache_id():
        return
    now = extractor.describe()
    diffs = []
    if fitted.get("dim") != now["dim"]:
        diffs.append(f"vector size {fitted.get('dim')} vs {now['dim']}")
    before, after = fitted.get("preprocessing") or {}, now["preprocessing"]
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            diffs.append(f"{key}: {before.get(key, '-')!r} vs {after.get(key, '-')!r}")
    detail = "; ".join(diffs) or "the feature format version changed"
    raise InputError(
        f"This model was fitted on '{fitted.get('name')}' vectors (cache id {fitted.get('cache_id')}), but this "
        f"installation's '{extractor.name}' makes different ones (cache id {extractor.cache_id()}): {detail}. "
        f"Its centres would not fit. Use the weights and imgclust version that made it "
        f"({model.imgclust_version or 'unknown'}), or fit a new model here with imgclust run.")


def fitted_precision(model: SavedModel) -> str:
    """The network precision the model's vectors were made with (models written before int8 existed: fp32)."""
    return str(model.extractor.get("precision") or model.feature_options.get("precision") or "fp32")


def check_precision_matches(model: SavedModel, extractor: Extractor, requested: str | None = None) -> None:
    """Refuse vectors of another precision than the model's (asked for, or an int8 fallback to fp32 here).

    Raises:
        InputError: naming both precisions and what to do.
    """
    fitted = fitted_precision(model)
    if requested is not None and requested != fitted:
        raise InputError(f"This model was fitted on {fitted} vectors; --precision {requested} makes {requested} "
                         f"vectors, which its centres do not fit. Leave out --precision (assign uses the model's "
                         f"{fitted}), or fit a new model with imgclust run --precision {requested}.")
    now = str(extractor.describe().get("precision") or "fp32")
    if now != fitted:
        why = getattr(extractor, "precision_note", None) or f"'{extractor.name}' runs in {now} here"
        raise InputError(f"This model was fitted on {fitted} vectors, but {why} Its centres would not fit these "
                         f"vectors: assign on a machine with {fitted} support, or fit a new model here with "
                         f"imgclust run --precision {now}.")


def build_extractor(model: SavedModel, weights: str | os.PathLike[str] | None = None) -> Extractor:
    """The model's extractor as this installation builds it (``weights`` replaces a checkpoint's path).

    Raises:
        InputError: the extractor is unknown here, or cannot be built (e.g. its checkpoint is not found).
        MissingDependencyError: it needs a package that is not installed.
    """
    options = dict(model.feature_options)
    if weights is not None:
        if "weights" not in options:
            raise ParameterError(f"--weights is for models fitted with a checkpoint (timm:MODEL --weights); this one "
                                 f"uses '{model.features}', which needs none.")
        options["weights"] = str(weights)
    try:
        return get_extractor(model.features, **options)
    except ParameterError as exc:
        hint = " Pass the checkpoint with --weights FILE." if "weights" in options else ""
        raise InputError(f"This model needs the features '{model.features}', which cannot be built here: {exc}"
                         f"{hint}") from exc


@dataclass
class AssignResult:
    """The result of :func:`assign`.

    Attributes:
        out_dir: where assignments.csv and summary.json were written.
        model: the model used.
        features: the new images' records and vectors (:class:`imgclust.pipeline.Features`).
        assignment: labels, distances and outlier flags of the usable images, in record order.
        metrics: accuracy etc. against labels found in the folder, else None.
        summary: what summary.json holds.
    """

    out_dir: Path
    model: SavedModel
    features: Any
    assignment: Assignment
    metrics: dict[str, float] | None
    summary: dict[str, Any]

    @property
    def labels(self) -> np.ndarray:
        return self.assignment.labels


@holds_out_lock
def assign(model_dir: str | os.PathLike[str], images_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
           weights: str | os.PathLike[str] | None = None, labels: str = "auto", batch_size: int = 32,
           cache: Any = True, progress: Any = None, precision: str | None = None) -> AssignResult:
    """Sort new images into the clusters of a saved model.

    Writes ``assignments.csv`` (the run's columns plus ``outlier``), ``summary.json`` and, when the
    folder has labels, ``confusion.csv`` to ``out_dir``; byte-identical files are listed as in a run.

    Args:
        model_dir: ``OUT_DIR/model`` of a run (or the run's ``OUT_DIR``).
        images_dir: the new images (searched recursively).
        out_dir: where the results go (not inside the images or the model's run folder).
        weights: where the model's checkpoint is now, for ``timm:`` models fitted with ``--weights``.
        labels: how ground-truth labels are read for scoring (auto, folder, prefix, none).
        batch_size: images per network batch.
        cache: True (default folder), False (no cache) or a folder for the embedding cache.
        progress: called as ``progress(stage, done, total)``.
        precision: the network precision asked for (``fp32``/``int8``); None: the model's. Another one is refused.

    Returns:
        :class:`AssignResult`.

    Raises:
        InputError: no model, an incompatible or unknown extractor, or no usable image.

    Example:
        >>> r = assign("out/model", "new_photos", "sorted")  # doctest: +SKIP
        >>> r.summary["n_outliers"]  # doctest: +SKIP
    """
    from .io.duplicates import find_duplicates
    from .metrics import confusion, evaluate
    from .outputs.tables import (
        ASSIGNMENTS,
        CONFUSION,
        SUMMARY,
        assignments_table,
        write_confusion,
        write_csv,
        write_summary,
    )
    from .pipeline import Timer, check_out_dir, load_features

    model = load_model(model_dir)
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise InputError(f"The images folder {images_dir} does not exist or is not a folder.")
    check_out_dir(images_dir, out_dir)
    if is_within(model.path, out_dir):
        raise OutputError(f"The output folder {out_dir} holds the model {model.path}; writing there would replace "
                          "the results of the run that made it. Choose another output folder.")
    extractor = build_extractor(model, weights)
    check_precision_matches(model, extractor, precision)
    check_compatible(model, extractor)
    model = with_edits(model, cache=cache)  # images sorted into the clusters as corrected in review / imgclust edit
    options = dict(model.feature_options) | ({"weights": str(weights)} if weights is not None else {})
    config = RunConfig(features=model.features, feature_options=options, k=model.k, method=model.method,
                       labels=labels, batch_size=batch_size)
    timer = Timer()
    feats = load_features(images_dir, config, cache=cache, exclude=[out_dir, model.path], timer=timer,
                          progress=progress)
    with timer.stage("duplicates"):
        dups = find_duplicates(feats.usable)
    claim_out_dir(out_dir, "This folder holds the outputs of an imgclust assign.\n")
    with timer.stage("assign"):
        result = model.assign_vectors(feats.array)
    with timer.stage("evaluate"):
        labels_true = feats.labels_true
        metrics = evaluate(labels_true, result.labels) if labels_true is not None else None
    statuses = Counter(r.status for r in feats.records)
    n_ok = statuses.get("ok", 0)
    summary: dict[str, Any] = {
        "imgclust_version": __version__,
        "model_dir": str(model.path.resolve()),
        "images_dir": str(feats.images_dir),
        "out_dir": str(out_dir.resolve()),
        "n_images": len(feats.records),
        "n_ok": n_ok,
        "n_failed": len(feats.records) - n_ok,
        "statuses": dict(sorted(statuses.items())),
        "k": model.k,
        "features": model.features,
        "extractor": feats.extractor.describe(),
        "method": model.method,
        "assignment": "nearest centre by Euclidean distance, after the model's transform",
        "labels_mode": feats.label_mode,
        "cluster_sizes": [int(s) for s in np.bincount(result.labels, minlength=model.k)],
        "outlier_percentile": OUTLIER_PERCENTILE,
        "n_outliers": int(result.outlier.sum()),
        "n_duplicates": dups.n_duplicates,
        "duplicates": dups.groups,
        "cluster_names": model.cluster_names,
        # With edits, cluster_sizes is indexed by cluster number; cluster_ids lists the clusters that exist.
        **({"n_edits": model.n_edits, "k": len(model.cluster_ids), "cluster_ids": model.cluster_ids.tolist()}
           if model.n_edits and model.cluster_ids is not None else {}),
        "n_vectors_computed": feats.n_computed,
        "n_vectors_cached": feats.n_cached,
    }
    if metrics is not None:
        summary["metrics"] = metrics
        summary["n_labels"] = len(set(labels_true or []) - {None})
        summary.update(feats.label_note())
    with timer.stage("write"):
        rows = assignments_table(feats.records, result.labels, result.distances, with_labels=labels_true is not None,
                                 extra={"duplicate_of": dups.duplicate_of,
                                        "outlier": [bool(o) for o in result.outlier]})
        write_csv(out_dir / ASSIGNMENTS, rows)
        if labels_true is not None:
            conf = confusion(labels_true, result.labels)
            write_confusion(out_dir / CONFUSION, conf, conf.hungarian_mapping())
    summary["timings"] = dict(timer.seconds)
    write_summary(out_dir / SUMMARY, summary)
    return AssignResult(out_dir, model, feats, result, metrics, summary)
