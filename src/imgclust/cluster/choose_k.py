"""Choosing k: a sweep over many k that reuses work across k, the criteria, and the automatic rule.

The sweep clusters with the chosen method at every k of a list, in increasing order, and reuses work
across k: spectral builds its neighbour graph and eigenvectors once (``fit_many`` in the registry);
k-means runs the warm path below. For k-means, the first
k is the best of a few k-means++ restarts. Every later k runs Lloyd from two starts and keeps the
better: the previous k's centres with the clusters of largest inertia split in two (as bisecting
k-means does), and the centres of a k-means++ fit on a random sample (``SAMPLE_PER_CLUSTER`` rows per
cluster, at least ``SAMPLE_MIN``). Both starts are close to a fixed point, so each takes few
iterations: a sweep costs a few short runs per k instead of the ten full restarts of a from-scratch
fit, with inertia within about 1% of them (see ``bench/sweep.py``). The silhouette is computed on a
seeded sample of at most ``silhouette_sample`` rows whose distance matrix is computed once for all k.

The automatic rule (:func:`pick_k`), documented in ``docs/choosing-k.md``, applied to the criteria of
the method's own clusterings (so that k is chosen for the groups that method finds):

1. Silhouette first: it compares each sample's distance to its own cluster with its distance to the
   nearest other cluster, so unlike inertia it does not improve just because k grows.
2. Near the top the silhouette curve of real embeddings is flat and its arg max moves between
   neighbouring k from seed to seed, so every k whose silhouette is within one standard error of the
   best one is a candidate (the "one standard error" rule; the error is that of the mean silhouette
   over the sample at the best k).
3. Among the candidates, take the one closest to the elbow of the inertia curve, found by kneedle
   (the ``kneed`` package): the point of diminishing returns. Without an elbow, the smallest candidate.

Arrays only: no IO here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..config import DEFAULT_METHOD
from ..errors import ParameterError
from ..metrics import evaluate
from .base import ClusterResult, cluster, get_clusterer
from .kmeans import ArrayAssigner, lloyd, small_problem_threads

SWEEP_COLUMNS = ("k", "inertia", "silhouette", "calinski_harabasz", "davies_bouldin",
                 "accuracy_majority", "accuracy_hungarian", "nmi", "ari")
SILHOUETTE_SAMPLE = 2000
FIRST_K_RESTARTS = 5
SAMPLE_PER_CLUSTER = 40
SAMPLE_MIN = 1000
SWEEP_MAX_ITER = 300  # scikit-learn's KMeans default, which the sweep used before
# Automatic k is chosen on a seeded random sample of at most this many rows, so its cost stops growing
# with n; the chosen k is then fitted on all rows. (The same size and seed as spectral's own graph
# sample, so the sweep's fit at the chosen k and the final fit cluster the same sample rows.)
K_SAMPLE = 20_000

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SweepRow:
    """The criteria of one k. NaN where a criterion is undefined (e.g. silhouette at k = 1).

    Attributes:
        k: number of clusters.
        inertia: sum of squared distances of the samples to their centres (lower is tighter).
        silhouette: mean silhouette over the sample, in [-1, 1] (higher is better).
        silhouette_se: standard error of that mean.
        calinski_harabasz: between- over within-cluster dispersion, scaled (higher is better).
        davies_bouldin: mean worst-case ratio of cluster spread to centre distance (lower is better).
        accuracy_majority: many-to-one accuracy (each cluster takes its most common label; rises with k
            by construction), or None without labels.
        accuracy_hungarian: one-to-one accuracy, only where k equals the number of labels, else None.
        nmi: normalised mutual information with the labels, or None.
        ari: adjusted Rand index with the labels, or None.
    """

    k: int
    inertia: float
    silhouette: float
    silhouette_se: float
    calinski_harabasz: float
    davies_bouldin: float
    accuracy_majority: float | None = None
    accuracy_hungarian: float | None = None
    nmi: float | None = None
    ari: float | None = None

    def as_row(self) -> dict[str, Any]:
        """The CSV row (:data:`SWEEP_COLUMNS`): undefined values are empty, floats to 6 significant digits."""
        row: dict[str, Any] = {}
        for name in SWEEP_COLUMNS:
            v = getattr(self, name)
            row[name] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else \
                v if isinstance(v, int) else f"{v:.6g}"
        return row


@dataclass(frozen=True)
class Sweep:
    """The criteria over a list of k.

    Attributes:
        rows: one :class:`SweepRow` per k, in increasing k.
        n_samples: rows of X.
        silhouette_sample: how many rows the silhouette was computed on.
        seed: the seed used.
        engine: how each k was fitted (``"kmeans-warm"`` or a registered method's name).
        seconds: wall time of the sweep.
    """

    rows: list[SweepRow]
    n_samples: int
    silhouette_sample: int
    seed: int
    engine: str
    seconds: float

    @property
    def ks(self) -> list[int]:
        return [r.k for r in self.rows]

    def column(self, name: str) -> np.ndarray:
        """One criterion over k, shape (n_ks,), float64 (None -> NaN)."""
        if name not in {f.name for f in fields(SweepRow)}:
            raise ParameterError(f"Unknown sweep column '{name}'. Columns: {', '.join(SWEEP_COLUMNS)}.")
        return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in self.rows], dtype=float)


@dataclass(frozen=True)
class KPick:
    """What the automatic rule decided, and why.

    Attributes:
        k: the chosen k.
        reason: the decision in words.
        elbow: the kneedle elbow of the inertia curve, or None where there is none.
        candidates: the k whose silhouette is within one standard error of the best.
    """

    k: int
    reason: str
    elbow: int | None
    candidates: tuple[int, ...]


@dataclass(frozen=True)
class KChoice:
    """The result of :func:`choose_k`.

    Attributes:
        k: the chosen k.
        reason: why, in words (goes to summary.json as ``k_reason``).
        result: ``method`` fitted at k.
        sweep: the criteria over the k range (goes to sweep.csv).
        pick: the rule's details.
        sample_size: the rows the sweep ran on (all of X, or a random sample of :data:`K_SAMPLE`).
    """

    k: int
    reason: str
    result: ClusterResult
    sweep: Sweep
    pick: KPick = field(repr=False)
    sample_size: int = 0


def kneedle_elbow(ks: Sequence[int], inertia: Sequence[float], *, sensitivity: float = 1.0) -> int | None:
    """The elbow of a decreasing, convex curve by kneedle (Satopaa et al. 2011), or None.

    The same answer as ``kneed.KneeLocator(ks, inertia, S=sensitivity, curve="convex",
    direction="decreasing").knee`` (offline mode, no smoothing; the tests compare them). It is written
    out because importing ``kneed`` imports SciPy's signal module and matplotlib's pyplot, about 1 s,
    which every automatic choice of k would pay.

    Example:
        >>> kneedle_elbow([1, 2, 3, 4, 5, 6], [100, 30, 12, 10, 9, 8])
        3
    """
    x = np.asarray(ks, dtype=float)
    y = np.asarray(inertia, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    xn = (x - x.min()) / np.ptp(x)
    yn = (y - y.min()) / np.ptp(y)
    diff = (yn.max() - yn) - xn  # the difference curve of the elbow turned into a knee
    before, after = np.r_[diff[0], diff[:-1]], np.r_[diff[1:], diff[-1]]
    maxima = set(np.flatnonzero((diff >= before) & (diff >= after)).tolist())
    minima = set(np.flatnonzero((diff <= before) & (diff <= after)).tolist())
    if not maxima:
        return None
    thresholds = iter(sorted(maxima))
    step = sensitivity * abs(float(np.diff(xn).mean()))
    threshold, at, active = 0.0, 0, True
    for i in range(min(maxima), len(diff) - 1):
        if i in maxima:
            at = next(thresholds)
            threshold, active = float(diff[at]) - step, True
        if i in minima:  # after a local minimum, wait for the next local maximum
            threshold, active = 0.0, False
        if active and diff[i + 1] < threshold:
            return int(round(float(x[at])))
    return None


def pick_k(sweep: Sweep) -> KPick:
    """The automatic rule over a sweep (see the module docstring and docs/choosing-k.md).

    Raises:
        ParameterError: no k in the sweep has a silhouette (every k is 1 or the number of samples).
    """
    scored = [r for r in sweep.rows if np.isfinite(r.silhouette)]
    if not scored:
        raise ParameterError("Automatic k needs at least one k between 2 and the number of images minus 1 "
                             f"in the range; got k = {', '.join(map(str, sweep.ks))}. Widen --k-range or give --k.")
    best = max(scored, key=lambda r: (r.silhouette, -r.k))
    threshold = best.silhouette - best.silhouette_se
    candidates = tuple(r.k for r in scored if r.silhouette >= threshold)
    elbow = kneedle_elbow(sweep.ks, [r.inertia for r in sweep.rows])
    sil = {r.k: r.silhouette for r in scored}
    if elbow is not None:
        k = min(candidates, key=lambda c: (abs(c - elbow), c))
        why_elbow = f"the elbow of the inertia curve (kneedle) is at k={elbow}"
    else:
        k = min(candidates)
        why_elbow = "the inertia curve has no elbow (kneedle), so the smallest of them is taken"
    if len(candidates) == 1:
        reason = (f"k={k} has the highest silhouette ({sil[k]:.3f}); no other k in "
                  f"{sweep.ks[0]}-{sweep.ks[-1]} is within one standard error ({best.silhouette_se:.3f}) of it; "
                  f"{why_elbow}.")
    else:
        reason = (f"k={', '.join(map(str, candidates))} have a silhouette within one standard error "
                  f"({best.silhouette_se:.3f}) of the highest ({best.silhouette:.3f} at k={best.k}); {why_elbow}"
                  + (f", and k={k} is the closest to it." if elbow is not None else f": k={k}."))
    return KPick(k=k, reason=reason, elbow=elbow, candidates=candidates)


def sweep_k(X: np.ndarray, ks: Sequence[int], *, seed: int = 0, labels_true: Sequence[Any] | None = None,
            method: str = "kmeans", silhouette_sample: int = SILHOUETTE_SAMPLE, progress: Progress | None = None,
            **method_options: Any) -> Sweep:
    """Cluster ``X`` at every k in ``ks`` and compute the criteria (and scores, with labels).

    With ``method="kmeans"`` and no options, the fast warm-started sweep of the module docstring is used;
    a method with a ``fit_many`` in the registry (spectral) shares its work across k through it; any
    other method is fitted from scratch at every k.

    Args:
        X: np.ndarray of shape (n_samples, n_features).
        ks: the k to try, each in [1, n_samples].
        seed: random seed (fits and the silhouette sample).
        labels_true: ground truth, one per row of X, or None.
        method: a registered clusterer.
        silhouette_sample: the silhouette is computed on at most this many rows (seeded sample).
        progress: called as ``progress("sweep", done, total)``.

    Returns:
        :class:`Sweep`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = np.r_[rng.normal(0, 1, (50, 2)), rng.normal(20, 1, (50, 2))]
        >>> s = sweep_k(X, [2, 3, 4])
        >>> int(np.nanargmax(s.column("silhouette")))
        0
    """
    t0 = time.perf_counter()
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise ParameterError(f"X must be a non-empty 2-D array; got shape {X.shape}.")
    n = len(X)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ParameterError(f"Every k must be between 1 and the number of usable images ({n}); got {ks}.")
    if labels_true is not None and len(labels_true) != n:
        raise ParameterError(f"labels_true has {len(labels_true)} entries for {n} samples.")
    truth = None if labels_true is None else np.asarray(labels_true).astype(str)
    n_labels = 0 if truth is None else len(np.unique(truth))

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(silhouette_sample, n), replace=False))
    D = _pairwise_distances(X[idx])
    spec = get_clusterer(method)
    fits: Iterable[tuple[int, ClusterResult]]
    if method == "kmeans" and not method_options:
        fits, engine = _warm_kmeans(X, ks, rng, seed), "kmeans-warm"
    elif spec.fit_many is not None:
        fits, engine = spec.fit_many(X, ks, seed=seed, **method_options), f"{method}-shared"
    else:
        fits = ((k, cluster(X, k, method=method, seed=seed, **method_options)) for k in ks)
        engine = method

    rows = []
    fit_iter = iter(fits)
    for i, k in enumerate(ks):
        with small_problem_threads(n * X.shape[1] * k):
            _, res = next(fit_iter)  # the fits come in the order of ks
            rows.append(_sweep_row(X, k, res, D, idx, truth, n_labels))
        if progress is not None:
            progress("sweep", i + 1, len(ks))
    return Sweep(rows=rows, n_samples=n, silhouette_sample=len(idx), seed=seed,
                 engine=engine, seconds=round(time.perf_counter() - t0, 4))


def _sweep_row(X: np.ndarray, k: int, res: ClusterResult, D: np.ndarray, idx: np.ndarray, truth: np.ndarray | None,
               n_labels: int) -> SweepRow:
    """The criteria (and, with labels, the scores) of one k's clustering."""
    labels = res.labels
    sil, sil_se = _silhouette(D, labels[idx])
    defined = 2 <= len(np.unique(labels)) <= len(X) - 1
    ch, db = _calinski_harabasz_davies_bouldin(X, labels) if defined else (math.nan, math.nan)
    row: dict[str, Any] = dict(k=k, inertia=float(res.inertia), silhouette=sil, silhouette_se=sil_se,
                               calinski_harabasz=ch, davies_bouldin=db)
    if truth is not None:
        scores = evaluate(truth, labels)
        row.update(accuracy_majority=scores["accuracy_majority"], nmi=scores["nmi"], ari=scores["ari"],
                   accuracy_hungarian=scores["accuracy_hungarian"] if k == n_labels else None)
    return SweepRow(**row)


def choose_k(X: np.ndarray, k_range: tuple[int, int] = (2, 30), *, method: str = DEFAULT_METHOD, seed: int = 0,
             progress: Progress | None = None, sample_size: int = K_SAMPLE, **method_options: Any) -> KChoice:
    """Choose k automatically over ``k_range`` and fit ``method`` at that k.

    The criteria are computed on ``method``'s own clusterings at every k (:func:`sweep_k`: the warm
    k-means sweep for k-means, one shared graph and eigensolve for spectral), so the k is chosen for
    the groups the method actually finds; the chosen k is then fitted with
    ``cluster(X, k, method=method, seed=seed, **method_options)``, exactly what ``--k`` would give.
    Above ``sample_size`` rows the sweep runs on a seeded random sample of that many rows (the rule
    is the same), so its cost does not grow with n; only the final fit sees every row.

    Args:
        X: np.ndarray of shape (n_samples, n_features).
        k_range: (low, high), both inclusive; capped at n_samples - 1.
        method: the registered clusterer (default: that of ``imgclust run``).
        seed: random seed.
        progress: called as ``progress("sweep", done, total)``.
        sample_size: the sweep runs on at most this many rows (a memory-mapped X is read row by row).

    Returns:
        :class:`KChoice` with ``k``, ``reason``, ``result``, the ``sweep`` table and ``sample_size``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(10 * c, 1, (30, 2)) for c in range(3)])
        >>> choose_k(X, (2, 8)).k
        3
    """
    if not isinstance(X, np.memmap):
        X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        raise ParameterError(f"X must be a non-empty 2-D array; got shape {X.shape}.")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 100:
        raise ParameterError(f"sample_size must be a whole number >= 100; got {sample_size!r}.")
    lo, hi = k_range
    hi = min(hi, len(X) - 1)
    if lo < 1 or hi < max(lo, 2):
        raise ParameterError(f"Automatic k needs a range with a k between 2 and the number of images minus 1 "
                             f"({len(X) - 1}); got {k_range[0]}-{k_range[1]}. Give --k or widen --k-range.")
    n = len(X)
    if n > sample_size:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))
        S = ArrayAssigner(X).rows(rows)
        hi = min(hi, sample_size - 1)
    else:
        S = X
    sweep = sweep_k(S, range(lo, hi + 1), seed=seed, method=method, progress=progress, **method_options)
    pick = pick_k(sweep)
    reason = pick.reason
    if len(S) < n:
        reason += f" (The sweep ran on a random sample of {len(S):,} of the {n:,} images.)"
    result = cluster(X, pick.k, method=method, seed=seed, **method_options)
    return KChoice(k=pick.k, reason=reason, result=result, sweep=sweep, pick=pick, sample_size=len(S))


