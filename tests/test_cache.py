"""The embedding cache: no inference on a second run, only new or changed files computed, kill -9 safe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import draw_image, indexed_vectors
from imgclust.cache import EmbeddingCache, file_key
from imgclust.errors import CacheError
from imgclust.features import get_extractor
from imgclust.features.extract import extract
from imgclust.io.discover import discover


class CountingExtractor:
    """Wraps an extractor and counts the images that went through the network."""

    def __init__(self, inner, fail_after_batches: int | None = None) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.embedded = 0
        self.batches = 0
        self.fail_after_batches = fail_after_batches

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise KeyboardInterrupt("simulated crash")
        self.batches += 1
        self.embedded += len(batch)
        return self.inner.embed(batch)


def folder_of(root: Path, n: int, start: int = 0) -> Path:
    for i in range(start, start + n):
        draw_image(root / f"img_{i:03d}.png", color=(20 * (i % 12), 90, 255 - 20 * (i % 12)), seed=i,
                   size=(40 + i % 7, 30 + i % 5))
    return root


def open_cache(root: Path, extractor) -> EmbeddingCache:  # type: ignore[no-untyped-def]
    return EmbeddingCache(root, extractor.cache_id(), extractor.dim, extractor.name)


@pytest.fixture()
def pixels():  # type: ignore[no-untyped-def]
    return get_extractor("pixels", size=8)


def test_second_run_does_no_inference(tmp_path: Path, pixels) -> None:  # type: ignore[no-untyped-def]
    images = folder_of(tmp_path / "images", 20)
    first = extract(discover(images), pixels, cache=open_cache(tmp_path / "c", pixels), batch_size=6)
    assert (first.n_computed, first.n_cached) == (20, 0)

    counting = CountingExtractor(pixels)
    second = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), batch_size=6)
    assert counting.embedded == 0
    assert (second.n_computed, second.n_cached) == (0, 20)
    np.testing.assert_array_equal(second.X, first.X)


def test_adding_ten_images_computes_only_those(tmp_path: Path, pixels) -> None:  # type: ignore[no-untyped-def]
    images = folder_of(tmp_path / "images", 25)
    extract(discover(images), pixels, cache=open_cache(tmp_path / "c", pixels), batch_size=8)
    folder_of(images, 10, start=25)
    counting = CountingExtractor(pixels)
    ex = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), batch_size=8)
    assert counting.embedded == 10
    assert (ex.n_computed, ex.n_cached) == (10, 25)
    fresh = extract(discover(images), pixels, cache=None)
    np.testing.assert_array_equal(ex.X, fresh.X)


def test_changed_file_is_recomputed(tmp_path: Path, pixels) -> None:  # type: ignore[no-untyped-def]
    images = folder_of(tmp_path / "images", 6)
    extract(discover(images), pixels, cache=open_cache(tmp_path / "c", pixels))
    target = images / "img_003.png"
    before = target.stat()
    draw_image(target, color=(0, 0, 0), seed=99, size=(60, 60))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    counting = CountingExtractor(pixels)
    ex = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels))
    assert counting.embedded == 1
    assert (ex.n_computed, ex.n_cached) == (1, 5)
    np.testing.assert_array_equal(ex.X, extract(discover(images), pixels, cache=None).X)


def test_content_identity_survives_rename_and_touch_but_not_edits(tmp_path: Path, pixels) -> None:  # type: ignore[no-untyped-def]
    images = folder_of(tmp_path / "images", 5)
    extract(discover(images), pixels, cache=open_cache(tmp_path / "c", pixels), identity="content")
    (images / "img_000.png").rename(images / "renamed.png")
    os.utime(images / "img_001.png", ns=(1, 1))
    counting = CountingExtractor(pixels)
    ex = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), identity="content")
    assert counting.embedded == 0 and ex.n_cached == 5
    draw_image(images / "img_002.png", color=(0, 0, 0), seed=7)
    ex = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), identity="content")
    assert counting.embedded == 1 and ex.n_cached == 4
    # The stat identity would have recomputed the renamed and the touched file.
    recs = {r.relpath: r for r in discover(images)}
    assert file_key(recs["renamed.png"], "content") != file_key(recs["renamed.png"], "stat")


def test_interrupted_extraction_resumes_from_the_last_finished_batch(tmp_path: Path, pixels) -> None:  # type: ignore[no-untyped-def]
    images = folder_of(tmp_path / "images", 30)
    crashing = CountingExtractor(pixels, fail_after_batches=2)
    with pytest.raises(KeyboardInterrupt):
        extract(discover(images), crashing, cache=open_cache(tmp_path / "c", pixels), batch_size=7)
    assert len(open_cache(tmp_path / "c", pixels)) == 14

    counting = CountingExtractor(pixels)
    resumed = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), batch_size=7)
    assert (resumed.n_cached, resumed.n_computed, counting.embedded) == (14, 16, 16)
    np.testing.assert_array_equal(resumed.X, extract(discover(images), pixels, cache=None).X)


def test_append_is_o_batch_and_a_reader_reads_only_its_keys(tmp_path: Path) -> None:
    """Storing a batch appends to one segment file (nothing older is rewritten); get_many reads only what it asks."""
    rng = np.random.default_rng(0)
    cache = EmbeddingCache(tmp_path, "test-id", 4)
    data = {f"k{i}": rng.standard_normal(4).astype(np.float32) for i in range(300)}
    keys = list(data)
    segments: list[Path] = []
    for s in range(0, 300, 10):
        cache.put_many(keys[s:s + 10], np.stack([data[k] for k in keys[s:s + 10]]))
        segments = list(cache.folder.glob("seg-*.f32"))
        assert len(segments) == 1 and segments[0].stat().st_size == 4 * 4 * (s + 10)
    assert not list(cache.folder.glob("*.npz"))
    other = EmbeddingCache(tmp_path, "test-id", 4)  # another run: its own segment, the same index
    other.put_many(["new"], np.ones((1, 4), np.float32))
    assert len(list(cache.folder.glob("seg-*.f32"))) == 2 and len(other) == 301
    reader = EmbeddingCache(tmp_path, "test-id", 4)
    wanted = ["k299", "new", "k3", "k3"]
    got = reader.get_many(wanted)
    np.testing.assert_array_equal(got, np.stack([data["k299"], np.ones(4, np.float32), data["k3"], data["k3"]]))
    assert not hasattr(reader, "_index")  # no dict of every row
    assert reader.contains_many(["k0", "nope", "new"]).tolist() == [True, False, True]
    assert reader.missing(["k0", "nope"]) == ["nope"]
    with pytest.raises(KeyError, match="'nope'"):
        reader.get_many(["k0", "nope"])


def test_truncated_segment_is_not_trusted_and_recomputed(tmp_path: Path, pixels,  # type: ignore[no-untyped-def]
                                                         caplog: pytest.LogCaptureFixture) -> None:
    images = folder_of(tmp_path / "images", 12)
    first = extract(discover(images), pixels, cache=open_cache(tmp_path / "c", pixels), batch_size=4)
    (segment,) = (tmp_path / "c").glob("vectors/*/seg-*.f32")
    with open(segment, "r+b") as fh:
        fh.truncate(segment.stat().st_size // 2 + 5)  # half the rows and a torn one
    counting = CountingExtractor(pixels)
    again = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), batch_size=4)
    assert (again.n_cached, again.n_computed, counting.embedded) == (6, 6, 6)
    assert "damaged or missing; they will be computed again" in caplog.text
    np.testing.assert_array_equal(again.X, first.X)
    third = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), batch_size=4)
    assert third.n_cached == 12  # re-indexed to the new rows


def test_damaged_index_starts_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(tmp_path, "test-id", 3)
    cache.put_many(["a", "b"], np.ones((2, 3), np.float32))
    cache.close()
    for extra in cache.folder.glob("index.sqlite-*"):
        extra.unlink()
    (cache.folder / "index.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    reopened = EmbeddingCache(tmp_path, "test-id", 3)
    assert len(reopened) == 0 and "a" not in reopened
    assert "index in" in caplog.text and "is damaged" in caplog.text
    reopened.put_many(["c"], np.zeros((1, 3), np.float32))
    assert len(EmbeddingCache(tmp_path, "test-id", 3)) == 1


def _old_format_cache(root: Path, cache_id: str, dim: int) -> Path:
    """A cache as the first format wrote it: meta.json format 1 and part-*.npz files."""
    folder = root / "vectors" / cache_id
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"format": 1, "cache_id": cache_id, "dim": dim,
                                                  "extractor": "x", "imgclust_version": "0.1.0"}))
    return folder


def test_old_format_cache_is_migrated_once_and_damaged_parts_dropped(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    folder = _old_format_cache(tmp_path, "test-id", 3)
    np.savez(folder / "part-1.npz", keys=np.array(["a", "b"]), X=np.arange(6, dtype=np.float32).reshape(2, 3))
    np.savez(folder / "part-2.npz", keys=np.array(["c"]), X=np.full((1, 3), 7, np.float32))
    (folder / "part-damaged.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(folder / "part-wrongdim.npz", keys=np.array(["d"]), X=np.ones((1, 5), np.float32))
    np.savez(folder / "part-nan.npz", keys=np.array(["e"]), X=np.full((1, 3), np.nan, np.float32))
    cache = EmbeddingCache(tmp_path, "test-id", 3)
    assert sorted(cache.keys()) == ["a", "b", "c"]
    np.testing.assert_array_equal(cache.get_many(["c", "b"]), [[7, 7, 7], [3, 4, 5]])
    migrated = [r.getMessage() for r in caplog.records if "old cache format" in r.getMessage()]
    assert len(migrated) == 1 and "\n" not in migrated[0]
    assert migrated[0].startswith(f"Moved 3 cached vectors from 2 files of the old cache format in {folder} into "
                                  "the new store; dropped 3 damaged files: part-damaged.npz")
    assert not list(folder.glob("part-*.npz"))
    assert json.loads((folder / "meta.json").read_text())["format"] == 2
    caplog.clear()
    assert len(EmbeddingCache(tmp_path, "test-id", 3)) == 3 and "old cache format" not in caplog.text


def test_old_format_cache_of_another_extractor_is_not_migrated(tmp_path: Path) -> None:
    folder = _old_format_cache(tmp_path, "other-id", 3)
    np.savez(folder / "part-1.npz", keys=np.array(["a"]), X=np.ones((1, 3), np.float32))
    shutil.move(folder, tmp_path / "vectors" / "test-id")
    with pytest.raises(CacheError, match="holds vectors of another extractor"):
        EmbeddingCache(tmp_path, "test-id", 3)
    assert (tmp_path / "vectors" / "test-id" / "part-1.npz").exists()


WRITER = """
import sys
import numpy as np
from imgclust.cache import EmbeddingCache
root, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cache = EmbeddingCache(root, "test-id", 16)
for b in range(n):
    keys = [f"{name}-{b}-{j}" for j in range(8)]
    cache.put_many(keys, np.full((8, 16), b, np.float32) + np.arange(8, dtype=np.float32)[:, None])
    if b == 5:
        print("ready", flush=True)
