"""The Dask backend: same results as a local run, on a real LocalCluster with 2 worker processes.

The tests marked ``distributed`` share one backend, whose LocalCluster is started once per module
(the ``--workers`` path); the CLI test connects to it by address (the ``--scheduler`` path). The
unmarked tests check the messages and the store without starting any worker.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import imgclust
from conftest import CLASSES, draw_image, run_cli
from imgclust.backends import get_backend
from imgclust.cache import EmbeddingCache
from imgclust.cli import main
from imgclust.cluster.kmeans import ArrayAssigner, lloyd
from imgclust.errors import ParameterError
from imgclust.metrics import evaluate
from imgclust.store import VectorStore

pytest.importorskip("distributed")

from imgclust.backends.dask import DaskAssigner, DaskBackend, StoreRows  # noqa: E402

# summary.json keys that say where and when a run happened, not what it found.
RUN_SPECIFIC = ("timings", "out_dir", "backend")


def draw_folder(root: Path, per_class: int, size: tuple[int, int] = (64, 48)) -> Path:
    for c, (name, (color, shape)) in enumerate(CLASSES.items()):
        for i in range(per_class):
            draw_image(root / name / f"{name}_{i}.png", color=color, shape=shape, seed=100 * c + i, size=size)
    (root / "red" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


def same_outputs(a: Path, b: Path) -> None:
    """Two output folders hold the same files with the same contents (summary: up to run-specific keys)."""
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(p.relative_to(b) for p in b.rglob("*"))
    for p in (p for p in a.rglob("*") if p.is_file()):
        q = b / p.relative_to(a)
        if p.name == "summary.json":
            sa, sb = json.loads(p.read_text()), json.loads(q.read_text())
            for key in RUN_SPECIFIC:
                sa.pop(key, None)
                sb.pop(key, None)
            assert sa == sb
        elif p.suffix == ".npz":  # zip members carry a write time, and BLAS sums in any order: compare values
            with np.load(p, allow_pickle=False) as za, np.load(q, allow_pickle=False) as zb:
                assert sorted(za.files) == sorted(zb.files)
                for name in za.files:
                    if za[name].dtype.kind == "f":
                        np.testing.assert_allclose(za[name], zb[name], rtol=1e-4, atol=1e-5)
                    else:
                        np.testing.assert_array_equal(za[name], zb[name])
        elif p.name == "report.html":  # the same page but for the stage timings it prints
            ta, tb = (re.sub(r"\d+(\.\d+)? s\b", "", f.read_text()) for f in (p, q))
            assert ta == tb
        else:
            assert p.read_bytes() == q.read_bytes(), p.relative_to(a)


def _vector_stores(cache_root: Path) -> list[Path]:
    """The meta.json of each extractor's store under ``cache_root`` (not the quality measurements' store)."""
    return [m for m in cache_root.glob("vectors/*/meta.json") if not m.parent.name.startswith("quality-")]


def part_rows(cache_root: Path) -> list[str]:
    """Every key indexed in the extractors' embedding stores under ``cache_root``."""
    keys: list[str] = []
    for meta in _vector_stores(cache_root):
        info = json.loads(meta.read_text())
        keys.extend(EmbeddingCache(cache_root, info["cache_id"], info["dim"]).keys())
    return keys


def stored_rows(cache_root: Path) -> int:
    """Rows in every segment file under ``cache_root``, indexed or not: what was computed and written."""
    total = 0
    for meta in _vector_stores(cache_root):
        info = json.loads(meta.read_text())
        total += EmbeddingCache(cache_root, info["cache_id"], info["dim"]).segment_rows()
    return total


def extractors_built() -> int:
    """Runs on a worker: how many extractors this worker process has built."""
    from imgclust.backends import dask

    return len(dask._EXTRACTORS)


@pytest.fixture(scope="module")
def backend():
    with DaskBackend(workers=2, shard_size=4) as b:
        yield b


@pytest.fixture(scope="module")
def client(backend):
    return backend.client


# -- without workers ------------------------------------------------------------------------------

