"""Near-duplicate groups from each image's nearest neighbours (no n x n matrix).

Two images are near-duplicates when the similarity of the pair is at least a threshold; groups
are the connected components of those pairs (union-find over the kNN lists, so only each image's
nearest neighbours are ever compared).

``method="embedding"`` (default): the network first: a pair is a candidate when the cosine ``cos``
of the two images' vectors is at least :data:`MIN_COSINE` (survives resizing, re-encoding, small
crops and brightness changes), among the :data:`PIXEL_CHECKS` nearest neighbours of one of them. The network also finds two photos of the same kind of scene alike
(two close-ups of golf balls), so each candidate pair is then compared pixel by pixel: ``pix`` is
the correlation of the edges (grey-level gradients) of the two images' 16x16 thumbnails (taken
while decoding), at the best of a few crops of either one (each side cut by 0-15%, the cut taken
from one side, the other or both): a copy's edges line up, another photo's do not. The pair's
similarity is ``(cos + pix) / 2``. Where a thumbnail is missing the similarity is the cosine alone.

``method="phash"``: the 64-bit perceptual hashes taken while decoding (pixel-level copies only;
resizing, re-encoding and brightness survive, crops mostly do not); a Hamming distance of d bits
is a cosine of 1 - 2d/64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

METHODS = ("embedding", "phash", "off")  # and "auto" in a run's settings (see imgclust.clean.stage)
# Chosen on bench/clean.py's planted copies (docs/clean.md), EfficientNet-Lite0 and Lite2 vectors.
DEFAULT_THRESHOLD = {"embedding": 0.75, "phash": 1 - 2 * 8 / 64}
#: Pairs whose vectors' cosine is below this are never near-duplicates (nor compared pixel by pixel).
MIN_COSINE = 0.70
#: Each image is compared pixel by pixel with at most this many of its nearest neighbours (those with a
#: cosine of at least MIN_COSINE, most similar first): the cost stays linear in the images however
#: alike a folder's photos are. A copy is the nearest neighbour of its original or the other way round
#: in 1,397 of the 1,400 planted pairs of bench/clean.py (seeds 0-6, Lite0 and Lite2 int8).
PIXEL_CHECKS = 3
DEFAULT_NEIGHBOURS = 10
# The crops tried per side of a thumbnail: (fraction cut, fraction cut before the start).
_CUTS = (0.0, 0.05, 0.10, 0.15)
_CROPS = [(0.0, 0.0)] + [(f, o * f) for f in _CUTS[1:] for o in (0.0, 0.5, 1.0)]
_PIXEL_CHUNK = 256


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
                         thumbs: np.ndarray | None = None, known: np.ndarray | None = None,
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
        thumbs: np.ndarray of shape (n_images, 16, 16): grey thumbnails, float (NaN where unknown:
            :func:`imgclust.clean.quality.thumbnails`) or uint8 with ``known`` (``Measurements.thumbs``);
            with them (``embedding``), a pair's similarity is ``(cos + pix) / 2`` (module docstring).
        known: np.ndarray of shape (n_images,), bool: which thumbnails are known (default: those without NaN).

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
    if thumbs is not None and method == "embedding":
        sims = pair_similarity(sims, idx, thumbs, known=known)
    nd = groups_from_pairs(n, sims, idx, t)
    return NearDuplicates(nd.group, nd.similarity, method, t)


def pair_similarity(sims: np.ndarray, idx: np.ndarray, thumbs: np.ndarray, *, known: np.ndarray | None = None,
                    min_cosine: float = MIN_COSINE, checks: int = PIXEL_CHECKS) -> np.ndarray:
    """``(cos + pix) / 2`` for the first ``checks`` kNN pairs of each row whose cosine is at least
    ``min_cosine`` (``-inf`` for the others); the cosine alone where a thumbnail is missing.

    Args:
        sims, idx: kNN lists, shape (n, m), most similar first; thumbs: np.ndarray of shape (n, side, side),
            grey levels (NaN where unknown, or see ``known``).
        known: np.ndarray of shape (n,), bool: which thumbnails are known (default: those without NaN).

    Each unordered pair is compared once, however many of the two lists it is in.
    """
    sims = np.asarray(sims, dtype=np.float32)
    n, m = sims.shape
    T = np.asarray(thumbs)  # only the thumbnails of compared pairs are turned into floats (pixel_similarity)
    measured: np.ndarray = (np.asarray(~np.isnan(T.reshape(n, -1).astype(np.float32, copy=False)).any(axis=1))
                            if known is None else np.asarray(known, dtype=bool))
    safe = np.clip(idx, 0, None)
    rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
    candidate = (idx >= 0) & (sims >= min_cosine) & (np.arange(m) < checks)[None, :]
    both = candidate & measured[:, None] & measured[safe]
    out = np.where(candidate, sims, -np.inf).astype(np.float32)
    a, b = np.minimum(rows, safe)[both], np.maximum(rows, safe)[both]
    if len(a):
        pairs, inverse = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
        pix = pixel_similarity(T[pairs[:, 0]], T[pairs[:, 1]])
        out[both] = (sims[both] + pix[inverse.ravel()]) / 2
    return out


def _crop_matrices(side: int) -> tuple[np.ndarray, np.ndarray]:
    """The crops of :data:`_CROPS` as linear maps of one axis of a thumbnail, stacked: (starts, steps),
    each of shape (len(_CROPS) * (side - 1), side). ``starts @ T`` resamples the cropped span back
    to ``side`` cells and keeps the first ``side - 1``; ``steps @ T`` gives the differences between
    neighbouring resampled cells (the edges along that axis)."""
    maps = []
    for cut, start in _CROPS:
        x = (start + (np.arange(side) + 0.5) / side * (1 - cut)) * side - 0.5
        i0 = np.clip(np.floor(x).astype(np.int64), 0, side - 1)
        w = np.clip(x - np.floor(x), 0, 1)
        M = np.zeros((side, side), np.float32)
        np.add.at(M, (np.arange(side), i0), 1 - w)
        np.add.at(M, (np.arange(side), np.minimum(i0 + 1, side - 1)), w)
        maps.append(M)
    W = np.stack(maps)
    return W[:, :-1, :].reshape(-1, side), (W[:, 1:, :] - W[:, :-1, :]).reshape(-1, side)


def _unit_edges(T: np.ndarray) -> np.ndarray:
    """The horizontal and vertical grey-level differences of thumbnails (n, side, side), flattened
    (horizontal first), mean-centred and scaled to unit length (so an inner product is a correlation)."""
    gx = T[..., :-1, 1:] - T[..., :-1, :-1]
    gy = T[..., 1:, :-1] - T[..., :-1, :-1]
    G = np.concatenate([gx.reshape(len(T), -1), gy.reshape(len(T), -1)], axis=-1)
    G = G - G.mean(axis=-1, keepdims=True)
    return G / np.maximum(np.linalg.norm(G, axis=-1, keepdims=True), 1e-3)


def pixel_similarity(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The correlation of the edges of two thumbnails at the best crop of either one (pairs of rows).

    Each of ``A[i]`` and ``B[i]`` is in turn cropped by every crop of :data:`_CROPS` on each axis
    (each side cut by 0, 5, 10 or 15%, from the start, the end or both: 100 crops), resampled back to
    the full size (linear interpolation) and compared with the other, uncropped; the best
    correlation counts. Resampling and differences are linear, so the edges of all 100 crops of a
    thumbnail come from two matrix products.

    Args:
        A, B: np.ndarray of shape (n_pairs, side, side), grey thumbnails.

    Returns:
        np.ndarray of shape (n_pairs,), float32, in [-1, 1]: about 0.7-1 for a copy (resized,
        re-encoded, cropped by up to 15%, brightened), lower for another photo.
    """
    A = np.asarray(A, dtype=np.float32)
    B = np.asarray(B, dtype=np.float32)
    side = A.shape[-1]
    e = side - 1
    starts, steps = _crop_matrices(side)
    c = len(starts) // e
    sum_starts, sum_steps = starts.reshape(c, e, side).sum(axis=1), steps.reshape(c, e, side).sum(axis=1)
    best = np.full(len(A), -1.0, dtype=np.float32)
    for lo in range(0, len(A), _PIXEL_CHUNK):
        a, b = A[lo:lo + _PIXEL_CHUNK], B[lo:lo + _PIXEL_CHUNK]
        p = len(a)
        for moving, fixed in ((a, b), (b, a)):
            target = _unit_edges(fixed)
            tx, ty = target[:, :e * e].reshape(p, e, e), target[:, e * e:].reshape(p, e, e)
            # Edges of every (row crop, column crop) of ``moving``: (p, crops, e, crops, e).
            gx = (starts @ moving @ steps.T).reshape(p, c, e, c, e)
            gy = (steps @ moving @ starts.T).reshape(p, c, e, c, e)
            # The target is centred, so the crop's mean does not change the inner product; it does the norm.
            dot = np.einsum("pyaxb,pab->pyx", gx, tx) + np.einsum("pyaxb,pab->pyx", gy, ty)
            # Sums of the crops' edges, from the summed maps (linear too): (p, crops, crops).
            total = sum_starts @ moving @ sum_steps.T + sum_steps @ moving @ sum_starts.T
            squares = np.einsum("pyaxb,pyaxb->pyx", gx, gx) + np.einsum("pyaxb,pyaxb->pyx", gy, gy)
            norm = np.sqrt(np.maximum(squares - total * total / (2 * e * e), 0.0))
            corr = dot / np.maximum(norm, 1e-3)
            part = best[lo:lo + p]
            np.maximum(part, corr.reshape(p, -1).max(axis=1), out=part)
    return best
