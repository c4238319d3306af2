"""Plots as matplotlib figures. Functions return figures and never show them.

Figures are built with :class:`matplotlib.figure.Figure` directly, not with ``pyplot``: no global
state, no GUI backend, safe in threads and on machines without a display (PNG output uses Agg).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._fs import atomic_write_bytes
from .colors import cluster_colors


def cluster_map_figure(coords: np.ndarray, labels: np.ndarray, *, k: int, method: str = "PCA") -> Figure:
    """A 2-D map of every image, coloured by cluster.

    Args:
        coords: np.ndarray of shape (n_images, 2): the images' 2-D coordinates (e.g. from PCA).
        labels: np.ndarray of shape (n_images,), int: each image's cluster in [0, k).
        k: number of clusters.
        method: how the coordinates were made, for the axis labels.
    """
    colors = cluster_colors(k)
    fig = Figure(figsize=(7.5, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    size = float(np.clip(8000 / max(len(coords), 1), 5, 40))
    for c in range(k):
        pts = coords[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=size, color=colors[c], alpha=0.7, linewidths=0, label=str(c))
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_title(f"All {len(coords)} images, coloured by cluster")
    if k <= 30:
        ax.legend(title="cluster", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=max(1.0, 20 / size) ** 0.5,
                  fontsize="small", ncols=1 if k <= 15 else 2)
    return fig


def centroid_figure(centers: np.ndarray) -> Figure:
    """The original method's centroid plot: each centre's value against feature index, one colour per cluster.

    Args:
        centers: np.ndarray of shape (k, n_features).
    """
    k, dim = centers.shape
    colors = cluster_colors(k)
    fig = Figure(figsize=(9, 4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(dim)
    for c in range(k):
        ax.plot(x, centers[c], color=colors[c], linewidth=0.7, alpha=0.8, label=str(c))
    ax.set_xlabel("feature index")
    ax.set_ylabel("centre value")
    ax.set_xlim(0, max(dim - 1, 1))
    ax.set_title(f"Cluster centres ({k} clusters, {dim} features)")
    if k <= 30:
        ax.legend(title="cluster", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
                  ncols=1 if k <= 15 else 2)
    return fig


def confusion_figure(matrix: np.ndarray, clusters: Sequence[int], labels: Sequence[str],
                     matched: dict[int, str] | None = None) -> Figure:
    """Heatmap of a clusters x labels count table; cells of the Hungarian matching are outlined.

    Args:
        matrix: np.ndarray of shape (n_clusters, n_labels), int: images of each cluster with each label.
        clusters: cluster id of each row.
        labels: label name of each column.
        matched: cluster id -> its matched label (outlined in the plot).
    """
    from matplotlib.patches import Rectangle

    n_rows, n_cols = matrix.shape
    fig = Figure(figsize=(min(max(6.0, 3 + 0.6 * n_cols), 16), min(max(3.0, 2 + 0.4 * n_rows), 14)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues", aspect="auto")
    fig.colorbar(im, ax=ax, label="images")
    ax.set_xticks(range(n_cols), [str(lab) for lab in labels], rotation=45, ha="right")
    ax.set_yticks(range(n_rows), [str(c) for c in clusters])
    ax.set_xlabel("label")
    ax.set_ylabel("cluster")
    if n_rows * n_cols <= 400:
        top = matrix.max() if matrix.size else 0
        for i in range(n_rows):
            for j in range(n_cols):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize="small",
                        color="white" if matrix[i, j] > top / 2 else "black")
    col = {lab: j for j, lab in enumerate(labels)}
    for i, c in enumerate(clusters):
        if matched and c in matched and matched[c] in col:
            ax.add_patch(Rectangle((col[matched[c]] - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=2))
    ax.set_title("Clusters x labels (outlined: Hungarian matching)")
    return fig


CRITERIA_TITLES = {
    "inertia": "inertia (lower = tighter)",
    "silhouette": "silhouette (higher = better)",
    "calinski_harabasz": "Calinski-Harabasz (higher = better)",
    "davies_bouldin": "Davies-Bouldin (lower = better)",
    "accuracy_majority": "accuracy, many-to-one (majority; rises with k)",
    "accuracy_hungarian": "accuracy, one-to-one (Hungarian)",
    "nmi": "NMI",
    "ari": "ARI",
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def elbow_figure(ks: Sequence[int], inertia: Sequence[float] | np.ndarray, *, chosen_k: int | None = None,
                 elbow_k: int | None = None, title: str = "Inertia against k") -> Figure:
    """Inertia (sum of squared distances to the centres) against k, with the chosen k and the elbow marked.

    Args:
        ks: the k values, shape (n_ks,).
        inertia: the inertia at each k, shape (n_ks,).
        chosen_k: the k that was chosen (a red marker), or None.
        elbow_k: the elbow of the curve (kneedle; a dashed line), or None.
        title: the figure's title.

    Example:
        >>> fig = elbow_figure([2, 3, 4], [10.0, 5.0, 4.0], chosen_k=3)
        >>> fig.axes[0].get_xlabel()
        'k (number of clusters)'
    """
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    x, y = np.asarray(ks), np.asarray(inertia, dtype=float)
    ax.plot(x, y, "o-", color="tab:blue", markersize=4, label="inertia")
    if elbow_k is not None:
        ax.axvline(elbow_k, color="gray", linestyle="--", linewidth=1, label=f"elbow (kneedle): k={elbow_k}")
    if chosen_k is not None and chosen_k in set(x.tolist()):
        ax.plot([chosen_k], [y[list(x).index(chosen_k)]], "o", color="tab:red", markersize=10,
                label=f"chosen: k={chosen_k}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k (number of clusters)")
    ax.set_ylabel("inertia (sum of squared distances)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def criteria_figure(ks: Sequence[int], criteria: Mapping[str, Sequence[float] | np.ndarray], *,
                    chosen_k: int | None = None, title: str = "Criteria against k") -> Figure:
    """One small panel per criterion against k (NaN values are left out), the chosen k marked in each.

    Args:
        ks: the k values, shape (n_ks,).
        criteria: name -> values at each k, shape (n_ks,); names from :data:`CRITERIA_TITLES` get a
            title that says which way is better.
        chosen_k: the k that was chosen (a dotted red line), or None.
        title: the figure's title.
    """
    names = [n for n, v in criteria.items() if np.isfinite(np.asarray(v, dtype=float)).any()]
    cols = 2 if len(names) > 1 else 1
    rows = max(1, -(-len(names) // cols))
    fig = _figure(5.0 * cols, 2.8 * rows)
    x = np.asarray(ks)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names, strict=False):
        y = np.asarray(criteria[name], dtype=float)
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], "o-", markersize=3)
        if chosen_k is not None:
            ax.axvline(chosen_k, color="tab:red", linestyle=":", linewidth=1.2)
        ax.set_title(CRITERIA_TITLES.get(name, name), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("k")
        ax.set_xlim(x.min() - 0.5, x.max() + 0.5)
        ax.grid(alpha=0.3)
    fig.suptitle(title + (f" (chosen k={chosen_k}, dotted)" if chosen_k is not None else ""))
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file + rename). Returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def k_choice_figure(ks: Sequence[int], silhouette: Sequence[float] | np.ndarray,
                    inertia: Sequence[float] | np.ndarray, *, chosen_k: int,
                    candidates: Sequence[int] = (), elbow_k: int | None = None,
                    title: str = "How k was chosen") -> Figure:
    """How an automatic k was chosen: the silhouette and the inertia against k, the chosen k and the
    other candidates marked (what a default run's report shows).

    Args:
        ks: the k values of the sweep, shape (n_ks,).
        silhouette: silhouette at each k, shape (n_ks,) (NaN where undefined).
        inertia: inertia at each k, shape (n_ks,).
        chosen_k: the chosen k (red).
        candidates: other k worth a look (orange), in order of preference.
        elbow_k: the elbow of the inertia curve (kneedle; a dashed line), or None.
        title: the figure's title.

    Example:
        >>> fig = k_choice_figure([2, 3, 4], [0.1, 0.3, 0.2], [9.0, 4.0, 3.0], chosen_k=3, candidates=[2])
        >>> [ax.get_ylabel() for ax in fig.axes]
        ['silhouette (higher = groups stand apart)', 'inertia (lower = tighter)']
    """
    fig = _figure(7.0, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = np.asarray(ks)
    panels = ((top, np.asarray(silhouette, dtype=float), "silhouette (higher = groups stand apart)"),
              (bottom, np.asarray(inertia, dtype=float), "inertia (lower = tighter)"))
    others = [c for c in candidates if c != chosen_k and c in set(x.tolist())]
    for ax, y, name in panels:
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], "o-", color="tab:blue", markersize=3)
        for i, c in enumerate(others):
            j = list(x).index(c)
            if np.isfinite(y[j]):
                ax.plot([c], [y[j]], "s", color="tab:orange", markersize=8,
                        label="other candidates" if i == 0 else None)
                ax.annotate(f"k={c}", (c, y[j]), textcoords="offset points", xytext=(0, 8), ha="center",
                            fontsize=8, color="tab:orange")
        if chosen_k in set(x.tolist()) and np.isfinite(y[list(x).index(chosen_k)]):
            yc = y[list(x).index(chosen_k)]
            ax.plot([chosen_k], [yc], "o", color="tab:red", markersize=10, label=f"chosen: k={chosen_k}")
        if elbow_k is not None and ax is bottom:
            ax.axvline(elbow_k, color="gray", linestyle="--", linewidth=1, label=f"elbow: k={elbow_k}")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("k (number of clusters)")
    fig.suptitle(title)
    return fig