def _pairwise_distances(S: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", S, S).astype(np.float64)
    D = sq[:, None] + sq[None, :] - 2.0 * (S @ S.T).astype(np.float64)
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return np.sqrt(D)


# The three criteria are scikit-learn's definitions, computed here in NumPy: importing scikit-learn
# costs about 1.4 s, more than the whole sweep of a folder of 1000 images (the tests compare them).

def _silhouette(D: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean silhouette of the sample (distance matrix ``D``) and its standard error (NaN where undefined).

    As ``sklearn.metrics.silhouette_samples(D, labels, metric="precomputed")``: a sample alone in its
    cluster scores 0.
    """
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n, c = len(labels), len(counts)
    if not 2 <= c <= n - 1:
        return math.nan, math.nan
    sums = np.zeros((n, c))
    for j in range(c):  # distance sums to each cluster, a column at a time (no n x c x n temporary)
        sums[:, j] = D[:, inv == j].sum(axis=1)
    own = counts[inv]
    a = sums[np.arange(n), inv] / np.maximum(own - 1, 1)
    means = sums / counts
    means[np.arange(n), inv] = np.inf
    b = means.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(own > 1, (b - a) / np.maximum(a, b), 0.0)
    s = np.nan_to_num(s)
    return float(s.mean()), float(s.std(ddof=1) / math.sqrt(n))


def _calinski_harabasz_davies_bouldin(X: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Calinski-Harabasz (higher is better) and Davies-Bouldin (lower is better) of a partition of ``X``."""
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n, c = len(X), len(counts)
    X64 = np.asarray(X, dtype=np.float64)
    order = np.argsort(inv, kind="stable")
    centers = np.add.reduceat(X64[order], np.r_[0, np.cumsum(counts)[:-1]], axis=0) / counts[:, None]
    mean = X64.mean(axis=0)
    between = float((counts * ((centers - mean) ** 2).sum(axis=1)).sum())
    diff = X64 - centers[inv]
    within = float((diff ** 2).sum())
    ch = 1.0 if within == 0.0 else between * (n - c) / (within * (c - 1.0))
    spread = np.bincount(inv, weights=np.sqrt((diff ** 2).sum(axis=1)), minlength=c) / counts
    sq = (centers ** 2).sum(axis=1)
    gaps = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * centers @ centers.T, 0.0))
    if np.allclose(spread, 0.0) or np.allclose(gaps, 0.0):
        return ch, 0.0
    gaps[gaps == 0] = np.inf
    ratio = (spread[:, None] + spread[None, :]) / gaps
    np.fill_diagonal(ratio, -np.inf)
    return ch, float(np.mean(ratio.max(axis=1)))


