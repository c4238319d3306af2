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


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
def test_an_index_without_its_rows_searches_blocks_of_them_as_it_searched_all(half: bool) -> None:
    """What a Dask worker gets: the index built block by block (no rows kept, so it pickles small),
    searching the block of rows it reads; every block's answer equals the search of all rows, row for row."""
    import pickle

    from imgclust.neighbors import IVFBuilder, ivf_sample_rows

    Z = _clusters(3000, d=48)
    whole = NeighborIndex(Z, exact_below=1000, seed=2, n_neighbors=8, half_precision=half).knn_self(8)
    train, queries = ivf_sample_rows(3000, 2)
    builder = IVFBuilder(3000, Z if train is None else Z[train], Z[queries], seed=2, n_neighbors=8, half_precision=half)
    builder.add(Z)
    built = builder.finish()
    lean = pickle.loads(pickle.dumps(built))
    assert built.Z is None and len(lean) == 3000 and lean.n_features == 48
    assert len(pickle.dumps(lean)) < Z.nbytes * (0.6 if half else 1.1)
    for start in (0, 1234, 2900):
        sims, idx = lean.search_self(start, Z[start:start + 100], 8)
        np.testing.assert_array_equal(idx, whole[1][start:start + 100])
        np.testing.assert_array_equal(sims, whole[0][start:start + 100])
        assert not (idx == np.arange(start, start + len(idx))[:, None]).any()
    with pytest.raises(RuntimeError, match="holds no rows"):
        lean.knn_self(8)
    exact = NeighborIndex(Z[:500])  # an exact index searches its own rows
    np.testing.assert_array_equal(exact.search_self(100, Z[100:150], 4)[1], exact.knn_self(4)[1][100:150])


def test_an_index_built_from_blocks_equals_one_built_from_all_rows() -> None:
    """What a large run's clean search does: the rows come block by block and are never all held; the
    calibration's exact neighbours are merged block by block; the index is the same as from all rows."""
    from imgclust.neighbors import IVFBuilder, _exact_search, ivf_sample_rows

    Z = _clusters(3000, d=48)
    whole = NeighborIndex(Z, exact_below=1000, seed=5, n_neighbors=6, half_precision=True)
    train, queries = ivf_sample_rows(3000, 5)
    builder = IVFBuilder(3000, Z if train is None else Z[train], Z[queries], seed=5, n_neighbors=6, half_precision=True)
    for start, stop in [(0, 7), (7, 1000), (1000, 2999), (2999, 3000)]:  # uneven blocks, one of a single row
        builder.add(Z[start:stop])
    np.testing.assert_array_equal(builder.truth_idx, _exact_search(Z, Z[queries], 7)[1])
    built = builder.finish()
    assert (built.nlist, built.nprobe, built.recall, len(built)) == (whole.nlist, whole.nprobe, whole.recall, 3000)
    for a, b in zip(built.search(Z[:200], 6), whole.search(Z[:200], 6), strict=True):
        np.testing.assert_array_equal(a, b)
    short = IVFBuilder(3000, Z if train is None else Z[train], Z[queries], seed=5, n_neighbors=6)
    short.add(Z[:100])
    with pytest.raises(ValueError, match="100 rows added to an index built for 3000"):
        short.finish()


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
