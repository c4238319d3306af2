"""Spectral clustering on a k-nearest-neighbour graph of the vectors (the default method).

Why: pretrained-network embeddings form curved, elongated groups that k-means (round clusters)
cuts badly; a nearest-neighbour graph follows them. Measured on EfficientNet-Lite0 vectors
(one-to-one accuracy, k = classes, k-means -> spectral): dogs-vs-cats-1000 0.982 -> 0.994,
imagenette-val-3000 0.954 -> 0.9707, cifar10-test-5000 0.544 -> 0.551 (see docs/methods.md and
bench/quality.py).

Steps (Ng, Jordan & Weiss 2002 on a kNN graph, as in scikit-learn's ``affinity="nearest_neighbors"``),
with three additions so that it holds from a thousand to millions of vectors and with many copies:

1. Above ``sample_size`` (20,000) rows, the graph is built on a random sample of that many rows
   (drawn from ``seed``); its cost then stops growing with n.
2. L2-normalise the rows (cosine similarity; optionally centre them first) and find each row's 32
   most similar rows (exact, in blocks: :mod:`imgclust.neighbors`).
3. Near-duplicates (:func:`duplicate_threshold`, :func:`duplicate_groups`) are collapsed into one
   node each, the normalised mean of the group, which counts once: a folder where every photo has
   17 copies otherwise makes a graph of cliques of copies, whose leading eigenvectors pick cliques,
   not classes.
4. Connect every node to its ``n_neighbors`` most similar nodes and symmetrise as scikit-learn
   does, W = (A + A^T) / 2: weight 1 where both chose each other, 0.5 where only one did. A graph
   with more connected components than k is detected, logged as a warning and recorded in ``info``;
   with ``connect_components=True`` it is linked (:func:`link_components`). Not linked by default:
   a graph of, say, 20 separate groups swept over k = 2-30 is the signal the automatic k reads (its
   eigengap), and the near-duplicate collapse already removes the usual cause, cliques of copies.
5. Take the ``k`` leading eigenvectors of the normalised adjacency ``D^-1/2 W D^-1/2``,
   L2-normalise the rows of that embedding and run k-means (k-means++, 10 restarts) on it. Every
   row takes its node's label.
6. Rows outside the sample take the label with the largest summed similarity among their 10 most
   similar sample rows (a faiss IVF index calibrated to a recall >= 0.95), or, for a copy of a
   sample row, that row's label. Read in chunks, so a memory-mapped ``.npy`` is never held whole.

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
from ..neighbors import NeighborIndex, knn, leading_directions, unit_rows
from .base import ClustererSpec, ClusterResult, register_clusterer
from .kmeans import fit_kmeans
from .rows import Rows, as_rows, centers_and_distances

log = logging.getLogger(__name__)

DEFAULT_NEIGHBORS = 10
# The graph is built on at most this many rows; the others take the labels of their neighbours in it.
SAMPLE_SIZE = 20_000
# Rows closer than this fraction of their distance to their 32nd neighbour are near-duplicates.
DUPLICATE_RADIUS = 0.25
# Neighbours looked at when grouping near-duplicates (a group of copies may be larger than the graph's).
_DUPLICATE_NEIGHBORS = 32
# A group of copies must be at most this fraction of the distance to the next neighbour.
_GAP = 0.5
MIN_DUPLICATE_SIMILARITY = 0.98
# Groups are collapsed only where at least this many nodes remain: otherwise the "copies" are the
# clusters themselves (a few small, tight, well-separated groups) and rows stay nodes. A fixed number,
# not one per k, so that a fit at k and a sweep over k build the same graph.
_MIN_NODES = 100
# Rows outside the sample search it with the IVF index when it has at least this many rows.
REST_EXACT_BELOW = 5_000
_VOTE_CHUNK = 16_384
# ... in the sample's leading singular directions (SVD of at most REST_SVD_ROWS sample rows).
REST_DIMS = 128
REST_SVD_ROWS = 5_000
# Below this many samples a dense eigendecomposition is simpler and just as fast.
_DENSE_BELOW = 500
# A graph in at most this many separate parts is eigen-solved part by part.
_BLOCKWISE_MAX = 64


def knn_cosine(Z: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Indices of the ``n_neighbors`` most similar other rows of unit-norm ``Z`` (exact search).

    Returns:
        np.ndarray of shape (n_samples, n_neighbors), int64, most similar first.
    """
    return knn(Z, n_neighbors, exact_below=len(Z) + 1)[1]