def test_cli_scheduler_needs_dask_backend(image_folder: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["run", str(image_folder), "--out", str(tmp_path / "out"), "--features", "pixels",
                                  "--scheduler", "tcp://127.0.0.1:8786"])
    assert r.exit_code == 2
    assert "--scheduler and --workers only apply with --backend dask." in r.stderr


def test_scheduler_and_workers_exclusive() -> None:
    with pytest.raises(ParameterError, match="Give either --scheduler .* or --workers"):
        get_backend("dask", scheduler="tcp://127.0.0.1:8786", workers=2)


def test_dask_backend_needs_a_cache(image_folder: Path, tmp_path: Path) -> None:
    backend = DaskBackend(workers=1)
    with pytest.raises(ParameterError, match="cannot run with --no-cache"):
        imgclust.run(image_folder, tmp_path / "out", features="pixels", k=3, cache=False, backend=backend)
    assert backend.describe() == {"name": "dask", "scheduler": None, "n_workers": 0}  # none started for nothing


def test_unreachable_scheduler_says_what_to_do() -> None:
    backend = DaskBackend("tcp://127.0.0.1:9", timeout=1)
    with pytest.raises(ParameterError, match=r"Cannot reach the Dask scheduler at tcp://127.0.0.1:9 .*dask scheduler"):
        _ = backend.client


def test_vectors_from_other_writers_are_seen_at_once(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "x-1", 2)
    worker = VectorStore(cache.folder, 2)  # what a Dask worker process writes through
    worker.put_many(["a", "b"], np.ones((2, 2), np.float32))
    assert "a" in cache and len(cache) == 2
    # A shard stored again (a rescheduled task) re-points its keys: each key still has one vector.
    worker.put_many(["a", "b"], np.ones((2, 2), np.float32))
    assert sorted(part_rows(tmp_path)) == ["a", "b"]


# -- on a LocalCluster with 2 worker processes -----------------------------------------------------

@pytest.mark.distributed
def test_dask_assigner_same_loop_same_result(client) -> None:
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(c, 1.0, size=(300, 8)) for c in (0, 5, 10)]).astype(np.float32)
    assigner = DaskAssigner.scatter(client, X, chunk_size=170)  # several chunks, the last one short
    try:
        idx = np.array([899, 3, 171, 170, 0, 555])
        np.testing.assert_array_equal(assigner.rows(idx), X[idx])
        on_workers = lloyd(assigner, 3, seed=7, n_init=2, init_sample=200)
    finally:
        assigner.close()
    here = lloyd(ArrayAssigner(X, chunk_size=170), 3, seed=7, n_init=2, init_sample=200)
    np.testing.assert_array_equal(on_workers.labels, here.labels)
    np.testing.assert_array_equal(on_workers.centers, here.centers)
    assert on_workers.inertia == here.inertia


@pytest.mark.distributed
def test_dask_run_equals_local_run(backend, client, tmp_path: Path) -> None:
    images = draw_folder(tmp_path / "images", per_class=8)
    local = imgclust.run(images, tmp_path / "local", features="pixels", k=3, seed=5, cache=tmp_path / "cache-local")
    remote = imgclust.run(images, tmp_path / "dask", features="pixels", k=3, seed=5, cache=tmp_path / "cache-dask",
                          backend=backend)
    assert remote.summary["backend"]["n_workers"] == 2
    assert evaluate(local.labels, remote.labels)["ari"] >= 0.99
    same_outputs(tmp_path / "local", tmp_path / "dask")
    assert remote.summary["statuses"] == {"not_an_image": 1, "ok": 24}
    assert remote.summary["n_vectors_computed"] == 24
    # Each worker built its extractor (loaded the network) at most once for all its shards.
    built = client.run(extractors_built)
    assert max(built.values()) == 1
    # Nothing computed twice into the store.
    rows = part_rows(tmp_path / "cache-dask")
    assert len(rows) == len(set(rows)) == 24 == stored_rows(tmp_path / "cache-dask")