"""


def test_two_processes_write_one_cache_at_once(tmp_path: Path, cli_env: dict[str, str]) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, "150"], env=cli_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("p", "q")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()  # type: ignore[union-attr]
    cache = EmbeddingCache(tmp_path, "test-id", 16)
    assert len(cache) == 2 * 150 * 8 and len(list(cache.folder.glob("seg-*.f32"))) == 2
    for name in ("p", "q"):
        got = cache.get_many([f"{name}-{b}-{j}" for b in (0, 77, 149) for j in range(8)])
        want = np.concatenate([np.full((8, 16), b, np.float32) + np.arange(8, dtype=np.float32)[:, None]
                               for b in (0, 77, 149)])
        np.testing.assert_array_equal(got, want)


def test_kill_9_while_writing_leaves_a_usable_cache(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Two writers; one killed with SIGKILL in the middle of its batches. Every indexed vector is whole."""
    killed = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "k", "100000"], env=cli_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    survivor = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "s", "200"], env=cli_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert killed.stdout is not None and killed.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert survivor.wait(timeout=120) == 0, survivor.stderr.read()  # type: ignore[union-attr]
    cache = EmbeddingCache(tmp_path, "test-id", 16)
    keys = cache.keys()
    n_killed = sum(k.startswith("k-") for k in keys)
    assert n_killed >= 6 * 8 and n_killed % 8 == 0  # whole batches only
    assert sum(k.startswith("s-") for k in keys) == 200 * 8
    X = cache.get_many(keys)
    batch = np.array([int(k.split("-")[1]) for k in keys], np.float32)
    row = np.array([int(k.split("-")[2]) for k in keys], np.float32)
    np.testing.assert_array_equal(X, (batch + row)[:, None] * np.ones((1, 16), np.float32))
    cache.put_many(["after"], np.ones((1, 16), np.float32))  # and it takes new writes
    assert "after" in EmbeddingCache(tmp_path, "test-id", 16)


