"""The clustering result contract and the registry of clusterers. Arrays in, labels out."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import DEFAULT_METHOD
from ..errors import ParameterError
from .rows import Rows


@dataclass(frozen=True)
class ClusterResult:
    """A fitted clustering, as data.

    Attributes:
        labels: np.ndarray of shape (n_samples,), int64 in [0, k).
        centers: np.ndarray of shape (k, n_features), float32: a centre-like summary per cluster (for
            methods that are not centroid-based, the mean of each cluster's members in the space the
            distances are measured in).
        distances: np.ndarray of shape (n_samples,), float32: each sample's distance to its centre.
        inertia: sum of squared distances of samples to their centres.
        k: number of clusters.
        seed: the seed used.
        method: the registry name of the clusterer.
        n_iter: iterations of the best run.
        history: inertia after each iteration of the best run.
        info: method-specific extras (JSON-able), e.g. the transform applied before clustering.
    """

    labels: np.ndarray
    centers: np.ndarray
    distances: np.ndarray
    inertia: float
    k: int
    seed: int
    method: str
    n_iter: int = 0
    history: tuple[float, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> np.ndarray:
        """Number of samples per cluster, shape (k,)."""
        return np.bincount(self.labels, minlength=self.k)


Clusterer = Callable[..., ClusterResult]


@dataclass(frozen=True)
class ClustererSpec:
    """A registry entry: ``fit(X, k, *, seed, **options) -> ClusterResult``.

    ``fit_many(X, ks, *, seed, **options)``, where a method has one, yields ``(k, result)`` for every k of
    ``ks`` in increasing order, sharing work across k (the sweep over k uses it); each result is that
    of ``fit`` at k, up to numerical tolerance.
    """

    name: str
    fit: Clusterer
    description: str
    fit_many: Callable[..., Iterator[tuple[int, ClusterResult]]] | None = None


_CLUSTERERS: dict[str, ClustererSpec] = {}


def register_clusterer(spec: ClustererSpec) -> ClustererSpec:
    _CLUSTERERS[spec.name] = spec
    return spec


def _ensure_builtins() -> None:
    from . import kmeans, spectral  # noqa: F401


def list_clusterers() -> list[ClustererSpec]:
    _ensure_builtins()
    return [_CLUSTERERS[n] for n in sorted(_CLUSTERERS)]


def get_clusterer(name: str) -> ClustererSpec:
    """The registry entry called ``name``; unknown names get a suggestion."""
    _ensure_builtins()
    if name not in _CLUSTERERS:
        close = difflib.get_close_matches(name, sorted(_CLUSTERERS), n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ParameterError(f"Unknown method '{name}'.{hint} Available: {', '.join(sorted(_CLUSTERERS))}.")
    return _CLUSTERERS[name]


def validate_k(k: Any, n_samples: int) -> int:
    """Check that ``k`` is an integer between 1 and ``n_samples``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ParameterError(f"k must be a whole number; got {k!r}.")
    if k < 1 or k > n_samples:
        raise ParameterError(f"k must be between 1 and the number of usable images ({n_samples}); got {k}.")
    return int(k)


def cluster(X: np.ndarray | Rows, k: int, *, method: str = DEFAULT_METHOD, seed: int = 0, **options: Any) -> ClusterResult:
    """Cluster the rows of ``X`` into ``k`` groups with the registered ``method``.

    Args:
        X: np.ndarray of shape (n_samples, n_features), or :class:`~imgclust.cluster.rows.Rows` held elsewhere.
        k: number of clusters, 1 <= k <= n_samples.
        method: a registered clusterer (see :func:`list_clusterers`); the default is that of
            ``imgclust run`` (``config.DEFAULT_METHOD``, spectral).
        seed: random seed; same X, k, method, options and seed give the same labels.

    Example:
        >>> X = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10]
        >>> cluster(X, 2, seed=0).sizes.tolist()
        [5, 5]
    """
    if not isinstance(X, np.memmap | Rows):  # a memory map or rows held elsewhere stay so: read in blocks
        X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        raise ParameterError(f"X must be a non-empty 2-D array; got shape {X.shape}.")
    k = validate_k(k, len(X))
    return get_clusterer(method).fit(X, k, seed=seed, **options)
