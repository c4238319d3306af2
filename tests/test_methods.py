"""Every registered clusterer keeps the result contract; spectral beats k-means where the answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgclust.cluster import ClusterResult, cluster, get_clusterer, list_clusterers
from imgclust.config import DEFAULT_METHOD
from imgclust.errors import ParameterError
from imgclust.metrics import accuracy_hungarian

METHODS = [spec.name for spec in list_clusterers()]


def lift(P: np.ndarray, dim: int = 32, offset: float = 10.0, seed: int = 0) -> np.ndarray:
    """Put 2-D points into ``dim`` dimensions like CNN vectors: a random orthogonal embedding of the
    points plus a large common offset along a direction orthogonal to them (so cosine similarity
    measures the 2-D geometry)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (P @ Q[:, :2].T + offset * Q[:, 2]).astype(np.float32)


def two_moons(n: int = 300, noise: float = 0.06, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    y = np.arange(n) % 2
    P = np.where(y[:, None] == 0, np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
    return lift(P + rng.normal(0, noise, P.shape)), y


def rings(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A disc inside a ring: nested groups that no straight cut separates."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    r = np.where(y == 0, rng.uniform(0, 0.3, n), rng.uniform(0.9, 1.1, n))
    a = rng.uniform(0, 2 * np.pi, n)
    return lift(np.c_[r * np.cos(a), r * np.sin(a)]), y


def elongated(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three long parallel bars: k-means cuts across them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    P = np.c_[rng.uniform(-2, 2, n), y * 0.6 + rng.normal(0, 0.05, n)]
    return lift(P), y


def blobs(n: int = 60, k: int = 3, dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, (k, dim)) + 20
    return (centers[np.arange(n) % k] + rng.normal(0, 0.5, (n, dim))).astype(np.float32)


@pytest.mark.parametrize("data", [two_moons, rings, elongated], ids=["two-moons", "rings", "elongated"])
def test_default_method_finds_shapes_that_kmeans_cuts(data):
    X, y = data()
    k = len(np.unique(y))
    acc_default = accuracy_hungarian(y, cluster(X, k, method=DEFAULT_METHOD, seed=0).labels)
    acc_kmeans = accuracy_hungarian(y, cluster(X, k, method="kmeans", seed=0).labels)
    assert acc_default >= 0.97
    assert acc_kmeans <= 0.85
    assert DEFAULT_METHOD != "kmeans"


@pytest.mark.parametrize("method", METHODS)
def test_result_contract(method):
    X = blobs()
    r = cluster(X, 3, method=method, seed=3)
    assert isinstance(r, ClusterResult)
    assert r.method == method and r.k == 3 and r.seed == 3
    assert r.labels.shape == (60,) and r.labels.dtype == np.int64
    assert r.labels.min() >= 0 and r.labels.max() < 3
    assert r.centers.shape == (3, 8) and r.centers.dtype == np.float32
    assert r.distances.shape == (60,) and r.distances.dtype == np.float32
    assert np.all(r.distances >= 0)
    assert r.sizes.sum() == 60
    # Centres summarise the members, in the input space: the distances are to the own centre (k-means
    # computes them with one float32 GEMM, so allow its cancellation error for vectors far from 0).
    np.testing.assert_allclose(r.distances, np.linalg.norm(X - r.centers[r.labels], axis=1), rtol=1e-3, atol=0.05)
    np.testing.assert_allclose(r.inertia, float((r.distances.astype(np.float64) ** 2).sum()), rtol=1e-3)
    # Assignment of new vectors (nearest centre) reproduces the labels on well-separated data.
    nearest = np.argmin(((X[:, None, :] - r.centers[None]) ** 2).sum(axis=2), axis=1)
    np.testing.assert_array_equal(nearest, r.labels)
    json.dumps(r.info)  # saved with models: must be JSON-able


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_labels(method):
    X, _ = two_moons(n=200, noise=0.1)
    a = cluster(X, 4, method=method, seed=7)
    b = cluster(X, 4, method=method, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)


@pytest.mark.parametrize("method", METHODS)
def test_k_equals_one(method):
    X = blobs(n=12)
    r = cluster(X, 1, method=method)
    assert r.labels.tolist() == [0] * 12
    np.testing.assert_allclose(r.centers[0], X.mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_k_equals_n(method):
    X = blobs(n=9)
    r = cluster(X, 9, method=method)
    assert sorted(r.labels.tolist()) == list(range(9))
    np.testing.assert_allclose(r.distances, 0, atol=0.05)  # float32 GEMM distances (see above)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_inputs(method):
    assert cluster(np.ones((1, 4)), 1, method=method).labels.tolist() == [0]
    assert sorted(cluster(np.eye(3) + 1, 2, method=method).sizes.tolist()) == [1, 2]


def test_spectral_uses_a_disconnected_graph():
    # Two far-apart groups of 15: the 10-NN graph has two components, the split is exact.
    X = np.r_[blobs(n=15, k=1, seed=1), blobs(n=15, k=1, seed=2) * [1, -1, 1, -1, 1, -1, 1, -1]]
    r = cluster(X, 2, method="spectral")
    assert sorted(r.sizes.tolist()) == [15, 15]
    assert len(set(r.labels[:15])) == 1
    assert r.info["eigenvalues"][1] == pytest.approx(1.0)


def test_spectral_graph_weighs_mutual_neighbours_twice_one_sided_ones():
    from imgclust.cluster.spectral import knn_graph

    # Unit vectors at 0, 10, 25 and 90 degrees, one neighbour each: 0 and 10 choose each other;
    # 25 chooses 10 and 90 chooses 25, neither chosen back.
    angles = np.deg2rad([0, 10, 25, 90])
    Z = np.c_[np.cos(angles), np.sin(angles)].astype(np.float32)
    W = knn_graph(Z, 1).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 1.0
    expected[2, 1] = expected[1, 2] = 0.5
    expected[3, 2] = expected[2, 3] = 0.5
    np.testing.assert_array_equal(W, expected)


def test_spectral_options_are_checked_and_recorded():
    X = blobs()
    r = cluster(X, 3, method="spectral", n_neighbors=5, center=True)
    assert r.info["n_neighbors"] == 5 and r.info["center"] is True and r.info["assign"] == "nearest_center"
    with pytest.raises(ParameterError, match="n_neighbors"):
        cluster(X, 3, method="spectral", n_neighbors=0)


def test_unknown_method_suggests_a_name():
    with pytest.raises(ParameterError, match="Did you mean 'spectral'"):
        get_clusterer("spectra")
