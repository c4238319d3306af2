"""Near-duplicate groups from each image's nearest neighbours (no n x n matrix).

Two images are near-duplicates when the similarity of the pair is at least a threshold; groups
are the connected components of those pairs (union-find over the kNN lists, so only each image's
nearest neighbours are ever compared).

``method="embedding"`` (default): the similarity of a pair is
``(cos + w * corr) / (1 + w)``, where ``cos`` is the cosine of the two images' vectors (survives
resizing, re-encoding, small crops and brightness changes) and ``corr`` the correlation of their
8x8 grey layouts (taken while decoding; it tells a copy of a photo from another photo of the same
kind of scene, which a network finds alike too), ``w`` = :data:`LAYOUT_WEIGHT`. Without layouts
the similarity is the cosine alone.

``method="phash"``: the 64-bit perceptual hashes taken while decoding (pixel-level copies only;
resizing, re-encoding and brightness survive, crops mostly do not); a Hamming distance of d bits
is a cosine of 1 - 2d/64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

METHODS = ("embedding", "phash", "off")  # and "auto" in a run's settings (see imgclust.clean.stage)
# Chosen on bench/clean.py's planted copies (docs/clean.md), EfficientNet-Lite0 vectors.
DEFAULT_THRESHOLD = {"embedding": 0.80, "phash": 1 - 2 * 8 / 64}
LAYOUT_WEIGHT = 0.5
DEFAULT_NEIGHBOURS = 10


@dataclass(frozen=True)
class NearDuplicates:
    """Near-duplicate groups among n images.

    Attributes:
        group: np.ndarray of shape (n,), int64: the group of each image, -1 for an image with no
            near-duplicate. Groups are numbered 0, 1, ... in the order of their first member.
        similarity: np.ndarray of shape (n,), float32: each grouped image's highest cosine to another
            member of its group (NaN outside groups).
        method: ``embedding`` or ``phash``; threshold: the cosine used.
    """

    group: np.ndarray
    similarity: np.ndarray
    method: str
    threshold: float

    @property
    def groups(self) -> list[list[int]]:
        """Members (row indices) of each group, in group order."""
        order = np.argsort(self.group, kind="stable")
        g = self.group[order]
        keep = g >= 0
        order, g = order[keep], g[keep]
        cuts = np.flatnonzero(np.diff(g)) + 1
        return [part.tolist() for part in np.split(order, cuts)] if len(order) else []

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) and self.group.max() >= 0 else 0

    @property
    def n_extra(self) -> int:
        """Images that a one-per-group selection would leave out (group sizes minus one, summed)."""
        return int((self.group >= 0).sum()) - self.n_groups


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def groups_from_pairs(n: int, sims: np.ndarray, idx: np.ndarray, threshold: float) -> NearDuplicates:
    """Connected components of the kNN pairs whose cosine is at least ``threshold``.

    Args:
        sims, idx: the kNN lists, shape (n, m): cosines (most similar first) and neighbour rows.
    """
    parent = np.arange(n)
    best = np.full(n, np.nan, dtype=np.float32)
    rows, cols = np.nonzero((sims >= threshold) & (idx >= 0))
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        a, b = _find(parent, i), _find(parent, int(idx[i, j]))
        if a != b:
            parent[max(a, b)] = min(a, b)
        s = float(sims[i, j])
        for r in (i, int(idx[i, j])):
            if not best[r] >= s:
                best[r] = s
    roots = np.array([_find(parent, i) for i in range(n)], dtype=np.int64)
    sizes = np.bincount(roots, minlength=n)
    group = np.full(n, -1, dtype=np.int64)
    numbering: dict[int, int] = {}
    for i in range(n):
        if sizes[roots[i]] > 1:
            group[i] = numbering.setdefault(int(roots[i]), len(numbering))
    return NearDuplicates(group, best, "", threshold)


def validate(method: str, threshold: float | None) -> float:
    """The threshold to use for ``method``, or a ParameterError."""
    if method not in METHODS:
        raise ParameterError(f"Near-duplicate method must be one of {', '.join(METHODS)}; got '{method}'.")
    if method == "off":
        return float("nan")
    t = DEFAULT_THRESHOLD[method] if threshold is None else float(threshold)
    if not -1.0 < t <= 1.0:
        raise ParameterError(f"A near-duplicate threshold is a cosine in (-1, 1]; got {threshold}.")
    return t


def find_near_duplicates(X: np.ndarray, *, method: str = "embedding", threshold: float | None = None,
                         n_neighbors: int = DEFAULT_NEIGHBOURS, knn_result: tuple[np.ndarray, np.ndarray] | None = None,
                         layout: np.ndarray | None = None, layout_weight: float = LAYOUT_WEIGHT,
                         seed: int = 0) -> NearDuplicates:
    """Group near-duplicate rows of ``X``.

    Args:
        X: np.ndarray of shape (n_images, dim): the run's vectors (``embedding``) or
            :func:`imgclust.clean.quality.hash_bits` rows (``phash``).
        method: ``embedding`` or ``phash`` (only names the result and picks the default threshold).
        threshold: cosine at or above which two images are near-duplicates; default
            :data:`DEFAULT_THRESHOLD` of the method.
        n_neighbors: neighbours looked at per image (a group larger than this may still be
            found through chains; a pair is never missed when each is among the other's neighbours).
        knn_result: (sims, idx) already computed for ``X`` (shared with other checks).
        layout: np.ndarray of shape (n_images, 64): :func:`imgclust.clean.quality.layout_rows` (a zero
            row where unknown); with it, a pair's similarity mixes in the layouts' correlation.
        layout_weight: the weight ``w`` of the layout correlation.

    Example:
        >>> nd = find_near_duplicates(X)  # doctest: +SKIP
        >>> nd.groups  # doctest: +SKIP
        [[3, 17], [40, 41, 96]]
    """
    t = validate(method, threshold)
    n = len(X)
    if method == "off" or n < 2:
        return NearDuplicates(np.full(n, -1, np.int64), np.full(n, np.nan, np.float32), method, t)
    if knn_result is None:
        from ..neighbors import knn, unit_rows

        knn_result = knn(unit_rows(X), min(n_neighbors, n - 1), seed=seed)
    sims, idx = knn_result
    if layout is not None:
        sims = pair_similarity(sims, idx, layout, layout_weight)
    nd = groups_from_pairs(n, sims, idx, t)
    return NearDuplicates(nd.group, nd.similarity, method, t)


def pair_similarity(sims: np.ndarray, idx: np.ndarray, layout: np.ndarray, weight: float = LAYOUT_WEIGHT) -> np.ndarray:
    """``(cos + w * corr) / (1 + w)`` for every kNN pair; the cosine alone where a layout is missing.

    Args:
        sims, idx: kNN lists, shape (n, m); layout: unit rows of shape (n, 64) (zero where unknown).
    """
    L = np.asarray(layout, dtype=np.float32)
    safe = np.clip(idx, 0, None)
    corr = np.einsum("nd,nmd->nm", L, L[safe])
    has = (np.abs(L).sum(axis=1) > 0)
    both = has[:, None] & has[safe] & (idx >= 0)
    mixed = (sims + weight * corr) / (1 + weight)
    return np.where(both, mixed, sims).astype(np.float32)
