"""The HTML report: one self-contained page to look at the clusters.

``OUT_DIR/report.html`` is built from the files of a run only (summary.json, assignments.csv and
``report-data.npz``), so that a run and ``imgclust report OUT_DIR`` share one code path:

- ``report-data.npz`` (plain NumPy arrays, no pickle) holds what the tables do not: the 2-D map
  coordinates of every clustered image and the cluster centres. The run writes it; without it
  the page is still built, minus the map and the centroid plot.
- Thumbnails are read from the images folder and embedded as base64 JPEGs, a bounded number per
  cluster (at most :data:`MAX_THUMBS` in all), so the page opens from disk with no server and no
  network, and stays a few MB even for very large folders.
- Plots are matplotlib figures from :mod:`imgclust.outputs.plots`, embedded as PNGs, plus
  ``elbow.png`` and ``criteria.png`` when a k sweep left them in OUT_DIR.
- Jinja2 autoescaping is on: every file name, label and error is shown as text.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_bytes, atomic_write_text
from ..cluster.rows import Rows, as_rows, centers_and_distances
from ..edits import load as load_edited
from ..edits import summary_entry
from ..errors import InputError, OutputError, ParameterError, missing_dependency
from ..features.base import Extractor
from ..io.decode import decode
from ..metrics import confusion, evaluate
from .colors import cluster_colors
from .tables import read_csv, read_summary

log = logging.getLogger(__name__)

REPORT = "report.html"
REPORT_DATA = "report-data.npz"
SWEEP_PLOTS = ("elbow.png", "criteria.png")
MAP_METHODS = ("pca", "tsne", "umap")
MAP_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}

THUMB_SIDE = 112  # longest side of a thumbnail, in pixels
MAX_PER_CLUSTER = 30  # thumbnails per cluster (nearest the centre, then the farthest)
MAX_THUMBS = 1200  # thumbnails in the whole page: bounds its size whatever the number of images and k
MAX_FAILED_LISTED = 1000
# Above this many images, the map's axes and the cluster names come from a seeded sample of this many
# (the same size as the default clustering's graph sample): every image still gets its place on the map.
SAMPLE_ROWS = 20_000


# --- suggested names -------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard index order (index 281 is 'tabby').

    The package keeps ILSVRC-2012's ``synset_words`` (WordNet id and synonyms per class); the name
    used is the first synonym.
    """
    text = resources.files("imgclust").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return [line.split(" ", 1)[1].split(",")[0].strip() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class ClusterName:
    """A suggested name for a cluster.

    Attributes:
        name: the most frequent top-1 ImageNet classes of the cluster's images, joined by " / ".
        share: fraction of the cluster's images whose top-1 class is one of those.
        classes: (class name, fraction of the cluster) of each class in the name, most frequent first.
    """

    name: str
    share: float
    classes: tuple[tuple[str, float], ...]

    def __str__(self) -> str:
        return f"{self.name} ({self.share:.0%})"


def name_clusters(logits: np.ndarray, labels: np.ndarray, k: int, class_names: Sequence[str], *,
                  max_classes: int = 3, min_share: float = 0.03) -> dict[int, ClusterName]:
    """Name each cluster after the most frequent top-1 classes among its images.

    Classes are taken, most frequent first, until together they cover half of the cluster, with at
    most ``max_classes`` and each covering at least ``min_share`` of it (the first is always taken).

    Args:
        logits: np.ndarray of shape (n_images, n_classes): class scores of each image.
        labels: np.ndarray of shape (n_images,), int: each image's cluster in [0, k).
        k: number of clusters.
        class_names: n_classes names, in the order of the logits' columns.

    Returns:
        cluster id -> :class:`ClusterName`, for every non-empty cluster.

    Example:
        >>> logits = np.eye(3)[[0, 0, 1, 2, 2, 2]]
        >>> str(name_clusters(logits, np.array([0, 0, 0, 1, 1, 1]), 2, ["a", "b", "c"])[0])
        'a (67%)'
    """
    if logits.ndim != 2 or logits.shape[1] != len(class_names) or len(logits) != len(labels):
        raise ParameterError(f"logits must have shape (n_images={len(labels)}, {len(class_names)}); got {logits.shape}.")
    top1 = np.argmax(logits, axis=1)
    names: dict[int, ClusterName] = {}
    for c in range(k):
        members = top1[labels == c]
        if len(members) == 0:
            continue
        picked: list[tuple[str, float]] = []
        for cls, count in Counter(members.tolist()).most_common(max_classes):
            share = count / len(members)
            if picked and (sum(s for _, s in picked) >= 0.5 or share < min_share):
                break
            picked.append((class_names[cls], share))
        names[c] = ClusterName(" / ".join(n for n, _ in picked), sum(s for _, s in picked), tuple(picked))
    return names


def suggest_names(extractor: Extractor, X: np.ndarray | Rows, labels: np.ndarray, k: int, *,
                  seed: int = 0) -> dict[str, Any]:
    """Suggested cluster names as summary.json entries; empty for extractors without an ImageNet head.

    Above :data:`SAMPLE_ROWS` images the shares are those of a seeded sample of that many.

    Returns:
        ``{"cluster_names": {"0": "tabby / Egyptian cat", ...}, "cluster_name_shares": {"0": 0.71, ...}}``
        or ``{}`` when ``extractor.imagenet_logits`` returns None (e.g. raw pixels).
    """
    labels = np.asarray(labels)
    idx = _sample_rows(len(X), seed)
    if idx is not None:
        labels = labels[idx]
    S = as_rows(X).take(idx if idx is not None else np.arange(len(X))) if isinstance(X, Rows) or idx is not None else X
    logits = extractor.imagenet_logits(S)
    if logits is None:
        return {}
    names = name_clusters(logits, labels, k, imagenet_class_names())
    return {"cluster_names": {str(c): n.name for c, n in names.items()},
            "cluster_name_shares": {str(c): round(n.share, 4) for c, n in names.items()}}


def _sample_rows(n: int, seed: int) -> np.ndarray | None:
    """The sorted seeded sample of :data:`SAMPLE_ROWS` of ``n`` rows, or None when ``n`` is not above it."""
    if n <= SAMPLE_ROWS:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=SAMPLE_ROWS, replace=False))