def _warm_kmeans(X: np.ndarray, ks: Sequence[int], rng: np.random.Generator,
                 seed: int) -> Iterator[tuple[int, ClusterResult]]:
    """Yield (k, ClusterResult) for increasing k: the better of a warm start and a sample-fitted start."""
    data = ArrayAssigner(X)
    centers: np.ndarray | None = None
    labels = sq = None
    for k in ks:
        if centers is None or labels is None or sq is None:
            # The first k is the root of the whole path: give it the restarts of a from-scratch fit.
            fits = [lloyd(data, k, seed=_draw(rng), n_init=FIRST_K_RESTARTS, max_iter=SWEEP_MAX_ITER)]
        else:
            starts = (_split_clusters(X, centers, labels, sq, k, rng), _sample_fit(X, k, rng))
            fits = [lloyd(data, k, seed=_draw(rng), init=start, max_iter=SWEEP_MAX_ITER) for start in starts]
        best = min(fits, key=lambda r: r.inertia)
        centers = best.centers
        labels, sq = best.labels, best.distances.astype(np.float64) ** 2
        yield k, best


def _draw(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _sample_fit(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Centres of a k-means++ fit on a random sample (all of X when small): a fresh start that is already
    close to a fixed point, so Lloyd on all of X from it takes few iterations."""
    m = min(len(X), max(SAMPLE_PER_CLUSTER * k, SAMPLE_MIN))
    S = X if m == len(X) else X[np.sort(rng.choice(len(X), size=m, replace=False))]
    return lloyd(ArrayAssigner(S), k, seed=_draw(rng), max_iter=SWEEP_MAX_ITER).centers


def _split_clusters(X: np.ndarray, centers: np.ndarray, labels: np.ndarray, sq: np.ndarray, k: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``centers`` grown to k by splitting, one at a time, the cluster with the largest inertia in two
    (2-means on its members, as bisecting k-means does).

    A new centre placed on a data point (k-means++ style) captures almost nothing in high dimensions,
    where every point is farther from any other point than from its cluster's mean; a split does not.
    """
    grown = list(centers)
    labels = labels.copy()
    sse = np.bincount(labels, weights=sq, minlength=len(centers)).astype(np.float64)
    sizes = np.bincount(labels, minlength=len(centers))
    while len(grown) < k:
        sse[sizes < 2] = -1.0
        j = int(np.argmax(sse))
        if sse[j] <= 0:  # only identical points are left: nothing to split, Lloyd sorts it out
            grown.extend(X[rng.choice(len(X), size=k - len(grown))])
            break
        members = np.flatnonzero(labels == j)
        two = lloyd(ArrayAssigner(np.ascontiguousarray(X[members])), 2, seed=_draw(rng), max_iter=SWEEP_MAX_ITER)
        new = len(grown)
        grown[j] = two.centers[0]
        grown.append(two.centers[1])
        part = two.labels
        d = ((X[members] - two.centers[part]) ** 2).sum(axis=1)
        labels[members[part == 1]] = new
        sse[j] = d[part == 0].sum()
        sse = np.append(sse, d[part == 1].sum())
        sizes[j] = (part == 0).sum()
        sizes = np.append(sizes, (part == 1).sum())
    return np.asarray(grown, dtype=np.float32)
