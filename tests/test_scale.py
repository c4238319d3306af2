"""The default method at scale: near-duplicates, disconnected graphs, the graph sample, automatic k on a sample."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from imgclust.cluster import cluster
from imgclust.cluster.choose_k import choose_k
from imgclust.cluster.spectral import duplicate_groups, duplicate_threshold, fit_spectral, fit_spectral_many
from imgclust.errors import ParameterError
from imgclust.metrics import accuracy_hungarian
from imgclust.neighbors import knn, unit_rows


def classes(n_items: int = 300, n_classes: int = 3, dim: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct items around class centres, spread so that items of a class are not copies of each other."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, dim)) + 3.0
    y = np.arange(n_items) % n_classes
    return (centres[y] + rng.normal(0, 0.45, (n_items, dim))).astype(np.float32), y


def with_copies(X: np.ndarray, y: np.ndarray, copies: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row repeated ``copies`` times with 1% noise (relative to its norm), rows shuffled."""
    rng = np.random.default_rng(seed)
    item = rng.permutation(np.repeat(np.arange(len(X)), copies))
    noise = rng.normal(0, 1, (len(item), X.shape[1])) * (0.01 * np.linalg.norm(X[item], axis=1, keepdims=True)
                                                         / np.sqrt(X.shape[1]))
    return (X[item] + noise).astype(np.float32), y[item], item


def test_copies_count_once_and_land_with_their_group():
    X, y = classes()
    Xc, yc, item = with_copies(X, y, copies=15)
    without = cluster(Xc, 3, duplicate_radius=None)
    r = cluster(Xc, 3)
    assert r.info["duplicates_collapsed"] and r.info["graph_nodes"] == 300
    assert r.info["duplicate_groups"] == 300 and r.info["duplicate_rows"] == len(Xc)
    for i in range(300):  # every copy of an item has the same label
        assert len(set(r.labels[item == i].tolist())) == 1
    assert accuracy_hungarian(yc, r.labels) >= 0.98
    # The defect this guards against: the graph of copies falls apart into cliques of copies.
    assert accuracy_hungarian(yc, without.labels) < 0.8


def test_copies_outside_the_graph_sample_take_their_group_s_label():
    X, y = classes(n_items=400)
    Xc, yc, item = with_copies(X, y, copies=6)
    r = cluster(Xc, 3, sample_size=1200, seed=0)
    assert r.info["sample_size"] == 1200 and r.info["rest_index"]["n_neighbors"] == 10
    together = sum(len(set(r.labels[item == i].tolist())) == 1 for i in range(400))
    assert together >= 396  # an item none of whose copies was sampled goes by the vote of its neighbours
    assert accuracy_hungarian(yc, r.labels) >= 0.97


def test_dense_points_are_not_copies():
    # Points spaced one after the other on a line: close, but none stands apart from the next.
    t = np.linspace(0, 1, 200)
    Z = unit_rows(np.c_[np.ones(200) * 10, t, t ** 2])
    sims, idx = knn(Z, 32)
    assert (sims[:, -1] > 0.999).all()  # every neighbour is within a cosine of 0.999
    group = duplicate_groups(sims, idx, duplicate_threshold(sims, 0.25))
    assert group.max() + 1 >= 190
    # Three exact copies of one point, far from the rest, are one group.
    P = np.r_[np.eye(3)[[0, 0, 0]], np.eye(3)[[1, 2]] + 0.01]
    sims, idx = knn(unit_rows(P), 4)
    assert duplicate_groups(sims, idx, duplicate_threshold(sims, 0.25)).tolist() == [0, 0, 0, 1, 2]