# --- data saved for the report ------------------------------------------------------------------

def map_2d(X: np.ndarray | Rows, method: str = "pca", *, seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of ``X`` for the cluster map.

    Args:
        X: np.ndarray of shape (n_images, n_features), or :class:`Rows` (``pca`` only).
        method: ``pca`` (default, fast), ``tsne`` (scikit-learn) or ``umap`` (needs umap-learn).
        seed: random seed of t-SNE / UMAP / randomized PCA.

    Returns:
        np.ndarray of shape (n_images, 2), float32.
    """
    if method not in MAP_METHODS:
        raise ParameterError(f"The map method must be one of {', '.join(MAP_METHODS)}; got '{method}'.")
    n, d = X.shape
    if method == "pca" and n >= 3 and d >= 2:
        return pca_2d(X, seed=seed)
    if isinstance(X, Rows):
        raise ParameterError(f"The {MAP_TITLES[method]} map needs every vector in memory; use the PCA map.")
    X = np.asarray(X, dtype=np.float32)
    if n < 3 or d < 2:  # nothing to project: put the points on a line
        out = np.zeros((n, 2), dtype=np.float32)
        out[:, : min(d, 2)] = X[:, : min(d, 2)]
        return out
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", perplexity=min(30.0, (n - 1) / 3), random_state=seed).fit_transform(
            X).astype(np.float32)
    try:
        import umap
    except ImportError:
        raise missing_dependency("umap-learn", purpose="the UMAP map") from None
    return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(X), dtype=np.float32)


def pca_2d(X: np.ndarray | Rows, *, seed: int = 0, n_oversample: int = 10, n_iter: int = 4) -> np.ndarray:
    """The rows of ``X`` projected on their first two principal components (randomised SVD, Halko et al.).

    The same projection as scikit-learn's ``PCA(2)`` up to the sign of each axis (the tests compare
    them), without importing scikit-learn (over a second, more than a cached rerun takes otherwise).
    ``X`` is never centred in a copy: the mean is subtracted inside each product. Above
    :data:`SAMPLE_ROWS` rows the axes are those of a seeded sample of that many; every row is then
    projected, block by block where the rows are held (:class:`Rows`).

    Returns:
        np.ndarray of shape (n_images, 2), float32; the largest loading of each axis is positive.
    """
    idx = _sample_rows(len(X), seed)
    if isinstance(X, Rows) or idx is not None:
        S = as_rows(X).take(idx if idx is not None else np.arange(len(X)))
    else:
        S = np.asarray(X, dtype=np.float32)
    mean = S.mean(axis=0, dtype=np.float64)
    width = min(2 + n_oversample, *S.shape)

    def right(B: np.ndarray) -> np.ndarray:  # (S - mean) @ B
        return S @ B.astype(np.float32) - mean @ B

    def left(B: np.ndarray) -> np.ndarray:  # (S - mean).T @ B
        return S.T @ B.astype(np.float32) - np.outer(mean, B.sum(axis=0))

    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(right(rng.standard_normal((S.shape[1], width))))
    for _ in range(n_iter):
        Q, _ = np.linalg.qr(right(np.linalg.qr(left(Q))[0]))
    _, _, Vt = np.linalg.svd(left(Q).T, full_matrices=False)
    axes = Vt[:2]
    axes *= np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])[:, None]
    if idx is None and not isinstance(X, Rows):  # S is all of X
        return _project_block(0, S, mean, axes)
    return np.concatenate(list(as_rows(X).map_blocks(_project_block, mean, axes)))


def _project_block(start: int, block: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    out = np.zeros((len(block), 2), dtype=np.float32)
    out[:, : len(axes)] = block @ axes.T.astype(np.float32) - mean @ axes.T
    return out


def save_report_data(out_dir: str | os.PathLike[str], X: np.ndarray | Rows, labels: np.ndarray, *,
                     centers: np.ndarray | None = None, map_method: str = "pca", seed: int = 0,
                     coords: np.ndarray | None = None) -> Path:
    """Write ``OUT_DIR/report-data.npz``: the 2-D map and the centres (plain arrays, no pickle).

    Args:
        X: np.ndarray of shape (n_images, n_features): the clustered vectors, in assignments.csv order
            (or :class:`Rows`, read block by block).
        labels: np.ndarray of shape (n_images,), int: their clusters.
        centers: np.ndarray of shape (k, n_features); default: each cluster's mean.
        map_method: see :func:`map_2d`.
        coords: np.ndarray of shape (n_images, 2): the map, when already made by ``map_2d(X, map_method,
            seed=seed)``.
    """
    labels = np.asarray(labels)
    if centers is None:
        centers = centers_and_distances(X, labels, int(labels.max()) + 1)[0]
    buf = io.BytesIO()
    coords = map_2d(X, map_method, seed=seed) if coords is None else coords
    np.savez_compressed(buf, coords=coords, labels=labels.astype(np.int32),
                        centers=np.asarray(centers, dtype=np.float32), map_method=np.array(map_method))
    return atomic_write_bytes(Path(out_dir) / REPORT_DATA, buf.getvalue())


def load_report_data(out_dir: Path, labels: np.ndarray) -> dict[str, np.ndarray] | None:
    """The arrays of report-data.npz, or None when missing or not from this run's assignments."""
    path = out_dir / REPORT_DATA
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("coords", "labels", "centers", "map_method")}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("Ignoring %s: %s", path, exc)
        return None
    if arrays["labels"].shape != labels.shape or not np.array_equal(arrays["labels"], labels):
        log.warning("Ignoring %s: it does not match assignments.csv.", path)
        return None
    return arrays


