"""Scores of a clustering against known labels. Arrays only.

- ``accuracy_hungarian``: one-to-one accuracy. Clusters and labels are matched by the Hungarian
  algorithm (each cluster to at most one label and vice versa) to maximise the number of agreeing
  samples. With k != number of labels, unmatched clusters count as wrong.
- ``accuracy_majority``: many-to-one accuracy, as in the original method. Each cluster takes its
  most common label. It rises with k by construction (k = n gives 1.0).
- ``nmi``, ``ari``: normalised mutual information (arithmetic mean) and adjusted Rand index, the same
  numbers as scikit-learn's, computed from the confusion table (importing scikit-learn costs a cached
  rerun more than a second; the tests compare the two).

A sample whose true label is ``None`` is unlabelled: it is left out of every score (e.g. an image at the
top level of the images folder when labels come from subfolders).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ParameterError


@dataclass(frozen=True)
class Confusion:
    """A clusters x labels count table.

    Attributes:
        matrix: np.ndarray of shape (n_clusters, n_labels), int64: samples of each cluster with each label.
        clusters: cluster ids, one per row.
        labels: label names, one per column.
    """

    matrix: np.ndarray
    clusters: list[int]
    labels: list[str]

    def hungarian_mapping(self) -> dict[int, str]:
        """cluster id -> label, the one-to-one matching that maximises agreement."""
        rows, cols = linear_sum_assignment(-self.matrix)
        return {self.clusters[r]: self.labels[c] for r, c in zip(rows, cols, strict=True)}

    def majority_mapping(self) -> dict[int, str]:
        """cluster id -> its most common label (ties: the first in sorted label order)."""
        return {c: self.labels[int(np.argmax(row))] for c, row in zip(self.clusters, self.matrix, strict=True)}

    def accuracy_hungarian(self) -> float:
        """One-to-one accuracy: the share of samples that agree under :meth:`hungarian_mapping`."""
        rows, cols = linear_sum_assignment(-self.matrix)
        return float(self.matrix[rows, cols].sum() / self.matrix.sum())

    def accuracy_majority(self) -> float:
        """Many-to-one accuracy: the share of samples that carry their cluster's most common label."""
        return float(self.matrix.max(axis=1).sum() / self.matrix.sum())

    def nmi(self) -> float:
        """Normalised mutual information (arithmetic-mean normalisation, scikit-learn's default)."""
        m = self.matrix
        n = m.sum()
        if m.shape[0] == m.shape[1] == 1:
            return 1.0  # neither labelling splits the data: a perfect match
        a, b = m.sum(axis=1), m.sum(axis=0)
        i, j = np.nonzero(m)
        nij = m[i, j].astype(np.float64)
        mi = max(0.0, float(np.sum(nij / n * (np.log(nij) + np.log(n) - np.log(a[i]) - np.log(b[j])))))
        if mi == 0.0:
            return 0.0
        return mi / ((_entropy(a) + _entropy(b)) / 2.0)

    def ari(self) -> float:
        """Adjusted Rand index, from the pair counts (exact integers)."""
        m = self.matrix.astype(np.int64)
        n = int(m.sum())
        sum_squares = int((m ** 2).sum())
        a, b = m.sum(axis=1), m.sum(axis=0)
        tp = sum_squares - n
        fp = int((a ** 2).sum()) - sum_squares  # pairs together in the clustering, apart in the labels
        fn = int((b ** 2).sum()) - sum_squares
        tn = n * n - tp - fp - fn - n
        if fn == 0 and fp == 0:
            return 1.0
        return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64) / counts.sum()
    return float(-(p * np.log(p)).sum())


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The assignment of rows to columns with the least total cost (as :func:`scipy.optimize.linear_sum_assignment`).

    Shortest augmenting paths with potentials (Hungarian / Jonker-Volgenant), O(n^2 m) for an n x m
    matrix with n <= m. Written out because importing scipy.optimize costs about 0.3 s, more than
    everything else a cached rerun does; the tests check it against SciPy.

    Returns:
        (row indices ascending, their column indices).
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ParameterError(f"The cost matrix must be 2-D; got shape {cost.shape}.")
    if cost.shape[0] > cost.shape[1]:
        cols, rows = linear_sum_assignment(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: the row (1-based) holding column j; 0 = free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used
            free[0] = False
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free[1:] & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv, np.inf)
            j1 = int(np.argmin(candidates))
            delta = candidates[j1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.flatnonzero(owner[1:])
    rows = owner[1:][cols] - 1
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def _check(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(labels_true)
    p = np.asarray(labels_pred)
    if t.ndim != 1 or p.ndim != 1 or len(t) != len(p):
        raise ParameterError(f"labels_true and labels_pred must be 1-D and of equal length; got {t.shape} and {p.shape}.")
    if t.dtype == object:  # unlabelled samples (None) are not scored
        labelled = np.array([x is not None for x in t], dtype=bool)
        if not labelled.all():
            t, p = t[labelled].astype(str), p[labelled]
    if len(t) == 0:
        raise ParameterError("Cannot score an empty clustering.")
    return t, p


def confusion(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> Confusion:
    """The clusters x labels table of counts."""
    t, p = _check(labels_true, labels_pred)
    label_names, t_idx = np.unique(t.astype(str), return_inverse=True)
    cluster_ids, p_idx = np.unique(p, return_inverse=True)
    m = np.zeros((len(cluster_ids), len(label_names)), dtype=np.int64)
    np.add.at(m, (p_idx, t_idx), 1)
    return Confusion(m, [int(c) for c in cluster_ids], [str(x) for x in label_names])


def accuracy_hungarian(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> float:
    """One-to-one accuracy in [0, 1] (Hungarian matching of clusters to labels).

    Example:
        >>> accuracy_hungarian(["a", "a", "b", "b"], [1, 1, 0, 0])
        1.0
    """
    return confusion(labels_true, labels_pred).accuracy_hungarian()


def accuracy_majority(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> float:
    """Many-to-one accuracy in [0, 1]: each cluster takes its most common label.

    Example:
        >>> accuracy_majority(["a", "a", "b", "b"], [0, 1, 2, 2])
        1.0
    """
    return confusion(labels_true, labels_pred).accuracy_majority()


def evaluate(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> dict[str, float]:
    """All scores at once: accuracy_hungarian, accuracy_majority, nmi, ari.

    Example:
        >>> evaluate([0, 0, 1, 1], [1, 1, 0, 0])["ari"]
        1.0
    """
    c = confusion(labels_true, labels_pred)
    return {"accuracy_hungarian": c.accuracy_hungarian(), "accuracy_majority": c.accuracy_majority(),
            "nmi": c.nmi(), "ari": c.ari()}
