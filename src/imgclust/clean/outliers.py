"""Outlier scores from each image's nearest neighbours (no n x n matrix).

The score of an image is the cosine distance to its k-th nearest neighbour (k = 5 by default):
an image unlike any other has no close neighbour at all. Using the k-th rather than the first
neighbour keeps a pair (or a small group) of odd images, each close to the other, an outlier.
An image is flagged ``outlier`` when its score is far in the upper tail of the folder's own
scores: above their median plus ``n_mad`` robust standard deviations (1.4826 x the median
absolute deviation). The rule adapts to how spread out the folder is, and a folder with no odd
image gets none (on 910 photos of bench/clean.py without planted outliers: none; see docs/clean.md). In a very tight folder
(near-identical pictures) a score must also exceed the median by :data:`MIN_GAP` (cosine
distance), so tiny differences are not called outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

DEFAULT_K = 5
DEFAULT_N_MAD = 3.0
MIN_GAP = 0.05


@dataclass(frozen=True)
class Outliers:
    """Outlier scores of n images.

    Attributes:
        score: np.ndarray of shape (n,), float32: cosine distance to the k-th neighbour (0 = a close copy exists).
        outlier: np.ndarray of shape (n,), bool: score above ``cutoff``.
        cutoff: the score above which an image is an outlier
            (``median + max(n_mad * 1.4826 * MAD, MIN_GAP)``); k: the neighbour used.
    """

    score: np.ndarray
    outlier: np.ndarray
    cutoff: float
    k: int

    @property
    def n_outliers(self) -> int:
        return int(self.outlier.sum())


def outlier_scores(sims: np.ndarray, *, k: int = DEFAULT_K, n_mad: float = DEFAULT_N_MAD) -> Outliers:
    """Outlier scores from kNN cosines.

    Args:
        sims: np.ndarray of shape (n_images, m), the cosines to each image's m nearest neighbours,
            most similar first (:func:`imgclust.neighbors.knn`).
        k: which neighbour's distance is the score (clipped to m).
        n_mad: how many robust standard deviations above the median an outlier's score lies.

    Example:
        >>> o = outlier_scores(sims)  # doctest: +SKIP
        >>> o.score.shape, o.n_outliers  # doctest: +SKIP
        ((1000,), 7)
    """
    if k < 1:
        raise ParameterError(f"The outlier neighbour k must be at least 1; got {k}.")
    if n_mad <= 0:
        raise ParameterError(f"The outlier cut-off n_mad must be positive; got {n_mad}.")
    sims = np.asarray(sims, dtype=np.float32)
    n = len(sims)
    if n == 0 or sims.shape[1] == 0:
        return Outliers(np.zeros(n, np.float32), np.zeros(n, bool), float("inf"), 0)
    kk = min(k, sims.shape[1])
    score = np.clip(1.0 - sims[:, kk - 1], 0.0, 2.0).astype(np.float32)
    med = float(np.median(score))
    mad = float(np.median(np.abs(score - med))) * 1.4826
    cutoff = med + max(n_mad * mad, MIN_GAP)
    return Outliers(score, score > cutoff, cutoff, kk)
