"""Spectral clustering on a k-nearest-neighbour graph of the vectors (the default method).

Why: pretrained-network embeddings form curved, elongated groups that k-means (round clusters)
cuts badly; a nearest-neighbour graph follows them. Measured on EfficientNet-Lite0 vectors
(one-to-one accuracy, k = classes, k-means -> spectral): dogs-vs-cats-1000 0.982 -> 0.994,
imagenette-val-3000 0.954 -> 0.9707, cifar10-test-5000 0.544 -> 0.551 (see docs/methods.md and
bench/quality.py).

Steps (Ng, Jordan & Weiss 2002 on a kNN graph, as in scikit-learn's ``affinity="nearest_neighbors"``):

1. L2-normalise the rows (cosine similarity; optionally centre them first).
2. Connect every vector to its ``n_neighbors`` most similar vectors (exact search, in blocks),
   and symmetrise as scikit-learn does, W = (A + A^T) / 2: weight 1 where both chose each other,
   0.5 where only one did.
3. Take the ``k`` leading eigenvectors of the normalised adjacency ``D^-1/2 W D^-1/2``.
4. L2-normalise the rows of that embedding and run k-means (k-means++, 10 restarts) on it.

The centre of each cluster is the mean of its members' ORIGINAL vectors, and a new vector is
assigned to the nearest centre by Euclidean distance in the original space (``info["assign"]``):
no transform is needed for assignment, and the centres are what the report shows. Assigning new
vectors this way approximates the graph labels (it is how k-means would assign them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..neighbors import knn, unit_rows
from .base import ClustererSpec, ClusterResult, register_clusterer
from .kmeans import fit_kmeans

log = logging.getLogger(__name__)

DEFAULT_NEIGHBORS = 10
# Below this many samples a dense eigendecomposition is simpler and just as fast.
_DENSE_BELOW = 500


def knn_cosine(Z: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Indices of the ``n_neighbors`` most similar other rows of unit-norm ``Z`` (exact search).

    Returns:
        np.ndarray of shape (n_samples, n_neighbors), int64, most similar first.
    """
    return knn(Z, n_neighbors, exact_below=len(Z) + 1)[1]


def knn_graph(Z: np.ndarray, n_neighbors: int) -> Any:
    """The symmetric k-nearest-neighbour adjacency of unit-norm ``Z``, as a scipy CSR matrix.

    Every row links to its ``n_neighbors`` most similar other rows (A); the graph is
    W = (A + A^T) / 2, as scikit-learn's ``affinity="nearest_neighbors"`` symmetrises: weight 1 where
    both rows chose each other, 0.5 where only one did. A mutual choice is the stronger evidence of
    being alike (a hub image is chosen by many that it does not choose back); it measured better than
    weight 1 either way on the shared datasets and on 99 random class subsets (docs/methods.md).
    """
    from scipy.sparse import csr_matrix

    n = len(Z)
    idx = knn_cosine(Z, n_neighbors)
    A = csr_matrix((np.ones(idx.size), (np.repeat(np.arange(n), n_neighbors), idx.ravel())), shape=(n, n))
    return ((A + A.T) * 0.5).tocsr()


