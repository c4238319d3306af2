"""Scores of a clustering against known labels. Arrays only.

- ``accuracy_hungarian``: one-to-one accuracy. Clusters and labels are matched by the Hungarian
  algorithm (each cluster to at most one label and vice versa) to maximise the number of agreeing
  samples. With k != number of labels, unmatched clusters count as wrong.
- ``accuracy_majority``: many-to-one accuracy, as in the original method. Each cluster takes its
  most common label. It rises with k by construction (k = n gives 1.0).
- ``nmi``, ``ari``: scikit-learn's normalised mutual information and adjusted Rand index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

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


def _check(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(labels_true)
    p = np.asarray(labels_pred)
    if t.ndim != 1 or p.ndim != 1 or len(t) != len(p):
        raise ParameterError(f"labels_true and labels_pred must be 1-D and of equal length; got {t.shape} and {p.shape}.")
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
    c = confusion(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(-c.matrix)
    return float(c.matrix[rows, cols].sum() / c.matrix.sum())


def accuracy_majority(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> float:
    """Many-to-one accuracy in [0, 1]: each cluster takes its most common label.

    Example:
        >>> accuracy_majority(["a", "a", "b", "b"], [0, 1, 2, 2])
        1.0
    """
    c = confusion(labels_true, labels_pred)
    return float(c.matrix.max(axis=1).sum() / c.matrix.sum())


def evaluate(labels_true: Sequence[Any] | np.ndarray, labels_pred: Sequence[Any] | np.ndarray) -> dict[str, float]:
    """All scores at once: accuracy_hungarian, accuracy_majority, nmi, ari.

    Example:
        >>> evaluate([0, 0, 1, 1], [1, 1, 0, 0])["ari"]
        1.0
    """
    t, p = _check(labels_true, labels_pred)
    t = t.astype(str)
    return {
        "accuracy_hungarian": accuracy_hungarian(t, p),
        "accuracy_majority": accuracy_majority(t, p),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
    }
