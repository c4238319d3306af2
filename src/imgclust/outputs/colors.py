"""One colour per cluster, shared by the report's pages and its plots (no matplotlib import needed)."""

from __future__ import annotations

import colorsys

# matplotlib's tab10 and tab20 palettes.
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
         "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"]


def cluster_colors(k: int) -> list[str]:
    """One distinct colour per cluster, as '#rrggbb' strings (tab10, tab20, then evenly spaced hues)."""
    if k <= 10:
        return TAB10[:k]
    if k <= 20:
        return TAB20[:k]
    rgb = (colorsys.hsv_to_rgb(i / k, 0.85, 0.9) for i in range(k))
    return ["#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in col)) for col in rgb]