# --- thumbnails ----------------------------------------------------------------------------------

def thumbnail_jpeg(path: Path, side: int = THUMB_SIDE, quality: int = 70) -> bytes | None:
    """A JPEG of the image fitting in ``side`` x ``side`` pixels, or None when the file cannot be read now."""
    decoded = decode(path, draft_size=(side * 2, side * 2))
    if decoded.image is None:
        return None
    img = decoded.image
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail_data_uri(path: Path, side: int = THUMB_SIDE) -> str | None:
    """A small JPEG of the image as a ``data:`` URI, or None when the file cannot be read now."""
    data = thumbnail_jpeg(path, side)
    return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_data_uri(fig: Any) -> str:
    return png_data_uri(_png(fig))


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@lru_cache(maxsize=1)
def _figure_versions() -> str:
    from importlib.metadata import version

    from .. import __version__

    return f"{__version__}|{version('matplotlib')}"


FIGURES_KEPT = 256  # newest figure files kept in the figure cache


def cached_figure_uri(cache_dir: Path | None, make: str, *args: Any, **kwargs: Any) -> str:
    """The PNG data URI of ``plots.<make>(*args, **kwargs)``, drawn once per distinct input.

    With ``cache_dir``, the PNG is kept there under a hash of the inputs (and of the imgclust and
    matplotlib versions), so a rerun that clusters the same way neither imports matplotlib nor draws
    (about 0.8 s on a small CPU). The cache only ever holds our own files; a read-only or
    damaged cache just means the figure is drawn again.
    """
    if cache_dir is None:
        return figure_data_uri(_draw(make, args, kwargs))
    digest = hashlib.sha256(f"{_figure_versions()}|{make}".encode())
    for part in (*args, *sorted(kwargs.items())):
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode("utf-8", "backslashreplace"))
        digest.update(b"\0")
    path = cache_dir / f"{digest.hexdigest()[:32]}.png"
    try:
        data = path.read_bytes()
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            os.utime(path)  # recently used: kept longest
            return png_data_uri(data)
    except OSError:
        pass
    png = _png(_draw(make, args, kwargs))
    try:
        atomic_write_bytes(path, png)
        _prune(cache_dir)
    except (OSError, OutputError) as exc:
        log.info("Could not keep a figure in %s: %s", cache_dir, exc)
    return png_data_uri(png)


