"""Plots, as independent functions that return matplotlib figures (never shown, never pyplot state).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, so they work without a
display and in threads; :func:`save_figure` writes one to PNG atomically.
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


def elbow_figure(ks: Sequence[int], inertia: Sequence[float], *, chosen_k: int | None = None,
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


def criteria_figure(ks: Sequence[int], criteria: Mapping[str, Sequence[float]], *,
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
