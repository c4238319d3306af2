import numpy as np
import pytest
from sklearn.datasets import make_blobs

from imgclust.cluster import cluster, list_clusterers
from imgclust.cluster.kmeans import ArrayAssigner, lloyd
from imgclust.errors import ParameterError
from imgclust.metrics import accuracy_hungarian


def test_kmeans_recovers_blobs_and_result_contract():
    X, y = make_blobs(n_samples=600, centers=4, n_features=16, cluster_std=1.0, random_state=3)
    r = cluster(X.astype(np.float32), 4, method="kmeans", seed=0)
    assert accuracy_hungarian(y, r.labels) == 1.0
    assert r.labels.shape == (600,) and r.centers.shape == (4, 16) and r.distances.shape == (600,)
    assert r.centers.dtype == np.float32 and r.distances.dtype == np.float32
    assert r.k == 4 and r.method == "kmeans" and r.sizes.sum() == 600
    # distances are Euclidean distances to the own centre; inertia is their squared sum
    d = np.linalg.norm(X - r.centers[r.labels], axis=1)
    np.testing.assert_allclose(r.distances, d, rtol=1e-3, atol=1e-3)
    assert r.inertia == pytest.approx(float((d**2).sum()), rel=1e-3)
    assert r.history and r.history[-1] >= r.inertia * (1 - 1e-6)


def test_same_seed_same_labels_other_seed_runs():
    X, _ = make_blobs(n_samples=300, centers=6, n_features=5, random_state=1)
    a, b = cluster(X, 6, method="kmeans", seed=7), cluster(X, 6, method="kmeans", seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_chunked_assignment_equals_whole():
    X, _ = make_blobs(n_samples=1000, centers=5, n_features=8, random_state=2)
    X = X.astype(np.float32)
    small = lloyd(ArrayAssigner(X, chunk_size=37), 5, seed=1)
    whole = lloyd(ArrayAssigner(X, chunk_size=10_000), 5, seed=1)
    np.testing.assert_array_equal(small.labels, whole.labels)


def test_k_edges_and_errors():
    X = np.random.default_rng(0).normal(size=(10, 3))
    assert cluster(X, 1).sizes.tolist() == [10]
    assert sorted(cluster(X, 10).sizes.tolist()) == [1] * 10
    with pytest.raises(ParameterError, match=r"between 1 and the number of usable images \(10\); got 11"):
        cluster(X, 11)
    with pytest.raises(ParameterError, match="whole number"):
        cluster(X, 2.5)
    with pytest.raises(ParameterError, match="Did you mean 'kmeans'"):
        cluster(X, 2, method="kmean")


def test_registry_lists_kmeans():
    assert "kmeans" in [s.name for s in list_clusterers()]


def test_default_method_is_the_default_of_run():
    from imgclust.cluster.choose_k import choose_k
    from imgclust.config import DEFAULT_METHOD, RunConfig

    X, _ = make_blobs(n_samples=120, centers=3, n_features=6, random_state=0)
    assert cluster(X, 3).method == RunConfig().method == DEFAULT_METHOD == "spectral"
    assert choose_k(X, (2, 4)).result.method == DEFAULT_METHOD