def spectral_embedding(Z: np.ndarray, k: int, n_neighbors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` leading eigenvectors of the normalised kNN adjacency of unit-norm ``Z``.

    Returns:
        (eigenvalues (k,), largest first; embedding of shape (n_samples, k), float64).
    """
    from scipy.sparse import diags

    n = len(Z)
    W = knn_graph(Z, n_neighbors)
    d_inv_sqrt = 1.0 / np.sqrt(np.asarray(W.sum(axis=1)).ravel())
    M = diags(d_inv_sqrt) @ W @ diags(d_inv_sqrt)
    if n < _DENSE_BELOW or k >= n // 2:
        vals, vecs = np.linalg.eigh(M.toarray())
        vals, vecs = vals[-k:], vecs[:, -k:]
    else:
        from scipy.sparse.linalg import eigsh

        v0 = np.random.default_rng(seed).standard_normal(n)  # fixed start vector: deterministic
        vals, vecs = eigsh(M, k=k, which="LA", v0=v0, tol=1e-6)
    order = np.argsort(-vals, kind="stable")
    return vals[order], vecs[:, order]


def fit_spectral(X: np.ndarray, k: int, *, seed: int = 0, n_neighbors: int = DEFAULT_NEIGHBORS,
                 center: bool = False) -> ClusterResult:
    """Spectral clustering of the rows of ``X`` on their cosine k-nearest-neighbour graph.

    Args:
        X: np.ndarray of shape (n_samples, n_features).
        k: number of clusters, 1 <= k <= n_samples.
        seed: random seed (eigensolver start vector and the k-means on the embedding).
        n_neighbors: neighbours per vector in the graph, capped at half the average group size
            (n_samples // (2 k)) so that small folders are not tied together, and at least 1.
        center: subtract the mean vector before the cosine (off by default: measured to help on
            imagenette and CIFAR subsets but to hurt dogs-vs-cats; see docs/methods.md).

    Returns:
        :class:`ClusterResult` with ``method="spectral"``; ``centers`` are the means of the members'
        original vectors, ``distances`` the Euclidean distances to them, and ``info`` records the
        graph (``n_neighbors``, ``center``, ``eigenvalues``) and ``assign="nearest_center"``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(0, 0.1, (20, 3)) + [5, 0, 0], rng.normal(0, 0.1, (20, 3)) + [0, 5, 0]]
        >>> fit_spectral(X, 2).sizes.tolist()
        [20, 20]
    """
    ((_, result),) = fit_spectral_many(X, [k], seed=seed, n_neighbors=n_neighbors, center=center)
    return result


def fit_spectral_many(X: np.ndarray, ks: Sequence[int], *, seed: int = 0, n_neighbors: int = DEFAULT_NEIGHBORS,
                      center: bool = False) -> Iterator[tuple[int, ClusterResult]]:
    """:func:`fit_spectral` at every k of ``ks`` (in increasing order), sharing the work across k.

    The neighbour graph is built once per neighbour count (the cap n // (2 k) only changes it for
    small folders), and its leading eigenvectors are computed once, for the largest k that uses it:
    the embedding at k is the first k of them. Only the k-means on the embedding runs per k, so a
    sweep over k = 2-30 costs about one fit plus 29 small k-means. The eigenvectors of one eigensolve
    for the largest k equal those of a solve for each k up to the solver's tolerance (1e-6) and sign,
    which k-means on the row-normalised embedding does not see. The exception is a graph with more
    than k separate parts: the eigenvalue 1 then repeats more than k times, and any k of its
    eigenvectors are an equally arbitrary choice, in a single fit as here.

    Yields:
        (k, :class:`ClusterResult`) for every k of ``ks``, increasing.
    """
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ParameterError(f"n_neighbors must be a whole number >= 1; got {n_neighbors!r}.")
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    ks = sorted({int(k) for k in ks})
    # More neighbours than half an average group would tie groups together (small folders).
    neighbors = {k: int(max(1, min(n_neighbors, n // (2 * k), n - 1))) for k in ks}
    largest: dict[int, int] = {}  # neighbour count -> the largest k (with a graph) that uses it
    for k in ks:
        if 1 < k < n:
            largest[neighbors[k]] = max(largest.get(neighbors[k], 0), k)
    Z: np.ndarray | None = None
    embeddings: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in ks:
        m = neighbors[k]
        info: dict[str, Any] = {"graph": "knn-cosine", "n_neighbors": m, "center": bool(center),
                                "assign": "nearest_center", "assign_space": "input", "transform": None}
        if k == 1 or k == n:
            labels = np.zeros(n, dtype=np.int64) if k == 1 else np.arange(n, dtype=np.int64)
            info["eigenvalues"] = []
            yield k, _result(X, labels, k, seed, info, n_iter=0)
            continue
        if m not in embeddings:
            if Z is None:
                Z = unit_rows(X - X.mean(axis=0) if center else X).astype(np.float32)
            embeddings[m] = spectral_embedding(Z, largest[m], m, seed)
        vals, U = embeddings[m]
        info["eigenvalues"] = [round(float(v), 6) for v in vals[:k]]
        emb = fit_kmeans(unit_rows(U[:, :k]).astype(np.float32), k, seed=seed, n_init=10)
        yield k, _result(X, emb.labels, k, seed, info, n_iter=emb.n_iter, history=emb.history)


def _result(X: np.ndarray, labels: np.ndarray, k: int, seed: int, info: dict[str, Any], *, n_iter: int,
            history: tuple[float, ...] = ()) -> ClusterResult:
    """Centres = member means in the input space (global mean for an empty cluster); distances to them."""
    from scipy.sparse import csr_matrix

    n = len(X)
    counts = np.bincount(labels, minlength=k)
    onehot = csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    sums = onehot @ X.astype(np.float64)
    centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], X.mean(axis=0, dtype=np.float64))
    centers = centers.astype(np.float32)
    sq = np.einsum("ij,ij->i", X - centers[labels], X - centers[labels]).astype(np.float64)
    return ClusterResult(labels=labels.astype(np.int64), centers=centers, distances=np.sqrt(sq).astype(np.float32),
                         inertia=float(sq.sum()), k=k, seed=seed, method="spectral", n_iter=n_iter,
                         history=history, info=info)


register_clusterer(ClustererSpec(
    name="spectral",
    fit=fit_spectral,
    fit_many=fit_spectral_many,
    description="Spectral clustering on the cosine 10-nearest-neighbour graph (the default): follows curved "
                "groups that k-means cuts; centres are member means, new vectors go to the nearest centre.",
))