def knn_graph_from(idx: np.ndarray, n: int) -> Any:
    """W = (A + A^T) / 2 of the neighbour lists ``idx`` (n, m) (see :func:`knn_graph`), scipy CSR."""
    from scipy.sparse import csr_matrix

    m = idx.shape[1]
    A = csr_matrix((np.ones(idx.size), (np.repeat(np.arange(n), m), idx.ravel())), shape=(n, n))
    return ((A + A.T) * 0.5).tocsr()


def knn_graph(Z: np.ndarray, n_neighbors: int) -> Any:
    """The symmetric k-nearest-neighbour adjacency of unit-norm ``Z``, as a scipy CSR matrix.

    Every row links to its ``n_neighbors`` most similar other rows (A); the graph is
    W = (A + A^T) / 2, as scikit-learn's ``affinity="nearest_neighbors"`` symmetrises: weight 1 where
    both rows chose each other, 0.5 where only one did. A mutual choice is the stronger evidence of
    being alike (a hub image is chosen by many that it does not choose back); it measured better than
    weight 1 either way on the shared datasets and on 99 random class subsets (docs/methods.md).
    """
    return knn_graph_from(knn_cosine(Z, n_neighbors), len(Z))


def spectral_embedding_of(W: Any, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` leading eigenvectors of the normalised adjacency ``D^-1/2 W D^-1/2`` of graph ``W``.

    A graph in a few separate parts (at most :data:`_BLOCKWISE_MAX`) is solved part by part and the
    k largest eigenvalues of all parts are kept (the spectrum of a block-diagonal matrix is the union
    of its blocks'): the eigenvalue 1 then repeats once per part, and a Lanczos solver (ARPACK) on
    the whole matrix does not reliably find every copy of a repeated eigenvalue. Measured on 20,000
    Gaussian draws around 10 class means, a graph of 10 separate classes: one-to-one accuracy 0.65
    solved whole, 1.0 part by part.

    Returns:
        (eigenvalues (k,), largest first; embedding of shape (n_nodes, k), float64).
    """
    from scipy.sparse import diags
    from scipy.sparse.csgraph import connected_components

    n = W.shape[0]
    d_inv_sqrt = 1.0 / np.sqrt(np.maximum(np.asarray(W.sum(axis=1)).ravel(), 1e-12))
    M = (diags(d_inv_sqrt) @ W @ diags(d_inv_sqrt)).tocsr()
    n_comp, comp = connected_components(W, directed=False)
    if not 1 < n_comp <= _BLOCKWISE_MAX:
        return _leading_eigen(M, k, seed)
    found: list[tuple[float, int, int]] = []  # (eigenvalue, part, column)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for c in range(n_comp):
        members = np.flatnonzero(comp == c)
        vals, vecs = _leading_eigen(M[members][:, members], min(k, len(members)), seed)
        parts.append((members, vecs))
        found += [(float(v), c, j) for j, v in enumerate(vals)]
    found.sort(key=lambda t: (-t[0], t[1], t[2]))  # largest first; ties by part, then column
    U = np.zeros((n, k))
    for col, (_, c, j) in enumerate(found[:k]):
        members, vecs = parts[c]
        U[members, col] = vecs[:, j]
    return np.array([t[0] for t in found[:k]]), U


def _leading_eigen(M: Any, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of symmetric sparse ``M``, largest first (dense below 500 rows)."""
    n = M.shape[0]
    if n < _DENSE_BELOW or k >= n // 2:
        vals, vecs = np.linalg.eigh(M.toarray())
        vals, vecs = vals[-k:], vecs[:, -k:]
    else:
        from scipy.sparse.linalg import eigsh

        v0 = np.random.default_rng(seed).standard_normal(n)  # fixed start vector: deterministic
        vals, vecs = eigsh(M, k=k, which="LA", v0=v0, tol=1e-6)
    order = np.argsort(-vals, kind="stable")
    return vals[order], vecs[:, order]


def spectral_embedding(Z: np.ndarray, k: int, n_neighbors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` leading eigenvectors of the normalised kNN adjacency of unit-norm ``Z``."""
    return spectral_embedding_of(knn_graph(Z, n_neighbors), k, seed)


def fit_spectral(X: np.ndarray | Rows, k: int, *, seed: int = 0, n_neighbors: int = DEFAULT_NEIGHBORS,
                 center: bool = False, sample_size: int = SAMPLE_SIZE,
                 duplicate_radius: float | None = DUPLICATE_RADIUS, connect_components: bool = False) -> ClusterResult:
    """Spectral clustering of the rows of ``X`` on their cosine k-nearest-neighbour graph.

    Near-duplicates (closer than ``duplicate_radius`` times the distance to the 32nd neighbour,
    :func:`duplicate_threshold`) are one node of the graph and share its label. Above ``sample_size`` rows, the graph is built on a seeded
    random sample of that many rows and every other row takes the label of its neighbours in the
    sample (module docstring), so the cost grows linearly with n beyond the sample.

    Args:
        X: np.ndarray of shape (n_samples, n_features); a memory-mapped ``.npy`` works too (read in
            blocks), and so do :class:`~imgclust.cluster.rows.Rows` held elsewhere (only the sample is read here).
        k: number of clusters, 1 <= k <= n_samples.
        seed: random seed (the sample, the eigensolver start vector and the k-means on the embedding).
        n_neighbors: neighbours per node in the graph, capped at half the average group size
            (nodes // (2 k)) so that small folders are not tied together, and at least 1.
        center: subtract the mean vector before the cosine (off by default: measured to help on
            imagenette and CIFAR subsets but to hurt dogs-vs-cats; see docs/methods.md).
        sample_size: the graph has at most this many rows (default 20,000).
        duplicate_radius: rows closer than this fraction of a row's distance to its 32nd neighbour (at
            least the median of that distance) are near-duplicates, one node; None: every row a node.
        connect_components: when the graph has more connected components than k, link them
            (:func:`link_components`) instead of letting the eigensolver group whole components in an
            arbitrary way. Either way the case is logged as a warning and recorded in ``info``
            (``graph_components``, ``components_exceed_k``, ``components_linked``).

    Returns:
        :class:`ClusterResult` with ``method="spectral"``; ``centers`` are the means of the members'
        original vectors, ``distances`` the Euclidean distances to them, and ``info`` records the
        graph (``n_neighbors``, ``center``, ``eigenvalues``, ``graph_nodes``, ``duplicate_groups``,
        ``graph_components``, ``components_linked``, ``sample_size``) and ``assign="nearest_center"``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(0, 0.1, (20, 3)) + [5, 0, 0], rng.normal(0, 0.1, (20, 3)) + [0, 5, 0]]
        >>> fit_spectral(X, 2).sizes.tolist()
        [20, 20]
    """
    ((_, result),) = fit_spectral_many(X, [k], seed=seed, n_neighbors=n_neighbors, center=center,
                                       sample_size=sample_size, duplicate_radius=duplicate_radius,
                                       connect_components=connect_components)
    return result


def _check_options(n_neighbors: Any, sample_size: Any, duplicate_radius: Any) -> None:
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ParameterError(f"n_neighbors must be a whole number >= 1; got {n_neighbors!r}.")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int | np.integer) or sample_size < 100:
        raise ParameterError(f"sample_size must be a whole number >= 100; got {sample_size!r}.")
    if duplicate_radius is not None and (isinstance(duplicate_radius, bool)
                                         or not isinstance(duplicate_radius, int | float)
                                         or not 0.0 <= duplicate_radius <= 0.5):
        raise ParameterError(f"duplicate_radius must be a number between 0 and 0.5 or None; got {duplicate_radius!r}.")


def duplicate_groups(sims: np.ndarray, idx: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """Near-duplicate group of every row, by leader grouping over its neighbour lists.

    Rows are taken in order; a row not yet in a group starts one and takes every row of its
    neighbour list with similarity >= ``threshold`` that is not in a group yet, provided those rows
    stand apart: the farthest of them is at most half as far as the next neighbour (or the whole list
    is copies). There is no chaining: a group's members are all within the threshold of its first
    row; and points that are merely dense (spaced one after the other, as on a smooth curve) have no
    such gap, so they stay separate nodes and the graph keeps its scale.

    Args:
        sims, idx: a :func:`imgclust.neighbors.knn` answer, shape (n, m).
        threshold: cosine similarity at which a neighbour is a copy of the row, one per row or one for all.

    Returns:
        np.ndarray of shape (n,), int64 group numbers in [0, n_groups), numbered by first row.
    """
    n = len(idx)
    group = np.full(n, -1, dtype=np.int64)
    m = idx.shape[1]
    close = (sims >= np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,))[:, None]) & (idx >= 0)
    j = close.sum(axis=1)  # the close neighbours are a prefix of the list (most similar first)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))
    rows = np.arange(n)
    last_in = dist[rows, np.maximum(j - 1, 0)]
    first_out = dist[rows, np.minimum(j, m - 1)]
    apart = (j == m) | (last_in <= _GAP * first_out)
    has_close = np.flatnonzero((j > 0) & apart)
    g = 0
    nxt = 0
    for i in has_close.tolist():
        # Rows before i without close neighbours are groups of one.
        while nxt < i:
            if group[nxt] < 0:
                group[nxt] = g
                g += 1
            nxt += 1
        if group[i] < 0:
            group[i] = g
            members = idx[i, :j[i]]
            group[members[group[members] < 0]] = g
            g += 1
    for j in range(nxt, n):
        if group[j] < 0:
            group[j] = g
            g += 1
    return group


def duplicate_threshold(sims: np.ndarray, radius: float) -> np.ndarray:
    """Per row, the cosine similarity at which a neighbour counts as its copy.

    A copy is closer than ``radius`` times the row's reference distance: the larger of its distance
    to the last neighbour of ``sims`` (the 32nd) and the median of that distance over all rows. The
    scale is the data's own, so dense low-dimensional data, or vectors that all point roughly the
    same way (raw pixels), are not called copies wholesale, while a copy of a photo (distance near 0)
    stands far below its distance to other photos. The median keeps a burst of more copies than
    neighbours looked at (whose own last neighbour is a copy) detectable, unless most of the folder
    is such bursts. Whatever the scale, a copy has a cosine similarity of at least
    :data:`MIN_DUPLICATE_SIMILARITY` (0.98).

    Args:
        sims: np.ndarray of shape (n, m), neighbour similarities, most similar first.
        radius: fraction of the reference distance.

    Returns:
        np.ndarray of shape (n,), float64 similarities.
    """
    last = np.sqrt(np.maximum(2.0 - 2.0 * sims[:, -1].astype(np.float64), 0.0))
    ref = np.maximum(last, float(np.median(last)))
    return np.maximum(1.0 - (radius * ref) ** 2 / 2.0, MIN_DUPLICATE_SIMILARITY)


def link_components(Z: np.ndarray, W: Any, k: int) -> tuple[Any, int]:
    """The graph ``W`` with edges added until it has at most ``k`` connected components.

    Each round links every component to its most similar other component (by the cosine of the
    components' mean directions): one edge of weight 0.5 between the member of each that is most
    similar to the other's mean direction. Every round at least halves the number of components.

    Returns:
        (the linked graph, CSR; the number of components before linking).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n_before, comp = connected_components(W, directed=False)
    n_comp = n_before
    while n_comp > k:
        counts = np.bincount(comp, minlength=n_comp)
        sums = np.zeros((n_comp, Z.shape[1]), dtype=np.float64)
        np.add.at(sums, comp, Z)
        C = unit_rows(sums / counts[:, None])
        partner = knn(C, 1, exact_below=len(C) + 1)[1][:, 0]
        # For each component, its member most similar to the partner's mean direction, and back.
        score = np.einsum("ij,ij->i", Z, C[partner[comp]])
        order = np.lexsort((-score, comp))
        best = order[np.r_[0, np.cumsum(counts)[:-1]]]  # one member per component
        a, b = best, best[partner]
        E = csr_matrix((np.full(2 * n_comp, 0.5), (np.r_[a, b], np.r_[b, a])), shape=W.shape)
        W = (W + E).tocsr()
        W.data = np.minimum(W.data, 1.0)
        n_comp, comp = connected_components(W, directed=False)
    return W, n_before


def fit_spectral_many(X: np.ndarray | Rows, ks: Sequence[int], *, seed: int = 0, n_neighbors: int = DEFAULT_NEIGHBORS,
                      center: bool = False, sample_size: int = SAMPLE_SIZE,
                      duplicate_radius: float | None = DUPLICATE_RADIUS,
                      connect_components: bool = False) -> Iterator[tuple[int, ClusterResult]]:
    """:func:`fit_spectral` at every k of ``ks`` (in increasing order), sharing the work across k.

    The sample, the near-duplicate groups and the neighbours of the rows outside the sample are
    found once. The neighbour graph is built once per neighbour count (the cap nodes // (2 k) only
    changes it for small folders), and its leading eigenvectors are computed once, for the largest k
    that uses it: the embedding at k is the first k of them. Only the k-means on the embedding (and
    the vote of the rows outside the sample) runs per k, so a sweep over k = 2-30 costs about one fit
    plus 29 small k-means. The eigenvectors of one eigensolve for the largest k equal those of a
    solve for each k up to the solver's tolerance (1e-6) and sign, which k-means on the
    row-normalised embedding does not see. With ``connect_components``, a k smaller than the graph's
    number of components gets its own linked graph (:func:`link_components`) and eigensolve, as a
    single fit at that k does.

    Yields:
        (k, :class:`ClusterResult`) for every k of ``ks``, increasing.
    """
    _check_options(n_neighbors, sample_size, duplicate_radius)
    if not isinstance(X, np.memmap | Rows):
        X = np.asarray(X, dtype=np.float32)
    data = as_rows(X)
    n = data.n
    ks = sorted({int(k) for k in ks})
    base_info: dict[str, Any] = {"graph": "knn-cosine", "center": bool(center), "assign": "nearest_center",
                                 "assign_space": "input", "transform": None, "sample_size": int(min(n, sample_size)),
                                 "duplicate_radius": duplicate_radius}
    if all(k in (1, n) for k in ks):
        for k in ks:
            labels = np.zeros(n, dtype=np.int64) if k == 1 else np.arange(n, dtype=np.int64)
            m = int(max(1, min(n_neighbors, n // (2 * k), n - 1)))
            yield k, _result(data, labels, k, seed, {**base_info, "n_neighbors": m, "eigenvalues": []}, n_iter=0)
        return

    rng = np.random.default_rng(seed)
    sample = np.arange(n) if n <= sample_size else np.sort(rng.choice(n, size=sample_size, replace=False))
    S = data.take(sample)
    mean = S.mean(axis=0, dtype=np.float64).astype(np.float32) if center else None
    Z = unit_rows(S - mean if mean is not None else S)
    del S
    # Near-duplicate groups: one node each. The first neighbour lists serve the graph too when every
    # row is its own group (the usual case), so grouping costs nothing there.
    m_first = int(min(max(n_neighbors, _DUPLICATE_NEIGHBORS if duplicate_radius else 0), len(Z) - 1))
    first = knn(Z, m_first, exact_below=len(Z) + 1) if len(Z) > 1 else None
    copy_sim: float | None = None
    if duplicate_radius and first is not None:
        thresholds = duplicate_threshold(first[0], float(duplicate_radius))
        copy_sim = float(np.median(thresholds))  # for rows outside the sample: the typical threshold
        base_info["duplicate_similarity"] = round(copy_sim, 6)
        group = duplicate_groups(first[0], first[1], thresholds)
    else:
        group = np.arange(len(Z), dtype=np.int64)
    n_groups = int(group.max()) + 1
    collapsed = n_groups < len(Z) and n_groups >= _MIN_NODES
    base_info["duplicates_collapsed"] = collapsed
    if not collapsed:
        group = np.arange(len(Z), dtype=np.int64)
        n_groups = len(Z)
    if n_groups < len(Z):
        sums = np.zeros((n_groups, Z.shape[1]), dtype=np.float64)
        np.add.at(sums, group, Z)
        nodes = unit_rows(sums)
        first = None
    else:
        nodes = Z
    sizes = np.bincount(group, minlength=n_groups)
    base_info.update(graph_nodes=n_groups, duplicate_groups=int((sizes > 1).sum()),
                     duplicate_rows=int(sizes[sizes > 1].sum()))
    if n_groups < len(Z):
        log.info("spectral: %d near-duplicate rows in %d groups are %d graph nodes",
                 base_info["duplicate_rows"], base_info["duplicate_groups"], base_info["duplicate_groups"])

    # Rows outside the sample: their neighbours in the sample, found once for every k.
    rest = np.setdiff1d(np.arange(n), sample) if len(sample) < n else np.empty(0, dtype=np.int64)
    rest_nb: tuple[np.ndarray, np.ndarray] | None = None
    if len(rest):
        rest_nb, index_info = _search_rest(data, sample, Z, mean, seed, min(DEFAULT_NEIGHBORS, len(Z)))
        base_info["rest_index"] = index_info

    # Neighbour count per k: more than half an average group would tie groups together (small folders).
    neighbors = {k: int(max(1, min(n_neighbors, n_groups // (2 * k), n_groups - 1))) for k in ks}
    graphs: dict[int, tuple[Any, int]] = {}  # neighbour count -> (graph, components)

    def graph(m: int) -> tuple[Any, int]:
        if m not in graphs:
            from scipy.sparse.csgraph import connected_components

            idx = first[1][:, :m] if first is not None and m <= m_first else knn(nodes, m, exact_below=len(nodes) + 1)[1]
            W = knn_graph_from(idx, len(nodes))
            graphs[m] = (W, int(connected_components(W, directed=False)[0]))
        return graphs[m]

    # Which eigensolve serves which k: (neighbour count, linked-to-k or 0) -> the largest k using it.
    largest: dict[tuple[int, int], int] = {}
    for k in ks:
        if 1 < k < n_groups:
            m = neighbors[k]
            key = (m, k if graph(m)[1] > k and connect_components else 0)
            largest[key] = max(largest.get(key, 0), k)
    embeddings: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, bool]] = {}
    warned: set[int] = set()
    for k in ks:
        m = neighbors[k]
        info: dict[str, Any] = {**base_info, "n_neighbors": m}
        if k == 1 or k == n or k >= n_groups:
            info["n_neighbors"] = int(max(1, min(n_neighbors, n // (2 * k), n - 1)))
            if k == 1:
                labels = np.zeros(n, dtype=np.int64)
            elif k == n:
                labels = np.arange(n, dtype=np.int64)
            else:  # at least as many clusters as distinct nodes: one node per cluster, the rest split off
                labels = _one_node_per_cluster(group, sample, n, k, rest, rest_nb)
            info["eigenvalues"] = []
            yield k, _result(data, labels, k, seed, info, n_iter=0)
            continue
        W, n_comp = graph(m)
        info["graph_components"] = n_comp
        info["components_exceed_k"] = n_comp > k
        key = (m, k if n_comp > k and connect_components else 0)
        if n_comp > k and m not in warned:
            warned.add(m)
            log.warning("spectral: the %d-neighbour graph falls apart into %d components, more than k=%d%s. %s",
                        m, n_comp, k, " (and other k of this sweep)" if len(ks) > 1 else "",
                        "Linking each component to its most similar one until at most k remain."
                        if connect_components else
                        "Whole components are grouped in an arbitrary way: give k >= the number of components, "
                        "more n_neighbors, or connect_components=True.")
        if key not in embeddings:
            linked = False
            if key[1]:
                W, _ = link_components(nodes, W, k)
                linked = True
            vals, U = spectral_embedding_of(W, largest[key], seed)
            embeddings[key] = (vals, U, linked)
        vals, U, linked = embeddings[key]
        info["components_linked"] = linked
        info["eigenvalues"] = [round(float(v), 6) for v in vals[:k]]
        emb = fit_kmeans(unit_rows(U[:, :k]), k, seed=seed, n_init=10)
        labels = np.empty(n, dtype=np.int64)
        labels[sample] = emb.labels[group]
        if rest_nb is not None:
            labels[rest] = _vote(labels[sample], rest_nb, k, copy_sim)
        yield k, _result(data, labels, k, seed, info, n_iter=emb.n_iter, history=emb.history)


def _one_node_per_cluster(group: np.ndarray, sample: np.ndarray, n: int, k: int, rest: np.ndarray,
                          rest_nb: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Labels when k >= the number of graph nodes: each node its own cluster, then the largest split."""
    labels = np.empty(n, dtype=np.int64)
    labels[sample] = group
    if rest_nb is not None:
        labels[rest] = labels[sample][rest_nb[1][:, 0]]
    n_used = int(group.max()) + 1
    # Fill the remaining clusters with single rows taken from the largest clusters (k <= n rows).
    counts = np.bincount(labels, minlength=k)
    nxt = n_used
    while nxt < k:
        big = int(np.argmax(counts))
        row = int(np.flatnonzero(labels == big)[-1])
        labels[row] = nxt
        counts[big] -= 1
        counts[nxt] += 1
        nxt += 1
    return labels


class SampleSearch:
    """What a block of rows outside the sample needs to find its ``m`` most similar sample rows.

    The search runs on the unit rows projected onto the sample's :data:`REST_DIMS` leading singular
    directions (then normalised again): ten times fewer multiply-adds per query than 1280-d vectors,
    which is what makes a million rows affordable; the vote needs the neighbourhood, not the exact
    order. The similarity of the first neighbour is recomputed in the full space, so that the copy
    test of :func:`_vote` uses the same cosine as the graph. Picklable: the Dask backend sends it
    to its workers once, and each searches the rows it reads.
    """

    def __init__(self, Z: np.ndarray, mean: np.ndarray | None, seed: int, m: int) -> None:
        self.Z, self.mean, self.m = Z, mean, m
        self.P: np.ndarray | None = None
        if Z.shape[1] > REST_DIMS and len(Z) > REST_DIMS:
            # A d x d Gram eigensolve, far cheaper than an SVD of the rows (measured 4 s against 41 s here).
            self.P = leading_directions(Z, REST_DIMS, seed=seed, rows=REST_SVD_ROWS)
        self.index = NeighborIndex(unit_rows(Z @ self.P) if self.P is not None else Z, seed=seed, n_neighbors=m,
                                   exact_below=REST_EXACT_BELOW)

    def search(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sims float32, idx int32) of shape (len(Q), m): the most similar sample rows of raw rows ``Q``."""
        Q = unit_rows(Q - self.mean if self.mean is not None else Q)
        P = self.P
        sims, idx = self.index.search(unit_rows(Q @ P) if P is not None else Q, self.m)
        if P is not None:
            top = idx[:, 0]
            sims[:, 0] = np.where(top >= 0, np.einsum("ij,ij->i", Q, self.Z[np.maximum(top, 0)]), -np.inf)
        return sims, idx.astype(np.int32)

    def info(self) -> dict[str, Any]:
        index = self.index
        return {"exact": index.exact, "nlist": index.nlist, "nprobe": index.nprobe, "recall": round(index.recall, 4),
                "n_neighbors": self.m, "dims": int(self.P.shape[1]) if self.P is not None else int(self.Z.shape[1])}


def _search_block(start: int, block: np.ndarray, outside: np.ndarray,
                  search: SampleSearch) -> tuple[np.ndarray, np.ndarray]:
    return search.search(block[outside])


def _search_rest(data: Rows, sample: np.ndarray, Z: np.ndarray, mean: np.ndarray | None, seed: int,
                 m: int) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """The ``m`` most similar sample rows of every row outside the sample (in row order), block by
    block where the rows are held (:class:`SampleSearch`)."""
    search = SampleSearch(Z, mean, seed, m)
    outside = np.ones(data.n, dtype=bool)
    outside[sample] = False
    found = list(data.map_blocks(_search_block, search, split=(outside,)))
    sims = np.concatenate([f[0] for f in found])
    idx = np.concatenate([f[1] for f in found])
    return (sims, idx), search.info()


def _vote(sample_labels: np.ndarray, rest_nb: tuple[np.ndarray, np.ndarray], k: int,
          duplicate_similarity: float | None) -> np.ndarray:
    """Labels of rows outside the sample: a near-duplicate of a sample row takes its label; any other
    row takes the label with the largest summed similarity among its neighbours in the sample."""
    sims, idx = rest_nb
    ok = idx >= 0
    lab = sample_labels[np.where(ok, idx, 0)]
    out = np.empty(len(idx), dtype=np.int64)
    for start in range(0, len(idx), _VOTE_CHUNK):
        sl = slice(start, start + _VOTE_CHUNK)
        w = np.where(ok[sl], np.maximum(sims[sl], 0.0) + 1e-6, 0.0)
        score = np.zeros((len(w), k), dtype=np.float64)
        np.add.at(score, (np.repeat(np.arange(len(w)), w.shape[1]), lab[sl].ravel()), w.ravel())
        out[sl] = np.argmax(score, axis=1)
    if duplicate_similarity is not None:
        copy = ok[:, 0] & (sims[:, 0] >= duplicate_similarity)
        out[copy] = lab[copy, 0]
    return out


def _result(data: Rows, labels: np.ndarray, k: int, seed: int, info: dict[str, Any], *, n_iter: int,
            history: tuple[float, ...] = ()) -> ClusterResult:
    """Centres = member means in the input space (global mean for an empty cluster); distances to them.

    Two passes over the rows, block by block where they are held (:func:`centers_and_distances`).
    """
    centers, distances, inertia = centers_and_distances(data, labels, k)
    return ClusterResult(labels=labels.astype(np.int64), centers=centers, distances=distances, inertia=inertia, k=k,
                         seed=seed, method="spectral", n_iter=n_iter, history=history, info=info)


register_clusterer(ClustererSpec(
    name="spectral",
    fit=fit_spectral,
    fit_many=fit_spectral_many,
    description="Spectral clustering on the cosine 10-nearest-neighbour graph (the default): follows curved "
                "groups that k-means cuts; near-duplicates count once; above 20,000 vectors the graph is built "
                "on a sample and the rest vote; centres are member means, new vectors go to the nearest centre.",
))
