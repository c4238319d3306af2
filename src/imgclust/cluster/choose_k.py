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

The automatic rule (:func:`pick_k`), documented and measured in ``docs/choosing-k.md``
(``bench/choose_k.py``), applied to the criteria of the method's own clusterings (so that k is chosen
for the groups that method finds):

1. The k with the highest silhouette, when the neighbour graph agrees: the largest gap in its
   spectrum (spectral's eigenvalues) is within one k of it.
2. Otherwise the elbow of the inertia curve (kneedle): in a folder that mixes kinds of pictures the
   clearest split is a coarse one (thumbnails against photos) that the graph does not see as its
   natural parts, and the elbow finds the finer groups.
3. Without a spectrum (k-means), the k within one standard error of the best silhouette closest to
   the elbow.

The chosen k comes with up to three next-best k and their reasons in plain words (:class:`KCandidate`).

Arrays only: no IO here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..config import DEFAULT_METHOD
from ..errors import ParameterError
from ..metrics import evaluate
from .base import ClusterResult, cluster, get_clusterer
from .kmeans import ArrayAssigner, lloyd, small_problem_threads
from .rows import Rows, as_rows, centers_and_distances

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
        labels: k -> the clustering's labels at that k, np.ndarray of shape (n_samples,), int32 (kept so
            that a candidate k can be used without fitting it again, and scored against labels later).
        eigenvalues: the leading eigenvalues of the method's graph, largest first, when the method has
            one (spectral: ``info["eigenvalues"]`` of the largest k), else empty.
        eigengaps: k -> l_k - l_(k+1), from the eigenvalues of the fit at k + 1 (whose graph is the one
            at k, or nearly: small folders use fewer neighbours at large k), where the sweep has k + 1.
    """

    rows: list[SweepRow]
    n_samples: int
    silhouette_sample: int
    seed: int
    engine: str
    seconds: float
    labels: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    eigenvalues: tuple[float, ...] = ()
    eigengaps: dict[int, float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ks(self) -> list[int]:
        return [r.k for r in self.rows]

    def column(self, name: str) -> np.ndarray:
        """One criterion over k, shape (n_ks,), float64 (None -> NaN)."""
        if name not in {f.name for f in fields(SweepRow)}:
            raise ParameterError(f"Unknown sweep column '{name}'. Columns: {', '.join(SWEEP_COLUMNS)}.")
        return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in self.rows], dtype=float)


@dataclass(frozen=True)
class KCandidate:
    """One k worth looking at, and why, in plain words.

    Attributes:
        k: the number of groups.
        reason: why this k, for a user (no jargon beyond a named criterion in brackets).
        basis: what singled it out: ``"agreement"`` (silhouette and neighbour graph agree),
            ``"separation"`` (highest silhouette), ``"detail"`` (elbow of the inertia curve, refined
            by the silhouette), ``"graph"`` (largest gap in the neighbour graph's spectrum) or
            ``"peak"`` (another local maximum of the silhouette).
        silhouette: the silhouette at k.
    """

    k: int
    reason: str
    basis: str
    silhouette: float

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.k, "reason": self.reason, "basis": self.basis, "silhouette": round(self.silhouette, 4)}


@dataclass(frozen=True)
class KPick:
    """What the automatic rule decided, and why.

    Attributes:
        k: the chosen k.
        reason: the decision in words.
        elbow: the kneedle elbow of the inertia curve, or None where there is none.
        candidates: the chosen k first, then the next-best k (the k of ``alternatives``).
        alternatives: the chosen k and up to three next-best k, each with its reason, best first.
        silhouette_k: the k with the highest silhouette.
        eigengap_k: the k after which the neighbour graph's spectrum has its largest gap, or None
            where the method has no graph (k-means).
    """

    k: int
    reason: str
    elbow: int | None
    candidates: tuple[int, ...]
    alternatives: tuple[KCandidate, ...] = ()
    silhouette_k: int | None = None
    eigengap_k: int | None = None


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
        >>> kneedle_elbow([1, 2, 3, 4, 5, 6, 7, 8], [100, 60, 30, 20, 17, 15, 14, 13])
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


ELBOW_WINDOW = 0  # the detail candidate: the best silhouette within this many k of the elbow (0: the elbow)
AGREE_WITHIN = 1  # silhouette and spectrum agree when their k differ by at most this much
MAX_ALTERNATIVES = 3


def _gaps(sweep: Sweep) -> dict[int, float]:
    vals = np.asarray(sweep.eigenvalues, dtype=float)
    return {k: float(g) for k, g in sweep.eigengaps.items() if k in sweep.ks} or \
        {k: float(vals[k - 1] - vals[k]) for k in sweep.ks if 2 <= k < len(vals)}


def eigengap_k(sweep: Sweep) -> int | None:
    """The k of the sweep after which the neighbour graph's spectrum has its largest gap, or None.

    With eigenvalues l_1 >= l_2 >= ... of the normalised adjacency (``Sweep.eigenvalues``), a graph
    of k well-separated parts has k eigenvalues near 1 and then a drop: the gap l_k - l_(k+1) is
    largest at the natural number of parts (von Luxburg 2007, section 8.3).
    """
    gaps = _gaps(sweep)
    if not gaps:
        return None
    return max(gaps, key=lambda k: (gaps[k], -k))


def silhouette_peaks(sweep: Sweep) -> list[int]:
    """The k where the silhouette is a local maximum (at least as high as both neighbours), highest first."""
    scored = [r for r in sweep.rows if np.isfinite(r.silhouette)]
    peaks = []
    for i, r in enumerate(scored):
        left = scored[i - 1].silhouette if i > 0 else -np.inf
        right = scored[i + 1].silhouette if i + 1 < len(scored) else -np.inf
        if r.silhouette >= left and r.silhouette >= right:
            peaks.append(r)
    return [r.k for r in sorted(peaks, key=lambda r: (-r.silhouette, r.k))]


def pick_k(sweep: Sweep) -> KPick:
    """The automatic rule over a sweep (see docs/choosing-k.md), with the next-best k and their reasons.

    1. The k with the highest silhouette is taken when the neighbour graph agrees with it: its
       spectrum's largest gap is within one k of it (:func:`eigengap_k`). Both then say that the
       images fall into that many groups.
    2. Otherwise (a folder that mixes kinds of pictures: the clearest split is a coarse one, e.g.
       small thumbnails against photos, which the graph does not see as its natural parts), the
       elbow of the inertia curve (kneedle): the finest grouping before more groups stop adding
       detail. Without an elbow, rule 1's k all the same.
    3. Without a spectrum (k-means), the silhouette's one-standard-error candidates with the elbow
       as the tie-break (the rule before the spectrum was used). Without an elbow, rule 1's k.

    The chosen k comes first in ``alternatives``, then up to three other k: the clearest split, the
    elbow's k, the graph's k, the other silhouette peaks, without repeats.

    Raises:
        ParameterError: no k in the sweep has a silhouette (every k is 1 or the number of samples).
    """
    scored = [r for r in sweep.rows if np.isfinite(r.silhouette)]
    if not scored:
        raise ParameterError("Automatic k needs at least one k between 2 and the number of images minus 1 "
                             f"in the range; got k = {', '.join(map(str, sweep.ks))}. Widen --ks or give --k.")
    sil = {r.k: r.silhouette for r in scored}
    lo, hi = scored[0].k, scored[-1].k
    best = max(scored, key=lambda r: (r.silhouette, -r.k))
    elbow = kneedle_elbow(sweep.ks, [r.inertia for r in sweep.rows])
    gap_k = eigengap_k(sweep)
    detail_k = None
    if elbow is not None:
        near = [r for r in scored if abs(r.k - elbow) <= ELBOW_WINDOW]
        detail_k = max(near, key=lambda r: (r.silhouette, -r.k)).k if near else None

    def clearest(k: int) -> KCandidate:
        return KCandidate(k, f"the clearest split of all: the groups are best separated at k={k} (highest "
                             f"silhouette of k={lo}-{hi}, {sil[k]:.3f}); with k smaller than the finer choices, "
                             "each group may hold several kinds of pictures", "separation", sil[k])

    def detail(k: int) -> KCandidate:
        why = f"the most detail worth having: past k={elbow}, more groups make the groups only a little tighter " \
              "(the elbow of the inertia curve)"
        if k != elbow:
            why += f", and of the k near it k={k} has the best-separated groups (silhouette {sil[k]:.3f})"
        return KCandidate(k, why, "detail", sil[k])

    def graph(k: int) -> KCandidate:
        return KCandidate(k, f"the similarity graph of the images (each linked to its nearest neighbours) splits "
                             f"most naturally into {k} parts (the largest gap in its spectrum)", "graph",
                          sil.get(k, math.nan))

    def peak(k: int) -> KCandidate:
        return KCandidate(k, f"another k where the groups stand out well from each other (a local peak of the "
                             f"silhouette, {sil[k]:.3f})", "peak", sil[k])

    chosen: KCandidate
    if gap_k is not None and abs(gap_k - best.k) <= AGREE_WITHIN:
        chosen = KCandidate(best.k, f"the images fall most clearly into {best.k} groups: the groups are best "
                                    f"separated at k={best.k} (highest silhouette of k={lo}-{hi}, "
                                    f"{best.silhouette:.3f}), and the similarity graph of the images agrees "
                                    + (f"(it too splits most naturally into {gap_k} parts)" if gap_k == best.k else
                                       f"(it splits most naturally into {gap_k} parts, one away)"),
                           "agreement", best.silhouette)
        reason = chosen.reason + "."
    elif gap_k is not None and detail_k is not None:
        chosen = detail(detail_k)
        reason = (chosen.reason + f". The clearest split, into {best.k} groups (silhouette {best.silhouette:.3f}), "
                  f"was not taken: the similarity graph splits most naturally into {gap_k} parts, not "
                  f"{best.k}, as in folders that mix kinds of pictures, where the clearest split is a coarse one.")
    elif gap_k is not None:
        chosen = clearest(best.k)
        reason = chosen.reason + "; the inertia curve has no elbow to point to a finer k."
    else:
        legacy = _one_standard_error_pick(sweep, scored, best, elbow)
        chosen = KCandidate(legacy.k, legacy.reason, "separation" if legacy.k == best.k else "detail", sil[legacy.k])
        reason = legacy.reason

    options = [chosen]
    more = [clearest(best.k)]
    if detail_k is not None:
        more.append(detail(detail_k))
    if gap_k is not None and lo <= gap_k <= hi:
        more.append(graph(gap_k))
    more += [peak(k) for k in silhouette_peaks(sweep)]
    for c in more:
        if len(options) > MAX_ALTERNATIVES:
            break
        if all(c.k != o.k for o in options):
            options.append(c)
    return KPick(k=chosen.k, reason=reason, elbow=elbow, candidates=tuple(c.k for c in options),
                 alternatives=tuple(options), silhouette_k=best.k, eigengap_k=gap_k)


def _one_standard_error_pick(sweep: Sweep, scored: list[SweepRow], best: SweepRow, elbow: int | None) -> KPick:
    """Without a spectrum: every k within one standard error of the best silhouette, the closest to the elbow."""
    threshold = best.silhouette - best.silhouette_se
    candidates = tuple(r.k for r in scored if r.silhouette >= threshold)
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
    # None: an unlabelled sample, left out of the scores (see imgclust.metrics)
    truth, n_labels = _truth(labels_true)

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
    kept: dict[int, np.ndarray] = {}
    eigenvalues: tuple[float, ...] = ()
    eigengaps: dict[int, float] = {}
    fit_iter = iter(fits)
    for i, k in enumerate(ks):
        with small_problem_threads(n * X.shape[1] * k):
            _, res = next(fit_iter)  # the fits come in the order of ks
            rows.append(_sweep_row(X, k, res, D, idx, truth, n_labels))
        kept[k] = res.labels.astype(np.int32)
        eigenvalues = tuple(float(v) for v in res.info.get("eigenvalues", ())) or eigenvalues
        if len(eigenvalues) == k and k - 1 in kept and k >= 3:
            eigengaps[k - 1] = eigenvalues[k - 2] - eigenvalues[k - 1]
        if progress is not None:
            progress("sweep", i + 1, len(ks))
    return Sweep(rows=rows, n_samples=n, silhouette_sample=len(idx), seed=seed,
                 engine=engine, seconds=round(time.perf_counter() - t0, 4), labels=kept, eigenvalues=eigenvalues,
                 eigengaps=eigengaps)


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
        row.update(_scores(truth, labels, k, n_labels))
    return SweepRow(**row)


def _truth(labels_true: Sequence[Any] | None) -> tuple[np.ndarray | None, int]:
    """Ground truth as strings, None kept for an image without a label (not scored), and the label count."""
    if labels_true is None:
        return None, 0
    truth = np.array([None if t is None else str(t) for t in labels_true], object)
    return truth, len({t for t in truth if t is not None})


def _scores(truth: np.ndarray, labels: np.ndarray, k: int, n_labels: int) -> dict[str, Any]:
    """A sweep row's score columns: one-to-one accuracy only where k equals the number of labels."""
    scores = evaluate(truth, labels)
    return dict(accuracy_majority=scores["accuracy_majority"], nmi=scores["nmi"], ari=scores["ari"],
                accuracy_hungarian=scores["accuracy_hungarian"] if k == n_labels else None)


def choose_k(X: np.ndarray | Rows, k_range: tuple[int, int] = (2, 30), *, method: str = DEFAULT_METHOD, seed: int = 0,
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
        sample_size: the sweep runs on at most this many rows (a memory-mapped X or :class:`Rows` held
            elsewhere are read only there, then block by block by the final fit).

    Returns:
        :class:`KChoice` with ``k``, ``reason``, ``result``, the ``sweep`` table and ``sample_size``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(10 * c, 1, (30, 2)) for c in range(3)])
        >>> choose_k(X, (2, 8)).k
        3
    """
    if not isinstance(X, np.memmap | Rows):
        X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        raise ParameterError(f"X must be a non-empty 2-D array; got shape {X.shape}.")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 100:
        raise ParameterError(f"sample_size must be a whole number >= 100; got {sample_size!r}.")
    lo, hi = k_range
    hi = min(hi, len(X) - 1)
    if lo < 1 or hi < max(lo, 2):
        raise ParameterError(f"Automatic k needs a range with a k between 2 and the number of images minus 1 "
                             f"({len(X) - 1}); got {k_range[0]}-{k_range[1]}. Give --k or widen --ks.")
    n = len(X)
    if n > sample_size:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))
        S = as_rows(X).take(rows)
        hi = min(hi, sample_size - 1)
    else:
        S = as_rows(X).take(np.arange(n)) if isinstance(X, Rows) else X
    sweep = sweep_k(S, range(lo, hi + 1), seed=seed, method=method, progress=progress, **method_options)
    pick = pick_k(sweep)
    reason = pick.reason
    if len(S) < n:
        reason += f" (The sweep ran on a random sample of {len(S):,} of the {n:,} images.)"
    result = cluster(X, pick.k, method=method, seed=seed, **method_options)
    return KChoice(k=pick.k, reason=reason, result=result, sweep=sweep, pick=pick, sample_size=len(S))


def score_sweep(sweep: Sweep, labels_true: Sequence[Any] | None) -> Sweep:
    """``sweep`` with its score columns (accuracies, NMI, ARI) filled from the labels it kept at every k.

    For a sweep run without labels (as the automatic k of ``run`` is). Unchanged when
    ``labels_true`` is None or the sweep's labels do not cover the same rows (a sweep on a sample).

    Args:
        sweep: a :class:`Sweep` with ``labels``.
        labels_true: ground truth, one per row the sweep clustered, or None.
    """
    truth, n_labels = _truth(labels_true)
    if truth is None or not sweep.labels or any(len(v) != len(truth) for v in sweep.labels.values()):
        return sweep
    rows = [replace(r, **_scores(truth, sweep.labels[r.k], r.k, n_labels)) if r.k in sweep.labels else r
            for r in sweep.rows]
    return replace(sweep, rows=rows)


def result_from_labels(X: np.ndarray | Rows, labels: np.ndarray, k: int, *, seed: int, method: str,
                       info: dict[str, Any] | None = None) -> ClusterResult:
    """A :class:`ClusterResult` for given labels: centres are the members' means in ``X`` (the mean of
    all of ``X`` for an empty cluster), distances and inertia measured to them.

    What spectral clustering returns for its labels; used to take a k from a sweep without fitting again.

    Args:
        X: np.ndarray of shape (n_samples, n_features), or :class:`Rows` (read block by block).
        labels: np.ndarray of shape (n_samples,), int in [0, k).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(X),) or (len(labels) and (labels.min() < 0 or labels.max() >= k)):
        raise ParameterError(f"labels must be {len(X)} integers in [0, {k}); got shape {labels.shape}.")
    centers, distances, inertia = centers_and_distances(X, labels, k)
    return ClusterResult(labels=labels, centers=centers, distances=distances, inertia=inertia, k=k, seed=seed,
                         method=method, info=dict(info or {}))


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
    """Calinski-Harabasz (higher is better) and Davies-Bouldin (lower is better) of a partition of ``X``.

    In float64, a block of :data:`_CRITERIA_ROWS` rows at a time (no float64 copy of the whole sample).
    """
    from scipy.sparse import csr_matrix

    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n, c = len(X), len(counts)
    blocks = [(s, min(s + _CRITERIA_ROWS, n)) for s in range(0, n, _CRITERIA_ROWS)]
    sums = np.zeros((c, X.shape[1]))
    for s, e in blocks:
        onehot = csr_matrix((np.ones(e - s), (inv[s:e], np.arange(e - s))), shape=(c, e - s))
        sums += onehot @ np.asarray(X[s:e], dtype=np.float64)
    centers = sums / counts[:, None]
    mean = sums.sum(axis=0) / n
    between = float((counts * ((centers - mean) ** 2).sum(axis=1)).sum())
    dist_sq = np.empty(n)
    for s, e in blocks:
        diff = np.asarray(X[s:e], dtype=np.float64) - centers[inv[s:e]]
        dist_sq[s:e] = np.einsum("ij,ij->i", diff, diff)
    within = float(dist_sq.sum())
    ch = 1.0 if within == 0.0 else between * (n - c) / (within * (c - 1.0))
    spread = np.bincount(inv, weights=np.sqrt(dist_sq), minlength=c) / counts
    sq = (centers ** 2).sum(axis=1)
    gaps = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * centers @ centers.T, 0.0))
    if np.allclose(spread, 0.0) or np.allclose(gaps, 0.0):
        return ch, 0.0
    gaps[gaps == 0] = np.inf
    ratio = (spread[:, None] + spread[None, :]) / gaps
    np.fill_diagonal(ratio, -np.inf)
    return ch, float(np.mean(ratio.max(axis=1)))


# Rows per block of the criteria above: 2,048 x 1,280 float64 is 21 MB.
_CRITERIA_ROWS = 2048


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