@pytest.mark.distributed
def test_dask_run_of_many_images_leaves_the_vectors_in_the_store(backend, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``max_client_rows`` images the vectors stay in the store and the workers search, vote, add up
    and measure the rows outside the graph's sample, and rank each row's neighbour candidates for the
    clean checks (reading the candidates' rows from the store): the same k, clusters, centres, map,
    outlier scores and near-duplicate groups as a local run."""
    import imgclust.neighbors as nb

    monkeypatch.setattr(nb, "EXACT_BELOW", 50)  # the clean checks' search by projected candidates:
    monkeypatch.setattr(nb, "PROJECT_DIMS", 32)  # fewer directions than the 120 rows
    images = draw_folder(tmp_path / "images", per_class=40, size=(24, 18))
    settings = {"features": "pixels", "seed": 5, "k": 3, "method_options": {"sample_size": 100}}
    local = imgclust.run(images, tmp_path / "local", cache=tmp_path / "cache-local", **settings)
    monkeypatch.setattr(backend, "max_client_rows", 50)
    remote = imgclust.run(images, tmp_path / "dask", cache=tmp_path / "cache-dask", backend=backend, **settings)
    assert isinstance(remote.features.X, StoreRows)
    assert remote.clustering.info["sample_size"] == 100 and "rest_index" in remote.clustering.info
    assert remote.summary["k"] == local.summary["k"] == 3
    np.testing.assert_array_equal(remote.labels, local.labels)
    np.testing.assert_allclose(remote.clustering.centers, local.clustering.centers, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(remote.clustering.distances, local.clustering.distances, rtol=1e-5, atol=1e-5)
    with np.load(tmp_path / "local" / "report-data.npz") as a, np.load(tmp_path / "dask" / "report-data.npz") as b:
        np.testing.assert_allclose(a["coords"], b["coords"], rtol=1e-4, atol=1e-4)
    assert remote.summary["outliers"] == local.summary["outliers"]
    assert remote.summary["near_duplicates"] == local.summary["near_duplicates"]
    columns = ("path", "outlier_score", "outlier", "near_duplicate_group")
    with open(tmp_path / "local" / "assignments.csv", encoding="utf-8") as fh:
        want = [tuple(r[c] for c in columns) for r in csv.DictReader(fh)]
    with open(tmp_path / "dask" / "assignments.csv", encoding="utf-8") as fh:
        got = [tuple(r[c] for c in columns) for r in csv.DictReader(fh)]
    assert got == want and any(row[1] for row in got)


@pytest.mark.distributed
def test_worker_killed_during_extraction(backend, client, tmp_path: Path) -> None:
    images = draw_folder(tmp_path / "images", per_class=14, size=(700, 600))
    n_good = 3 * 14
    pids = client.run(os.getpid)
    killed: list[tuple[int, int]] = []

    def kill_a_busy_worker(stage: str, done: int, total: int) -> None:
        if killed or done == 0 or done >= total:
            return
        busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append((done, total))

    remote = imgclust.run(images, tmp_path / "dask", features="pixels", k=3, seed=1, cache=tmp_path / "cache-dask",
                          backend=backend, progress=kill_a_busy_worker)
    assert killed and killed[0][0] < killed[0][1], "the kill did not happen in the middle of extraction"
    assert remote.summary["n_ok"] == n_good and remote.summary["n_images"] == n_good + 1
    rows = part_rows(tmp_path / "cache-dask")
    assert len(rows) == len(set(rows)) == n_good
    local = imgclust.run(images, tmp_path / "local", features="pixels", k=3, seed=1, cache=tmp_path / "cache-local")
    np.testing.assert_array_equal(local.labels, remote.labels)
    same_outputs(tmp_path / "local", tmp_path / "dask")
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


@pytest.mark.distributed
def test_cli_connects_to_a_scheduler(client, image_folder: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    args = ["run", str(image_folder), "--features", "pixels", "--k", "3", "-q"]
    r = run_cli([*args, "--out", str(tmp_path / "dask"), "--cache", str(tmp_path / "c1"),
                 "--backend", "dask", "--scheduler", client.scheduler.address], cli_env)
    assert r.returncode == 0, r.stderr
    assert "Ran on Dask: 2 workers" in r.stdout
    imgclust.run(image_folder, tmp_path / "local", features="pixels", k=3, cache=tmp_path / "c2")
    same_outputs(tmp_path / "local", tmp_path / "dask")