def _draw(make: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from . import plots

    return getattr(plots, make)(*args, **kwargs)


def _prune(cache_dir: Path) -> None:
    files = [p for p in cache_dir.glob("*.png") if p.is_file()]
    if len(files) > FIGURES_KEPT:
        for old in sorted(files, key=lambda p: p.stat().st_mtime)[: len(files) - FIGURES_KEPT]:
            old.unlink(missing_ok=True)


def thumbnails_per_cluster(k: int, *, max_thumbs: int = MAX_THUMBS) -> tuple[int, int]:
    """(nearest, farthest) thumbnails shown per cluster, so that the page holds at most about ``max_thumbs``."""
    per = max(3, min(MAX_PER_CLUSTER, max_thumbs // max(k, 1)))
    far = max(1, per // 5)
    return per - far, far


def pick_thumbnails(distances: np.ndarray, n_near: int, n_far: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``distances``) of the images nearest the centre and of the farthest ones.

    The farthest are only picked among images not already shown as nearest.
    """
    order = np.argsort(distances, kind="stable")
    near = order[:n_near]
    rest = order[n_near:]
    far = rest[::-1][: n_far] if len(rest) else rest
    return near, far


# --- the page ------------------------------------------------------------------------------------

@dataclass
class Thumb:
    path: str
    src: str | None
    distance: float
    label: str
    outlier: bool


@dataclass
class ClusterView:
    id: int
    size: int
    share: float
    color: str
    name: str
    name_share: float | None
    matched_label: str | None
    top_labels: list[tuple[str, int]]
    thumbs: list[Thumb]


SWEEP_CSV = "sweep.csv"


def k_choice_view(out_dir: Path, summary: dict[str, Any], k: int, figures: Path | None) -> dict[str, Any] | None:
    """What the report shows of an automatic k: the candidates with their reasons and the criteria curves
    (silhouette and inertia against k, chosen k and candidates marked), from summary.json and sweep.csv;
    also for a ``--k`` rerun that took one of those candidates. None for a run with a fixed k or without
    its sweep.csv."""
    path = out_dir / SWEEP_CSV
    if not (summary.get("k_auto") or summary.get("k_from_sweep")) or not path.is_file():
        return None
    rows = [r for r in read_csv(path) if r.get("k")]
    if not rows:
        return None

    def column(name: str) -> np.ndarray:
        return np.array([float(r.get(name) or "nan") for r in rows], dtype=float)

    candidates = [c for c in summary.get("k_candidates") or [] if isinstance(c, dict) and "k" in c]
    figure = cached_figure_uri(figures, "k_choice_figure", np.array([int(r["k"]) for r in rows]),
                               column("silhouette"), column("inertia"), chosen_k=k,
                               candidates=tuple(int(c["k"]) for c in candidates), elbow_k=summary.get("elbow_k"))
    return {"figure": figure, "candidates": [{"k": int(c["k"]), "reason": c.get("reason", ""),
                                              "chosen": int(c["k"]) == k} for c in candidates]}


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("imgclust.outputs", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x: f"{100 * float(x):.0f}%"
    env.filters["num"] = lambda x: f"{float(x):.3f}"
    return env


def write_report(out_dir: str | os.PathLike[str], *, max_thumbs: int = MAX_THUMBS,
                 figure_cache: str | os.PathLike[str] | None = None) -> Path:
    """Build ``OUT_DIR/report.html`` from the files of a finished run.

    Args:
        out_dir: the output folder of a run (summary.json, assignments.csv; report-data.npz when present).
        max_thumbs: at most about this many thumbnails in the page.
        figure_cache: a folder where drawn plots are kept by their inputs (see :func:`cached_figure_uri`);
            None draws every plot.

    Returns:
        The path of the report.

    Raises:
        InputError: OUT_DIR is not the output folder of a run.

    Example:
        >>> write_report("out")  # doctest: +SKIP
        PosixPath('out/report.html')
    """
    out_dir = Path(out_dir)
    figures = Path(figure_cache) if figure_cache is not None else None
    summary = read_summary(out_dir)
    edited = load_edited(out_dir)  # the run as corrected in review / imgclust edit (excluded images: cluster '')
    rows = edited.assignments
    ok, labels = edited.clustered()
    if not ok:
        raise InputError(f"{out_dir}/assignments.csv lists no clustered image; there is nothing to report.")
    distances = np.array([float(r["distance"] or "nan") for r in ok])
    k = max(int(summary.get("k", labels.max() + 1)), edited.k)
    colors = cluster_colors(k)
    # an empty label is an unlabelled image (e.g. at the top level with folder labels): not scored
    labels_true = ([r.get("label") or None for r in ok] if "label" in ok[0] and any(r.get("label") for r in ok)
                   else None)
    images_dir = Path(summary.get("images_dir", ""))

    evaluation = None
    mapping: dict[int, str] = {}
    if labels_true is not None:
        conf = confusion(labels_true, labels)
        mapping = conf.hungarian_mapping()
        evaluation = {
            "metrics": (summary.get("metrics") if not edited.n_edits else None) or evaluate(labels_true, labels),
            "labels_mode": summary.get("labels_mode", ""),
            "n_labels": len(conf.labels),
            "mapping": [(c, mapping.get(c, ""), int(conf.matrix[i, conf.labels.index(mapping[c])]) if c in mapping else 0,
                         int(conf.matrix[i].sum())) for i, c in enumerate(conf.clusters)],
            "heatmap": cached_figure_uri(figures, "confusion_figure", conf.matrix, conf.clusters, conf.labels, mapping),
        }

    n_near, n_far = thumbnails_per_cluster(k, max_thumbs=max_thumbs)
    names = {str(c): n for c, n in edited.names.items()}
    shares = {c: v for c, v in (summary.get("cluster_name_shares") or {}).items() if int(c) not in edited.given_names}
    picks: list[tuple[int, np.ndarray, np.ndarray]] = []
    for c in edited.clusters:
        members = np.flatnonzero(labels == c)
        near, far = pick_thumbnails(distances[members], n_near, n_far)
        picks.append((c, members[near], members[far]))
    wanted = sorted({int(i) for _, near, far in picks for i in (*near, *far)})
    with ThreadPoolExecutor(max_workers=4) as pool:
        srcs = dict(zip(wanted, pool.map(lambda i: thumbnail_data_uri(images_dir / ok[i]["path"]), wanted), strict=True))

    clusters = []
    for c, near, far in picks:
        size = int(np.sum(labels == c))
        top = (Counter(str(labels_true[i]) for i in np.flatnonzero(labels == c) if labels_true[i] is not None)
               .most_common(3) if labels_true else [])
        thumbs = [Thumb(ok[i]["path"], srcs[int(i)], float(distances[i]), ok[i].get("label", ""), outlier)
                  for idx, outlier in ((near, False), (far, True)) for i in idx]
        clusters.append(ClusterView(c, size, size / len(ok), colors[c], names.get(str(c), ""),
                                    shares.get(str(c)), mapping.get(c), top, thumbs))

    plots = {}
    data = load_report_data(out_dir, edited.state.original)  # the map of the run's images ...
    if data is not None and edited.n_edits:  # ... without the excluded ones
        data = {**data, "coords": data["coords"][edited.state.labels >= 0]}
    if data is not None:
        method = str(data["map_method"])
        plots["map"] = cached_figure_uri(figures, "cluster_map_figure", data["coords"], labels, k=k,
                                         method=MAP_TITLES.get(method, method))
        plots["centroids"] = cached_figure_uri(figures, "centroid_figure", data["centers"])
    sweep = [(name, png_data_uri((out_dir / name).read_bytes())) for name in SWEEP_PLOTS if (out_dir / name).is_file()]

    k_choice = k_choice_view(out_dir, summary, k, figures)

    failed = [r for r in rows if r.get("status") != "ok"]
    from .report_clean import clean_view

    clean = clean_view(out_dir, ok, summary, thumbnail_data_uri)
    html = _environment().get_template("report.html.j2").render(
        s=summary, k=k, n_ok=len(ok), clusters=clusters, evaluation=evaluation, plots=plots, sweep=sweep,
        k_choice=k_choice,
        failed=failed[:MAX_FAILED_LISTED], n_failed=len(failed), n_near=n_near, n_far=n_far,
        map_title=MAP_TITLES.get(str(data["map_method"]), "") if data is not None else "", clean=clean,
        edits=summary_entry(edited) if edited.n_edits else None,
    )
    return atomic_write_text(out_dir / REPORT, html)
