"""Plots as matplotlib figures. Functions return figures and never show them.

Figures are built with :class:`matplotlib.figure.Figure` directly, not with ``pyplot``: no global
state, no GUI backend, safe in threads and on machines without a display (PNG output uses Agg).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure


def cluster_colors(k: int) -> list[str]:
    """One distinct colour per cluster, as '#rrggbb' strings (tab10, tab20, then evenly spaced hues)."""
    from matplotlib import colormaps

    if k <= 10:
        cmap, n = colormaps["tab10"], 10
    elif k <= 20:
        cmap, n = colormaps["tab20"], 20
    else:
        cmap, n = colormaps["hsv"], k + 1
    return [to_hex(cmap(i / n if n > 20 else i)) for i in range(k)]


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
