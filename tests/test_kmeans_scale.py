"""k-means at scale: sampled iterations, memory-mapped data, float32 k-means++ seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgclust.cluster import cluster
from imgclust.cluster.kmeans import AUTO_SUBSAMPLE_FROM, ArrayAssigner, fit_kmeans, kmeans_plusplus
from imgclust.errors import ParameterError


def blobs(n: int, d: int, k: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32) * 4
    labels = rng.integers(0, k, n)
    return (centers[labels] + rng.standard_normal((n, d)).astype(np.float32) * spread).astype(np.float32), labels


def test_kmeans_plusplus_seeds_one_centre_per_separated_blob() -> None:
    X, labels = blobs(2000, 16, 8, spread=0.1)
    seeds = kmeans_plusplus(X, 8, np.random.default_rng(1))
    assert seeds.shape == (8, 16) and seeds.dtype == np.float32
    nearest_blob = {int(labels[np.flatnonzero((X == s).all(axis=1))[0]]) for s in seeds}
    assert nearest_blob == set(range(8))


def test_kmeans_plusplus_with_fewer_distinct_rows_than_k() -> None:
    X = np.r_[np.zeros((5, 3)), np.ones((1, 3))].astype(np.float32)
    seeds = kmeans_plusplus(X, 4, np.random.default_rng(0))
    assert seeds.shape == (4, 3) and {tuple(r) for r in seeds} == {(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)}


def test_sampled_iterations_reach_nearly_the_exact_inertia_and_label_every_row() -> None:
    X, _ = blobs(6000, 24, 12, spread=0.7)
    exact = fit_kmeans(X, 12, seed=0, n_init=2, max_points_per_centroid=None)
    sampled = fit_kmeans(X, 12, seed=0, n_init=2, max_points_per_centroid=200)
    assert sampled.info["n_train"] == 2400 and exact.info["n_train"] == 6000
    assert sampled.labels.shape == (6000,) and sampled.distances.shape == (6000,)
    assert sampled.inertia == pytest.approx(float((sampled.distances.astype(np.float64) ** 2).sum()), rel=1e-4)
    assert sampled.inertia <= exact.inertia * 1.01
    again = fit_kmeans(X, 12, seed=0, n_init=2, max_points_per_centroid=200)
    np.testing.assert_array_equal(again.labels, sampled.labels)


def test_auto_subsamples_only_large_data() -> None:
    small, _ = blobs(500, 4, 3)
    assert fit_kmeans(small, 3, n_init=1).info["max_points_per_centroid"] is None
    large = np.random.default_rng(0).standard_normal((AUTO_SUBSAMPLE_FROM, 2)).astype(np.float32)
    r = fit_kmeans(large, 2, n_init=1, max_iter=3)
    assert r.info["max_points_per_centroid"] == 256 and r.info["n_train"] == 512
    assert r.labels.shape == (AUTO_SUBSAMPLE_FROM,)
    with pytest.raises(ParameterError, match="max_points_per_centroid"):
        fit_kmeans(small, 3, max_points_per_centroid=0)
    with pytest.raises(ParameterError, match="max_points_per_centroid"):
        fit_kmeans(small, 3, max_points_per_centroid="many")


def test_memory_mapped_file_gives_the_same_result_as_the_array(tmp_path: Path) -> None:
    X, _ = blobs(3000, 20, 5, spread=1.5)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    chunks = [c for _, c in ArrayAssigner(mm, chunk_size=700).chunks()]
    assert [len(c) for c in chunks] == [700, 700, 700, 700, 200]
    np.testing.assert_array_equal(np.concatenate(chunks), X)
    idx = np.array([0, 5, 6, 2999, 1234])
    np.testing.assert_array_equal(ArrayAssigner(mm).rows(idx), X[idx])
    from_disk = fit_kmeans(mm, 5, seed=3, chunk_size=700, max_points_per_centroid=100)
    in_memory = fit_kmeans(X, 5, seed=3, chunk_size=700, max_points_per_centroid=100)
    np.testing.assert_array_equal(from_disk.labels, in_memory.labels)
    assert from_disk.inertia == in_memory.inertia


def test_registry_passes_the_option_through() -> None:
    X, _ = blobs(400, 6, 4)
    r = cluster(X, 4, method="kmeans", seed=0, max_points_per_centroid=30)
    assert r.method == "kmeans" and r.info["n_train"] == 120 and r.sizes.sum() == 400
