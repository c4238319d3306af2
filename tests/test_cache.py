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

from conftest import draw_image
from imgclust.cache import COMPACT_AFTER, EmbeddingCache, file_key
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
    assert len(list((tmp_path / "c").glob("vectors/*/part-*.npz"))) == 2

    counting = CountingExtractor(pixels)
    resumed = extract(discover(images), counting, cache=open_cache(tmp_path / "c", pixels), batch_size=7)
    assert (resumed.n_cached, resumed.n_computed, counting.embedded) == (14, 16, 16)
    np.testing.assert_array_equal(resumed.X, extract(discover(images), pixels, cache=None).X)


def test_compaction_merges_parts_and_keeps_every_vector(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cache = EmbeddingCache(tmp_path, "test-id", 4)
    data = {f"k{i}": rng.standard_normal(4).astype(np.float32) for i in range(COMPACT_AFTER - 1)}
    for key, row in data.items():
        cache.put_many([key], row[None])
    folder = tmp_path / "vectors" / "test-id"
    assert len(list(folder.glob("part-*.npz"))) == COMPACT_AFTER - 1
    cache.put_many(["last"], np.ones((1, 4), np.float32))  # the 64th part triggers compaction
    data["last"] = np.ones(4, np.float32)
    assert len(list(folder.glob("part-*.npz"))) == 1
    cache.put_many(["after"], np.zeros((1, 4), np.float32))
    data["after"] = np.zeros(4, np.float32)
    stale = folder / ".part-left-by-a-killed-run.npz.abc.tmp"
    stale.write_bytes(b"half a part")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh_tmp = folder / ".part-being-written-now.npz.def.tmp"
    fresh_tmp.write_bytes(b"in progress")
    cache.compact()
    assert len(list(folder.glob("part-*.npz"))) == 1
    assert not stale.exists() and fresh_tmp.exists()

    reopened = EmbeddingCache(tmp_path, "test-id", 4)
    assert len(reopened) == len(data)
    np.testing.assert_array_equal(reopened.get_many(list(data)), np.stack(list(data.values())))


def test_damaged_part_is_ignored_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(tmp_path, "test-id", 3)
    cache.put_many(["a", "b"], np.ones((2, 3), np.float32))
    folder = tmp_path / "vectors" / "test-id"
    (folder / "part-damaged.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(folder / "part-wrongdim.npz", keys=np.array(["c"]), X=np.ones((1, 5), np.float32))
    reopened = EmbeddingCache(tmp_path, "test-id", 3)
    assert len(reopened) == 2 and "c" not in reopened
    assert "Ignoring damaged cache part" in caplog.text


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
    while not list(cache_dir.glob("vectors/*/part-*.npz")):
        assert proc.poll() is None, f"the run ended before it wrote a batch: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no cache part after 300 s"
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