def test_cache_of_another_extractor_is_refused(tmp_path: Path) -> None:
    EmbeddingCache(tmp_path, "test-id", 3)
    (tmp_path / "vectors" / "other").mkdir(parents=True)
    shutil.copy(tmp_path / "vectors" / "test-id" / "meta.json", tmp_path / "vectors" / "other" / "meta.json")
    with pytest.raises(CacheError, match="holds vectors of another extractor"):
        EmbeddingCache(tmp_path, "other", 3)


def test_cli_identity_content_and_second_run_from_cache(tmp_path: Path, image_folder: Path) -> None:
    from click.testing import CliRunner

    from imgclust.cli import main

    args = ["run", str(image_folder), "--features", "pixels", "--k", "3", "--cache", str(tmp_path / "c"), "-q"]
    runner = CliRunner()
    first = runner.invoke(main, [*args, "--identity", "content", "--out", str(tmp_path / "out1")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(main, [*args, "--identity", "content", "--out", str(tmp_path / "out2")])
    assert second.exit_code == 0, second.output
    s1 = json.loads((tmp_path / "out1" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert s1["config"]["identity"] == "content"
    assert (s1["n_vectors_computed"], s1["n_vectors_cached"]) == (18, 0)
    assert (s2["n_vectors_computed"], s2["n_vectors_cached"]) == (0, 18)
    bad = runner.invoke(main, [*args, "--identity", "inode", "--out", str(tmp_path / "out3")])
    assert bad.exit_code == 2 and "'inode' is not one of 'stat', 'content'" in bad.output



@pytest.mark.slow
def test_kill_9_mid_extraction_then_rerun_resumes_with_the_same_vectors(tmp_path: Path,
                                                                         cli_env: dict[str, str]) -> None:
    """A real `imgclust run` killed with SIGKILL while it extracts; the rerun resumes and is exact."""
    images = tmp_path / "images"
    for i in range(240):
        draw_image(images / f"img_{i:03d}.jpg", color=(i % 256, 80, 160), seed=i, size=(160, 120))
    cache_dir = tmp_path / "cache"
    args = [sys.executable, "-m", "imgclust", "run", str(images), "--features", "efficientnet-lite0", "--k", "2",
            "--cache", str(cache_dir), "--batch-size", "4", "-q"]
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "out1")], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not indexed_vectors(cache_dir):
        assert proc.poll() is None, f"the run ended before it wrote a batch: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no batch stored after 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    rerun = subprocess.run([*args, "--out", str(tmp_path / "out2")], env=cli_env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["n_vectors_cached"] >= 4
    assert 0 < summary["n_vectors_computed"] < 240
    assert summary["n_vectors_cached"] + summary["n_vectors_computed"] == 240

    extractor = get_extractor("efficientnet-lite0")
    cached = open_cache(cache_dir, extractor)
    records = discover(images)
    got = cached.get_many([file_key(r) for r in records])
    uninterrupted = extract(records, extractor, cache=None, batch_size=32).X
    # Batches of different sizes may round the last bits differently; nothing more.
    np.testing.assert_allclose(got, uninterrupted, atol=1e-5, rtol=0)