def test_more_components_than_k_are_detected_linked_and_recorded(caplog):
    # Twelve far-apart tight groups, k = 3: the 10-neighbour graph has 12 components.
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (12, 24)) * 10
    X = (np.repeat(centres, 25, axis=0) + rng.normal(0, 0.5, (300, 24))).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="imgclust.cluster.spectral"):
        plain = cluster(X, 3, duplicate_radius=None)
    assert plain.info["graph_components"] == 12 and plain.info["components_exceed_k"] is True
    assert plain.info["components_linked"] is False
    assert "falls apart into 12 components, more than k=3" in caplog.text and "connect_components" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgclust.cluster.spectral"):
        r = cluster(X, 3, duplicate_radius=None, connect_components=True)
    assert r.info["graph_components"] == 12 and r.info["components_linked"] is True
    assert "Linking each component" in caplog.text
    assert sorted(r.sizes.tolist())[0] >= 25  # three real clusters, each made of whole groups
    for g in range(12):
        assert len(set(r.labels[g * 25:(g + 1) * 25].tolist())) == 1
    at12 = cluster(X, 12, duplicate_radius=None, connect_components=True)
    assert at12.info["graph_components"] == 12 and at12.info["components_linked"] is False
    assert at12.info["components_exceed_k"] is False


def test_a_sweep_equals_single_fits_when_the_graph_needs_linking():
    rng = np.random.default_rng(1)
    X = (np.repeat(rng.normal(0, 1, (6, 16)) * 10, 30, axis=0) + rng.normal(0, 0.5, (180, 16))).astype(np.float32)
    many = dict(fit_spectral_many(X, [2, 4, 6, 8], seed=0, duplicate_radius=None, connect_components=True))
    for k in (2, 4, 6, 8):
        single = fit_spectral(X, k, seed=0, duplicate_radius=None, connect_components=True)
        np.testing.assert_array_equal(many[k].labels, single.labels)
    assert many[2].info["components_linked"] and not many[6].info["components_linked"]


def test_graph_sample_reads_a_memory_map_and_equals_the_array(tmp_path: Path):
    X, _ = classes(n_items=900)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r", allow_pickle=False)
    a = cluster(mm, 3, sample_size=400)
    b = cluster(X, 3, sample_size=400)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-5)
    assert a.info["sample_size"] == 400


def test_automatic_k_runs_on_a_sample_and_reports_its_size():
    X, _ = classes(n_items=900, n_classes=4)
    choice = choose_k(X, (2, 6), sample_size=300)
    assert choice.sample_size == 300 and choice.sweep.n_samples == 300
    assert choice.k == 4 and len(choice.result.labels) == 900
    assert "random sample of 300 of the 900 images" in choice.reason
    full = choose_k(X, (2, 6))
    assert full.sample_size == 900 and "sample" not in full.reason
    with pytest.raises(ParameterError, match="sample_size"):
        choose_k(X, (2, 6), sample_size=10)


@pytest.mark.parametrize("option", [{"sample_size": 50}, {"duplicate_radius": 0.9}, {"duplicate_radius": True}])
def test_scale_options_are_checked(option):
    with pytest.raises(ParameterError, match=next(iter(option))):
        cluster(classes()[0], 3, **option)


def test_rows_outside_the_sample_search_a_projection_and_keep_full_space_copy_similarity(monkeypatch):
    import importlib

    spectral = importlib.import_module("imgclust.cluster.spectral")  # imgclust.cluster names the function
    monkeypatch.setattr(spectral, "REST_DIMS", 16)  # the 48-d test vectors: search in 16 dimensions
    X, y = classes(n_items=400)
    Xc, yc, item = with_copies(X, y, copies=6)
    r = cluster(Xc, 3, sample_size=1200, seed=0)
    assert r.info["rest_index"]["dims"] == 16
    together = sum(len(set(r.labels[item == i].tolist())) == 1 for i in range(400))
    assert together >= 396 and accuracy_hungarian(yc, r.labels) >= 0.97


def test_a_graph_in_parts_is_solved_part_by_part():
    from imgclust.cluster.spectral import knn_graph, spectral_embedding_of

    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(0, 1, (10, 64)) * 10, 60, axis=0) + rng.normal(0, 1, (600, 64))
    W = knn_graph(unit_rows(X), 10)
    vals, U = spectral_embedding_of(W, 12, seed=0)
    np.testing.assert_allclose(vals[:10], 1.0, atol=1e-8)  # once per part
    assert vals[10] < 0.999 and U.shape == (600, 12)
    labels = cluster(X, 10, duplicate_radius=None).labels
    assert all(len(set(labels[i * 60:(i + 1) * 60].tolist())) == 1 for i in range(10))
