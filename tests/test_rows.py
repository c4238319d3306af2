"""Rows held elsewhere: every pass over all rows goes block by block and gives what the in-memory path gives."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from imgclust.cluster import cluster, spectral
from imgclust.cluster import rows as rows_module
from imgclust.cluster.choose_k import choose_k, result_from_labels
from imgclust.cluster.kmeans import ArrayAssigner, Assigner
from imgclust.cluster.rows import ArrayRows, Rows, as_rows, centers_and_distances
from imgclust.neighbors import NeighborIndex, unit_rows
from imgclust.outputs import report
from imgclust.store.results import vectors_id


class ElsewhereRows(Rows):
    """Rows as a remote holder serves them: each block's function and arguments go through pickle (as
    to a Dask worker), and every read is counted, so a test can see that only the sample was taken."""

    def __init__(self, X: np.ndarray) -> None:
        self._X = X
        self.n, self.dim = X.shape
        self.taken = 0

    def take(self, idx: np.ndarray) -> np.ndarray:
        self.taken += len(idx)
        return self._X[np.asarray(idx)].astype(np.float32)

    def map_blocks(self, fn: Any, *shared: Any, split: Sequence[np.ndarray] = ()) -> Iterator[Any]:
        fn, shared = pickle.loads(pickle.dumps((fn, shared)))
        for start, stop in self.blocks():
            yield fn(start, self._X[start:stop].copy(), *(a[start:stop] for a in split), *shared)

    def assigner(self, chunk_size: int) -> Assigner:
        return ArrayAssigner(self._X, chunk_size)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "BLOCK_ROWS", 97)  # several blocks, none aligned with anything


def blobs(n: int = 900, d: int = 24, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0, 0.5, (n, d))).astype(np.float32)


def test_array_rows_blocks_cover_every_row_once(small_blocks: None) -> None:
    X = blobs(300)
    rows = as_rows(X)
    assert isinstance(rows, ArrayRows) and as_rows(rows) is rows
    assert rows.shape == (300, 24) and len(rows) == 300
    starts = [s for s, _ in rows.blocks()]
    assert starts == [0, 97, 194, 291]
    got = np.concatenate(list(rows.map_blocks(lambda start, block, piece: block + piece[:, None], split=(np.arange(300),))))
    np.testing.assert_array_equal(got, X + np.arange(300)[:, None])
    np.testing.assert_array_equal(rows.take(np.array([3, 299])), X[[3, 299]])


def test_centers_and_distances_are_the_members_means(small_blocks: None) -> None:
    X = blobs(300)
    labels = np.arange(300) % 5
    labels[labels == 3] = 4  # cluster 3 is empty: its centre is the mean of all rows
    centers, distances, inertia = centers_and_distances(ElsewhereRows(X), labels, 5)
    X64 = X.astype(np.float64)
    want = np.stack([X64[labels == c].mean(axis=0) if c != 3 else X64.mean(axis=0) for c in range(5)])
    np.testing.assert_allclose(centers, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(distances, np.linalg.norm(X64 - want[labels], axis=1), rtol=1e-4, atol=1e-5)
    assert inertia == pytest.approx(float((distances.astype(np.float64) ** 2).sum()), rel=1e-4)
    same = result_from_labels(X, labels, 5, seed=0, method="spectral")
    np.testing.assert_array_equal(same.centers, centers)


@pytest.mark.parametrize("exact", [True, False], ids=["exact-sample-search", "ivf-sample-search"])
def test_spectral_on_rows_held_elsewhere_equals_in_memory(small_blocks: None, monkeypatch: pytest.MonkeyPatch,
                                                          exact: bool) -> None:
    """The rows outside the sample are searched, voted and measured block by block where they are held
    (the sample's index pickled to them): the same labels, centres and distances as in memory."""
    if not exact:
        monkeypatch.setattr(spectral, "REST_EXACT_BELOW", 100)  # a faiss IVF index over the 300-row sample
    X = blobs(900)
    here = spectral.fit_spectral(X, 4, sample_size=300, seed=2)
    rows = ElsewhereRows(X)
    there = spectral.fit_spectral(rows, 4, sample_size=300, seed=2)
    assert here.info["rest_index"]["exact"] is exact
    assert rows.taken == 300  # only the sample was read by the caller
    np.testing.assert_array_equal(there.labels, here.labels)
    np.testing.assert_array_equal(there.centers, here.centers)
    np.testing.assert_array_equal(there.distances, here.distances)
    assert there.inertia == here.inertia


def test_choose_k_and_kmeans_take_rows(small_blocks: None) -> None:
    X = blobs(400)
    a, b = choose_k(X, (2, 6), sample_size=200), choose_k(ElsewhereRows(X), (2, 6), sample_size=200)
    assert a.k == b.k
    np.testing.assert_array_equal(a.result.labels, b.result.labels)
    a_km, b_km = cluster(X, 3, method="kmeans", seed=1), cluster(ElsewhereRows(X), 3, method="kmeans", seed=1)
    np.testing.assert_array_equal(a_km.labels, b_km.labels)


def test_map_and_fingerprint_of_rows(small_blocks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "SAMPLE_ROWS", 150)
    X = blobs(400)
    rows = ElsewhereRows(X)
    np.testing.assert_array_equal(report.pca_2d(rows, seed=1), report.pca_2d(X, seed=1))
    assert rows.taken == 150  # the axes from a sample; every row projected where it is
    # Vectors held elsewhere (no file keys) are hashed block by block where they are held.
    assert vectors_id("c", X=rows) == vectors_id("c", X=ArrayRows(X))
    assert vectors_id("c", X=ArrayRows(X[:-1])) != vectors_id("c", X=ArrayRows(X))


def test_neighbor_index_pickles_with_its_faiss_index() -> None:
    Z = unit_rows(blobs(600, d=16))
    index = NeighborIndex(Z, exact_below=100, seed=0, n_neighbors=5)
    assert not index.exact
    copy = pickle.loads(pickle.dumps(index))
    assert copy.nprobe == index.nprobe
    for a, b in zip(index.search(Z[:50], 5), copy.search(Z[:50], 5), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("projected", [True, False], ids=["projected-candidates", "search-here"])
def test_centred_neighbours_of_rows_held_elsewhere_equal_in_memory(small_blocks: None, monkeypatch: pytest.MonkeyPatch,
                                                                  projected: bool) -> None:
    """The clean checks' neighbour search over rows held elsewhere: mean, projection and candidate ranking
    run block by block where the rows are (each block reading its candidates' rows there), this process
    reads only the samples (the projection's, the index's training and calibration rows), and every
    number equals the in-memory search's."""
    import imgclust.neighbors as nb
    from imgclust.clean.stage import centred_neighbours

    monkeypatch.setattr(nb, "EXACT_BELOW", 200 if projected else 10_000)
    monkeypatch.setattr(nb, "_PROJECT_ROWS", 150)
    rng = np.random.default_rng(4)  # 160 values a row with 40 directions of structure (as image vectors have few)
    X = (blobs(600, d=40, k=6) @ rng.normal(size=(40, 160)) + rng.normal(0, 0.1, (600, 160))).astype(np.float32)
    here = centred_neighbours(X, 12, seed=1)
    rows = ElsewhereRows(X)
    there = centred_neighbours(rows, 12, seed=1)
    train, queries = nb.ivf_sample_rows(600, 1)  # the index's training and calibration rows (every row is small)
    assert rows.taken == (150 + (600 if train is None else len(train)) + len(queries) if projected else 0)
    for name in ("sims", "idx", "norms", "along"):
        np.testing.assert_array_equal(getattr(there, name), getattr(here, name), err_msg=name)
    assert there.mean_sq == here.mean_sq
    # The neighbours the exact centred cosine gives (the projection's candidates miss few), with their exact cosines.
    Zc = unit_rows(X - X.astype(np.float64).mean(axis=0))
    S = Zc @ Zc.T
    np.fill_diagonal(S, -np.inf)
    truth = np.argsort(-S, axis=1)[:, :12]
    recall = np.mean([len(set(a) & set(b)) / 12 for a, b in zip(truth.tolist(), there.idx.tolist(), strict=True)])
    assert recall >= (0.95 if projected else 1.0)
    np.testing.assert_allclose(there.sims, np.take_along_axis(S, there.idx, axis=1), atol=1e-5)


def test_the_clean_search_projects_a_block_alike_on_any_number_of_threads() -> None:
    """A Dask worker runs one BLAS thread and this process several: the projection of a block must not
    depend on it (its last bits change which candidates the index finds)."""
    from threadpoolctl import threadpool_limits

    from imgclust.clean.stage import _projected_block

    rng = np.random.default_rng(0)
    block = rng.normal(size=(16_384, 1_200)).astype(np.float32)
    mean = block.mean(axis=0)
    P = np.linalg.qr(rng.normal(size=(1_200, 128)))[0].astype(np.float32)
    with threadpool_limits(limits=1):
        one = _projected_block(0, block, mean, P)
    with threadpool_limits(limits=4):
        several = _projected_block(0, block, mean, P)
    for a, b in zip(one, several, strict=True):
        np.testing.assert_array_equal(a, b)
