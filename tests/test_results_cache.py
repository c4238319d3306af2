"""The results cache (imgclust.store.results): a rerun of the same vectors and settings takes the chosen k,
the clustering, the clean checks and the report's map from the cache, and writes exactly what a fresh
computation writes; anything that changes one of them computes it again; a damaged or foreign entry is
ignored; the folder stays bounded; ``--no-cache`` keeps nothing."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import imgclust
from conftest import draw_image, photos_with_a_copy, run_cli
from imgclust.cluster import ClusterResult
from imgclust.store import results as results_mod
from imgclust.store.results import RESULTS_DIR, ResultsCache, results_key, vectors_id

SETTINGS: dict[str, Any] = {"features": "pixels", "feature_options": {"size": 8}, "k_range": (2, 5)}
# What may differ between two runs with the same result: where they wrote and what they took from caches.
VOLATILE = ("timings", "out_dir", "n_vectors_computed", "n_vectors_cached", "results_cached")
OUTPUTS = ("assignments.csv", "duplicates.csv", "sweep.csv", "confusion.csv", "report-data.npz", "k-candidates.npz")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return photos_with_a_copy(tmp_path / "photos", 7)


def _summary(out: Path) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in VOLATILE}


def assert_same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).exists() == (b / name).exists(), name
        if (a / name).exists():
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _summary(a) == _summary(b)
    assert (a / "model" / "model.json").exists()


def _entries(cache: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in (cache / RESULTS_DIR).glob("*.npz"))


# --- the keys --------------------------------------------------------------------------------------

def test_vectors_id_follows_the_identities_in_order() -> None:
    base = vectors_id("pixels-1", ["a|1|5", "b|2|6"])
    assert base == vectors_id("pixels-1", ["a|1|5", "b|2|6"])
    for other in (vectors_id("pixels-1", ["a|1|5", "b|2|7"]),  # a file changed (modification time)
                  vectors_id("pixels-1", ["b|2|6", "a|1|5"]),  # another order
                  vectors_id("pixels-1", ["a|1|5"]),  # one image fewer
                  vectors_id("pixels-2", ["a|1|5", "b|2|6"]),  # another extractor
                  vectors_id("pixels-1", ["a|1|5\0b|2|6"])):  # the boundaries count
        assert other != base
    X = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert vectors_id("p", X=X) == vectors_id("p", X=X.copy()) != vectors_id("p", X=X + 1e-3)
    with pytest.raises(ValueError):
        vectors_id("p")


def test_results_key_follows_settings_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = results_key("v", method="spectral", method_options={}, seed=0)
    assert key == results_key("v", seed=0, method_options={}, method="spectral")  # order does not matter
    for other in (results_key("v", method="spectral", method_options={}, seed=1),
                  results_key("v", method="kmeans", method_options={}, seed=0),
                  results_key("v", method="spectral", method_options={"n_neighbors": 5}, seed=0),
                  results_key("w", method="spectral", method_options={}, seed=0)):
        assert other != key
    monkeypatch.setattr(results_mod, "__version__", "0.0.0-other")
    assert results_key("v", method="spectral", method_options={}, seed=0) != key


# --- the entries -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inner:
    values: np.ndarray
    scale: float


@dataclass
class Outer:
    inner: Inner
    by_k: dict[int, np.ndarray]
    pair: tuple[int, ...]
    names: list[list[str]]
    extra: dict[str, Any] = field(default_factory=dict)


def _outer() -> Outer:
    return Outer(Inner(np.arange(5, dtype=np.float32), math.nan), {2: np.array([0, 1], np.int32), 10: np.zeros(3)},
                 (3, 4), [["a", "b"], []], {"x": np.float32(0.1), "y": None, "z": [1.5, "s"], "t": True})


def test_an_entry_comes_back_as_it_was(tmp_path: Path) -> None:
    cache = ResultsCache(tmp_path)
    cache.put("stage", "k1", _outer())
    back = cache.get("stage", "k1", [Outer, Inner])
    assert isinstance(back, Outer) and isinstance(back.inner, Inner)
    np.testing.assert_array_equal(back.inner.values, np.arange(5, dtype=np.float32))
    assert back.inner.values.dtype == np.float32 and math.isnan(back.inner.scale)
    assert list(back.by_k) == [2, 10] and back.by_k[2].dtype == np.int32
    assert back.pair == (3, 4) and back.names == [["a", "b"], []]
    assert type(back.extra["x"]) is np.float32 and back.extra["x"] == np.float32(0.1)
    assert back.extra["y"] is None and back.extra["z"] == [1.5, "s"] and back.extra["t"] is True
    assert cache.get("stage", "k2", [Outer, Inner]) is None  # another key: nothing


def test_damaged_or_foreign_entries_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = ResultsCache(tmp_path)
    path = cache.put("stage", "k1", _outer())
    assert path is not None
    shutil.copy(path, cache.path("stage", "k2"))  # an entry under another key's name
    with caplog.at_level(logging.WARNING, logger="imgclust.store.results"):
        assert cache.get("stage", "k2", [Outer, Inner]) is None
        assert cache.get("stage", "k1", [Outer]) is None  # a class the caller does not expect
        assert cache.get("stage", "k1", [Inner, Outer]) is None  # not of the expected class
        path.write_bytes(path.read_bytes()[:-100])  # truncated
        assert cache.get("stage", "k1", [Outer, Inner]) is None
        path.write_bytes(b"not a zip")
        assert cache.get("stage", "k1", [Outer, Inner]) is None
    assert len([r for r in caplog.records if "Ignoring the cached result" in r.getMessage()]) == 5


def test_an_entry_of_another_version_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ResultsCache(tmp_path)
    cache.put("stage", "k1", _outer())
    monkeypatch.setattr(results_mod, "__version__", "0.0.0-other")
    assert cache.get("stage", "k1", [Outer, Inner]) is None


def test_arrays_of_objects_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ResultsCache(tmp_path).put("stage", "k", Inner(np.array([{}], dtype=object), 1.0))


def test_the_folder_keeps_the_most_recently_used_entries(tmp_path: Path) -> None:
    cache = ResultsCache(tmp_path, keep=3)
    result = ClusterResult(np.zeros(4, np.int64), np.zeros((1, 2), np.float32), np.zeros(4, np.float32), 0.0, 1, 0,
                           "kmeans")
    for i in range(3):
        cache.put("cluster", f"k{i}", result)
        os.utime(cache.path("cluster", f"k{i}"), ns=(10**18 + i, 10**18 + i))  # k0 oldest
    assert cache.get("cluster", "k0", [ClusterResult]) is not None  # used: now the newest
    old_tmp, new_tmp = cache.folder / ".cluster-k9.npz.a1.tmp", cache.folder / ".cluster-k9.npz.b2.tmp"
    old_tmp.write_bytes(b"killed")
    new_tmp.write_bytes(b"being written")
    os.utime(old_tmp, (1, 1))
    cache.put("cluster", "k3", result)
    cache.put("cluster", "k4", result)
    assert sorted(p.stem for p in cache.folder.glob("*.npz")) == ["cluster-k0", "cluster-k3", "cluster-k4"]
    assert not old_tmp.exists() and new_tmp.exists()
    small = ResultsCache(tmp_path, max_bytes=1)  # a size bound: only the newest entry stays
    small.put("cluster", "k5", result)
    assert [p.stem for p in small.folder.glob("*.npz")] == ["cluster-k5"]


# --- runs ------------------------------------------------------------------------------------------

def test_a_cached_rerun_writes_what_a_fresh_run_writes(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = imgclust.run(folder, tmp_path / "first", cache=cache, **SETTINGS)
    assert first.summary["results_cached"] == []
    assert _entries(cache) == ["clean", "cluster", "map", "names"]
    again = imgclust.run(folder, tmp_path / "again", cache=cache, **SETTINGS)
    assert again.summary["results_cached"] == ["clean", "cluster", "names", "map"]
    fresh = imgclust.run(folder, tmp_path / "fresh", cache=False, **SETTINGS)
    assert fresh.summary["results_cached"] == []
    assert again.summary["n_duplicates"] == 1 and again.summary["k_auto"] is True
    assert_same_outputs(tmp_path / "again", tmp_path / "fresh")
    assert_same_outputs(tmp_path / "first", tmp_path / "fresh")
    # A given k too (its own entry; the clean checks are the same as before).
    k3 = imgclust.run(folder, tmp_path / "k3", cache=cache, k=3, **SETTINGS)
    assert k3.summary["results_cached"][:1] == ["clean"] and "cluster" not in k3.summary["results_cached"]
    k3_again = imgclust.run(folder, tmp_path / "k3-again", cache=cache, k=3, **SETTINGS)
    assert k3_again.summary["results_cached"] == ["clean", "cluster", "names", "map"]
    imgclust.run(folder, tmp_path / "k3-fresh", cache=False, k=3, **SETTINGS)
    assert_same_outputs(tmp_path / "k3-again", tmp_path / "k3-fresh")


def test_what_the_results_depend_on_is_computed_again(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    imgclust.run(folder, tmp_path / "first", cache=cache, **SETTINGS)
    # Another seed: every seeded stage again; the names of the same labels are still those.
    seeded = imgclust.run(folder, tmp_path / "seed", cache=cache, seed=1, **SETTINGS)
    assert "cluster" not in seeded.summary["results_cached"] and "clean" not in seeded.summary["results_cached"]
    # Other clean options: the clean checks again, the clustering from the cache.
    other = imgclust.run(folder, tmp_path / "clean", cache=cache, clean_options={"outlier_k": 3}, **SETTINGS)
    assert other.summary["results_cached"][:1] == ["cluster"]
    # A file changed in place: everything that reads its vector again, and the same as a fresh run.
    draw_image(folder / "c1" / "img_3.png", color=(250, 250, 0), seed=99, size=(40, 30))
    changed = imgclust.run(folder, tmp_path / "changed", cache=cache, **SETTINGS)
    assert changed.summary["results_cached"] == []
    imgclust.run(folder, tmp_path / "changed-fresh", cache=False, **SETTINGS)
    assert_same_outputs(tmp_path / "changed", tmp_path / "changed-fresh")


@pytest.mark.parametrize("identity", ["stat", "content"])
def test_a_damaged_entry_is_computed_again(folder: Path, tmp_path: Path, identity: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    imgclust.run(folder, tmp_path / "first", cache=cache, identity=identity, **SETTINGS)
    for path in (cache / RESULTS_DIR).glob("*.npz"):
        path.write_bytes(b"PK\x03\x04 damaged")
    with caplog.at_level(logging.WARNING, logger="imgclust.store.results"):
        again = imgclust.run(folder, tmp_path / "again", cache=cache, identity=identity, **SETTINGS)
    assert again.summary["results_cached"] == []
    assert len([r for r in caplog.records if "Ignoring the cached result" in r.getMessage()]) == 4
    assert_same_outputs(tmp_path / "first", tmp_path / "again")
    third = imgclust.run(folder, tmp_path / "third", cache=cache, identity=identity, **SETTINGS)  # rewritten
    assert third.summary["results_cached"] == ["clean", "cluster", "names", "map"]


def test_no_cache_keeps_no_results(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "default-cache"
    monkeypatch.setenv("IMGCLUST_CACHE", str(default))
    imgclust.run(folder, tmp_path / "out", cache=False, **SETTINGS)
    again = imgclust.run(folder, tmp_path / "out2", cache=False, **SETTINGS)
    assert again.summary["results_cached"] == []
    assert not default.exists()


def test_the_cli_says_what_came_from_the_cache(folder: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    args = ["run", str(folder), "--features", "pixels", "--ks", "2-4", "--cache", str(tmp_path / "cache")]
    first = run_cli([*args, "--out", str(tmp_path / "a")], cli_env)
    assert first.returncode == 0, first.stderr
    assert "Taken from the cache" not in first.stdout
    again = run_cli([*args, "--out", str(tmp_path / "b")], cli_env)
    assert again.returncode == 0, again.stderr
    assert "Taken from the cache (an earlier run of the same images and settings computed them): clean, cluster, " \
           "names, map." in again.stdout
