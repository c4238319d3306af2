"""The neighbour module: exact search, the calibrated approximate index, determinism and checks."""

from __future__ import annotations

import numpy as np
import pytest

from imgclust.errors import ParameterError
from imgclust.neighbors import NeighborIndex, knn, unit_rows


def _clusters(n: int, d: int = 32, c: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    return unit_rows(centres[rng.integers(c, size=n)] + 0.6 * rng.normal(size=(n, d)))


def test_unit_rows_normalises_and_keeps_zero_rows():
    Z = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    assert Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), [1, 0, 1], atol=1e-6)


def test_exact_knn_matches_brute_force_and_never_returns_self():
    Z = _clusters(300)
    sims, idx = knn(Z, 5)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    expected = np.argsort(-S, axis=1, kind="stable")[:, :5]
    assert idx.dtype == np.int64 and sims.dtype == np.float32 and idx.shape == (300, 5)
    np.testing.assert_allclose(sims, np.take_along_axis(S, expected, axis=1), atol=1e-5)
    assert not (idx == np.arange(300)[:, None]).any()
    assert (np.diff(sims, axis=1) <= 1e-7).all()  # most similar first


def test_approximate_knn_recall_is_at_least_095_and_deterministic():
    Z = _clusters(4000, d=48)
    exact_sims, exact_idx = knn(Z, 10)
    sims, idx = knn(Z, 10, exact_below=1000, seed=3)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_idx.tolist(), idx.tolist(), strict=True)])
    assert recall >= 0.95
    assert not (idx == np.arange(len(Z))[:, None]).any()
    again = knn(Z, 10, exact_below=1000, seed=3)
    np.testing.assert_array_equal(idx, again[1])
    np.testing.assert_array_equal(sims, again[0])


def test_index_searches_new_queries_and_reports_its_calibration():
    both = _clusters(3050, d=48)
    Z, Q = both[:3000], both[3000:]
    index = NeighborIndex(Z, exact_below=1000, seed=0, n_neighbors=5)
    assert len(index) == 3000 and not index.exact and index.recall >= 0.95 and 1 <= index.nprobe <= index.nlist
    sims, idx = index.search(Q, 5)
    exact = NeighborIndex(Z).search(Q, 5)
    assert NeighborIndex(Z).exact
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx.tolist(), exact[1].tolist(), strict=True)]) >= 0.9
    np.testing.assert_allclose(sims[:, 0], exact[0][:, 0], atol=1e-5)


def test_identical_copies_are_each_others_neighbours():
    Z = unit_rows(np.repeat(np.eye(3), 4, axis=0))
    sims, idx = knn(Z, 3)
    assert (idx // 4 == np.arange(12)[:, None] // 4).all()
    np.testing.assert_allclose(sims, 1.0)


@pytest.mark.parametrize("m", [0, 4, 2.0, True])
def test_neighbour_count_is_checked(m):
    with pytest.raises(ParameterError, match="n_neighbors must be a whole number between 1 and 3"):
        knn(unit_rows(np.eye(4)), m)


def test_unstructured_data_caps_the_lists_visited_and_says_so(caplog):
    from imgclust import neighbors

    rng = np.random.default_rng(0)
    Z = neighbors.unit_rows(rng.standard_normal((30_000, 64)).astype(np.float32))
    with caplog.at_level("WARNING", logger="imgclust.neighbors"):
        index = neighbors.NeighborIndex(Z, n_neighbors=10)
    assert index.nprobe <= neighbors.MAX_NPROBE < index.nlist
    assert index.recall < neighbors.TARGET_RECALL
    assert "little structure" in caplog.text


def test_wide_large_data_is_searched_in_a_projection_and_ranked_exactly():
    from imgclust import neighbors

    # Like real embeddings, most of the variance lies in a few dozen directions (a decaying spectrum);
    # on real Lite0 vectors of imagenette and CIFAR-10 the recall of this path was 0.95-0.97.
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((6000, 48)).astype(np.float32) * np.linspace(3, 0.3, 48).astype(np.float32)
    X = latent @ rng.standard_normal((48, 300)).astype(np.float32) + 0.05 * rng.standard_normal((6000, 300))
    Z = unit_rows(X)
    exact_sims, exact_idx = knn(Z, 10, exact_below=10**9)
    sims, idx = knn(Z, 10, exact_below=1000)  # approximate path: 300 > PROJECT_DIMS, so projected
    assert Z.shape[1] > neighbors.PROJECT_DIMS
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_idx.tolist(), idx.tolist(), strict=True)])
    assert recall >= 0.9
    # The similarities returned are the exact cosines of the neighbours returned, most similar first.
    np.testing.assert_allclose(sims, np.einsum("ij,ikj->ik", Z, Z[idx]), atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6) and not np.any(idx == np.arange(len(Z))[:, None])
