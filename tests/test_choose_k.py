"""choose_k: the sweep's criteria, the kneedle rule, the automatic rule, and the warm-started engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from imgclust.cluster.choose_k import SWEEP_COLUMNS, Sweep, SweepRow, choose_k, kneedle_elbow, pick_k, sweep_k
from imgclust.errors import ParameterError


def blobs(n_centers: int, *, n: int = 240, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=n, centers=n_centers, n_features=dim, cluster_std=1.0, center_box=(-12, 12),
                      random_state=seed)
    return X.astype(np.float32), y


@pytest.mark.parametrize(("n_centers", "seed"), [(2, 0), (4, 1), (7, 2)])
def test_auto_k_finds_the_number_of_blobs(n_centers: int, seed: int) -> None:
    X, y = blobs(n_centers, seed=seed)
    choice = choose_k(X, (2, 12), seed=seed)
    assert choice.k == n_centers, choice.reason
    assert choice.result.k == n_centers
    assert choice.sweep.ks == list(range(2, 13))
    assert f"k={n_centers}" in choice.reason


def test_auto_k_on_unit_vectors() -> None:
    # Methods may L2-normalise; the rule must work on such X too (5 directions on the unit sphere).
    rng = np.random.default_rng(3)
    dirs = rng.normal(size=(5, 32))
    X = np.concatenate([d + 0.15 * np.linalg.norm(d) * rng.normal(size=(60, 32)) / np.sqrt(32) for d in dirs])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    assert choose_k(X, (2, 12)).k == 5


def test_criteria_peak_at_the_true_k() -> None:
    X, y = blobs(5, seed=4)
    s = sweep_k(X, range(2, 11), labels_true=y)
    k_of = dict(enumerate(s.ks))
    assert k_of[int(np.nanargmax(s.column("silhouette")))] == 5
    assert k_of[int(np.nanargmax(s.column("calinski_harabasz")))] == 5
    assert k_of[int(np.nanargmin(s.column("davies_bouldin")))] == 5
    assert np.all(np.diff(s.column("inertia")) < 0)
    row5 = s.rows[s.ks.index(5)]
    assert row5.accuracy_hungarian == pytest.approx(1.0)
    assert row5.nmi == pytest.approx(1.0) and row5.ari == pytest.approx(1.0)
    # One-to-one accuracy only where k equals the number of labels.
    assert [r.k for r in s.rows if r.accuracy_hungarian is not None] == [5]
    assert all(r.accuracy_majority is not None for r in s.rows)


def test_majority_accuracy_is_one_when_every_sample_is_its_own_cluster() -> None:
    X, y = blobs(3, n=30, dim=4)
    s = sweep_k(X, [2, 3, 30], labels_true=y)
    assert s.rows[-1].accuracy_majority == 1.0
    assert math.isnan(s.rows[-1].silhouette)  # undefined at k = n


def test_sweep_inertia_matches_fitting_every_k_from_scratch() -> None:
    X, _ = blobs(6, n=300, dim=24, seed=5)
    X += np.random.default_rng(0).normal(scale=3.0, size=X.shape).astype(np.float32)  # overlapping blobs
    s = sweep_k(X, range(2, 10))
    for row in s.rows:
        ref = KMeans(n_clusters=row.k, n_init=10, random_state=0).fit(X).inertia_
        assert row.inertia <= 1.02 * ref, row.k


def test_sweep_is_deterministic_and_seeded() -> None:
    X, _ = blobs(4, seed=6)
    X += np.random.default_rng(1).normal(scale=4.0, size=X.shape).astype(np.float32)
    a, b = sweep_k(X, range(2, 8), seed=1), sweep_k(X, range(2, 8), seed=1)
    assert [r.as_row() for r in a.rows] == [r.as_row() for r in b.rows]


def test_sweep_with_another_method_fits_every_k_through_the_registry() -> None:
    X, _ = blobs(3, n=90, dim=4)
    s = sweep_k(X, [2, 3], method="kmeans", n_init=2)
    assert s.engine == "kmeans" and s.ks == [2, 3]
    assert sweep_k(X, [2, 3]).engine == "kmeans-warm"


@pytest.mark.parametrize("n", [60, 700])  # 60: the neighbour cap n // (2 k) changes the graph with k
def test_spectral_sweep_shares_one_graph_and_equals_fitting_every_k(n: int) -> None:
    from imgclust.cluster.spectral import fit_spectral, fit_spectral_many

    X, _ = blobs(4, n=n, dim=8, seed=3)
    X = X + np.random.default_rng(0).normal(0, 4, X.shape).astype(np.float32)  # one connected graph
    ks = [1, 2, 3, 4, 6, 9, n]
    many = list(fit_spectral_many(X, ks, seed=2, n_neighbors=12))
    assert [k for k, _ in many] == ks
    for k, res in many:
        single = fit_spectral(X, k, seed=2, n_neighbors=12)
        assert np.array_equal(res.labels, single.labels), k
        np.testing.assert_allclose(res.centers, single.centers, rtol=1e-5, atol=1e-6)
        assert res.info["n_neighbors"] == single.info["n_neighbors"]
        np.testing.assert_allclose(res.info["eigenvalues"], single.info["eigenvalues"], atol=1e-5)
    s = sweep_k(X, ks[1:-1], method="spectral", seed=2, n_neighbors=12)
    assert s.engine == "spectral-shared" and s.ks == ks[1:-1]


def test_auto_k_scores_the_method_s_own_groups() -> None:
    """Two moons: k-means' round groups make k-means' criteria favour many clusters, while the groups
    spectral finds are best at k = 2; the criteria are those of the method that will be used.

    (The rule then takes spectral's elbow, 4: the moons' smooth kNN graph has no gap that agrees with
    the silhouette's 2, as a folder mixing kinds of pictures has not; 2 is the next candidate.)"""
    from sklearn.datasets import make_moons

    X, y = make_moons(400, noise=0.06, random_state=0)
    by_kmeans, by_spectral = choose_k(X, (2, 10), method="kmeans"), choose_k(X, (2, 10), method="spectral")
    assert by_spectral.sweep.engine == "spectral-shared" and by_kmeans.sweep.engine == "kmeans-warm"
    assert by_spectral.pick.silhouette_k == 2 < by_kmeans.pick.silhouette_k
    assert by_spectral.pick.candidates[:2] == (4, 2) and by_kmeans.k > 4
    assert by_spectral.result.method == "spectral"


def test_sweep_row_as_csv_row_has_the_columns_and_blanks() -> None:
    row = SweepRow(k=3, inertia=12.3456789, silhouette=math.nan, silhouette_se=math.nan, calinski_harabasz=1.0,
                   davies_bouldin=2.0)
    out = row.as_row()
    assert tuple(out) == SWEEP_COLUMNS
    assert out["k"] == 3 and out["inertia"] == "12.3457" and out["silhouette"] == ""
    assert out["accuracy_majority"] == "" and out["accuracy_hungarian"] == ""


@pytest.mark.parametrize(("ys", "elbow"), [
    ([100, 30, 12, 10, 9, 8, 7.5, 7], 3),
    ([1000, 700, 400, 120, 100, 95, 92, 90], 4),
    ([50, 20, 18, 17, 16, 15, 14, 13], 2),
])
def test_kneedle_on_hand_made_curves(ys: list[float], elbow: int) -> None:
    assert kneedle_elbow(range(1, len(ys) + 1), ys) == elbow


def test_kneedle_finds_no_elbow_in_a_straight_line_or_too_few_points() -> None:
    assert kneedle_elbow(range(1, 9), [80 - 10 * i for i in range(8)]) is None
    assert kneedle_elbow([2, 3], [10, 5]) is None


def test_kneedle_uses_the_k_values_not_their_positions() -> None:
    # Unevenly spaced ks (2, 16, 64, ...): the elbow is a k, not an index.
    assert kneedle_elbow([2, 4, 8, 16, 32, 64], [100, 40, 20, 15, 12, 10]) in (4, 8)


def fake_sweep(sil: dict[int, float], inertia: dict[int, float], se: float = 0.01) -> Sweep:
    rows = [SweepRow(k=k, inertia=inertia[k], silhouette=sil[k], silhouette_se=se, calinski_harabasz=1.0,
                     davies_bouldin=1.0) for k in sorted(sil)]
    return Sweep(rows=rows, n_samples=1000, silhouette_sample=1000, seed=0, engine="test", seconds=0.0)


INERTIA = {k: 1000 / k + (400 if k < 5 else 0) for k in range(2, 11)}  # elbow at 5


def test_rule_takes_the_clear_silhouette_maximum() -> None:
    sil = {k: 0.1 for k in range(2, 11)} | {8: 0.3}
    pick = pick_k(fake_sweep(sil, INERTIA))
    assert pick.k == 8 and pick.candidates[0] == 8
    assert "highest silhouette (0.300)" in pick.reason


def test_rule_breaks_near_ties_by_the_elbow() -> None:
    # 4, 5 and 6 are within one standard error of the best (6); the inertia elbow is at 5.
    sil = {k: 0.1 for k in range(2, 11)} | {4: 0.295, 5: 0.292, 6: 0.3}
    sweep = fake_sweep(sil, INERTIA)
    assert kneedle_elbow(sweep.ks, sweep.column("inertia")) == 5
    pick = pick_k(sweep)
    assert pick.elbow == 5 and pick.k == 5
    assert "k=4, 5, 6 have a silhouette within one standard error" in pick.reason
    assert "within one standard error" in pick.reason and "elbow" in pick.reason


def test_rule_without_an_elbow_takes_the_smallest_near_tie() -> None:
    sil = {k: 0.1 for k in range(2, 11)} | {4: 0.295, 6: 0.3}
    line = {k: 100.0 - k for k in range(2, 11)}
    pick = pick_k(fake_sweep(sil, line))
    assert pick.elbow is None and pick.k == 4


def test_rule_needs_a_k_with_a_silhouette() -> None:
    s = Sweep(rows=[SweepRow(k=1, inertia=1.0, silhouette=math.nan, silhouette_se=math.nan,
                             calinski_harabasz=math.nan, davies_bouldin=math.nan)],
              n_samples=5, silhouette_sample=5, seed=0, engine="test", seconds=0.0)
    with pytest.raises(ParameterError, match="Automatic k needs"):
        pick_k(s)


def test_choose_k_caps_the_range_and_explains_an_impossible_one() -> None:
    X, _ = blobs(2, n=10, dim=3)
    assert choose_k(X, (2, 30)).sweep.ks == list(range(2, 10))
    with pytest.raises(ParameterError, match=r"between 2 and the number of images minus 1 \(1\); got 2-30"):
        choose_k(X[:2], (2, 30))


def test_sweep_rejects_k_larger_than_the_data() -> None:
    X, _ = blobs(2, n=10, dim=3)
    with pytest.raises(ParameterError, match="between 1 and the number of usable images"):
        sweep_k(X, [2, 11])


@pytest.mark.parametrize("seed", range(12))
def test_criteria_equal_scikit_learns(seed: int, monkeypatch: pytest.MonkeyPatch):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_samples

    from imgclust.cluster import choose_k
    from imgclust.cluster.choose_k import _calinski_harabasz_davies_bouldin, _pairwise_distances, _silhouette

    monkeypatch.setattr(choose_k, "_CRITERIA_ROWS", 1 + seed * 11)  # in blocks of rows (one row, some, all)

    rng = np.random.default_rng(seed)
    n, d, k = int(rng.integers(5, 300)), int(rng.integers(1, 40)), int(rng.integers(2, 12))
    X = (rng.normal(size=(n, d)) + rng.integers(0, 4, size=(n, 1))).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    labels[0] = k + 5  # a cluster of one sample (its silhouette is 0)
    if len(np.unique(labels)) >= n:
        labels[1] = labels[2]
    sil, se = _silhouette(_pairwise_distances(X), labels)
    ref = silhouette_samples(X.astype(np.float64), labels)
    assert sil == pytest.approx(ref.mean(), abs=1e-5)
    assert se == pytest.approx(ref.std(ddof=1) / np.sqrt(n), abs=1e-5)
    ch, db = _calinski_harabasz_davies_bouldin(X, labels)
    assert ch == pytest.approx(calinski_harabasz_score(X, labels), rel=1e-5)
    assert db == pytest.approx(davies_bouldin_score(X, labels), rel=1e-5)


def _curves():
    rng = np.random.default_rng(0)
    for i in range(300):
        ks = np.arange(int(rng.integers(2, 4)), int(rng.integers(6, 40)))
        kind = i % 4
        if kind == 0:  # power law plus a linear tail and noise
            y = 1000 * ks.astype(float) ** -rng.uniform(0.2, 2.5) + rng.uniform(0, 5) * (ks.max() - ks)
            y = y + rng.normal(0, rng.uniform(0, 3), len(ks))
        elif kind == 1:  # exponential decay
            y = 500 * np.exp(-ks / rng.uniform(1, 10)) + rng.normal(0, 1, len(ks))
        elif kind == 2:  # real-looking inertia: slowly flattening, ties and plateaus
            y = np.round(np.cumsum(rng.exponential(1, len(ks))[::-1])[::-1], 0)
        else:  # arbitrary
            y = rng.normal(0, 10, len(ks))
        yield ks, y
    yield np.arange(1, 7), np.array([100, 30, 12, 10, 9, 8.0])
    yield np.arange(2, 10), np.linspace(10, 1, 8)  # a straight line: no elbow


def test_kneedle_elbow_equals_kneed():
    import warnings

    from kneed import KneeLocator

    from imgclust.cluster.choose_k import kneedle_elbow

    found = 0
    for ks, y in _curves():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            knee = KneeLocator(ks, y, S=1.0, curve="convex", direction="decreasing").knee
        expected = None if knee is None else int(round(float(knee)))
        assert kneedle_elbow(ks, y) == expected, (ks.tolist(), y.tolist())
        found += expected is not None
    assert found > 100  # most curves have an elbow: the comparison is not all None == None
