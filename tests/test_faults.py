"""Faults: kill -9 in the middle of a run or an export, a full disk, no permission. Nothing is lost,
nothing is half-written, and running the same command again finishes the job.

The killed processes are real ``python -m imgclust`` processes. So that the kill reliably lands in
the middle of the work (and not before or after it on a fast machine), a ``sitecustomize`` module
put on the child's path slows down one step (each embedding batch, or each file copy: half of the
file, a pause, the rest); everything else is the shipped code.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, draw_image, indexed_vectors
from imgclust.cli import main
from imgclust.outputs.export import export
from imgclust.pipeline import OUT_MARKER, run

SLOW_SITE = textwrap.dedent('''
    import os
    import shutil
    import time

    if os.environ.get("IMGCLUST_TEST_SLOW_EMBED"):
        from imgclust.features import pixels

        _embed = pixels.PixelsExtractor.embed

        def _slow_embed(self, batch):
            time.sleep(float(os.environ["IMGCLUST_TEST_SLOW_EMBED"]))
            return _embed(self, batch)

        pixels.PixelsExtractor.embed = _slow_embed

    if os.environ.get("IMGCLUST_TEST_SLOW_COPY"):
        def _slow_copy2(src, dst, **kwargs):
            with open(src, "rb") as fh:
                data = fh.read()
            with open(dst, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(float(os.environ["IMGCLUST_TEST_SLOW_COPY"]))
                fh.write(data[len(data) // 2:])
            shutil.copystat(src, dst)
            return dst

        shutil.copy2 = _slow_copy2
''')


def _slow_child(tmp_path: Path, args: list[str], **slow: str) -> subprocess.Popen[bytes]:
    site = tmp_path / "slow-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SLOW_SITE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO / "src")]), **slow)
    return subprocess.Popen([sys.executable, "-m", "imgclust", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended before it could be killed: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the child never reached the point where it should be killed")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _clusters(out: Path) -> dict[str, str]:
    with open(out / "assignments.csv", encoding="utf-8", newline="") as fh:
        return {row["path"]: row["cluster"] for row in csv.DictReader(fh)}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()



@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for c, color in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)]):
        for i in range(8):
            draw_image(root / f"img_{c}_{i}.png", color=color, seed=10 * c + i, size=(96, 72))
    return root


def test_kill_9_during_extraction_then_rerun_gives_the_same_labels(photos: Path, tmp_path: Path):
    reference = run(photos, tmp_path / "reference", features="pixels", k=3, seed=7, cache=False)
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["run", str(photos), "--out", str(out), "--features", "pixels", "--k", "3", "--seed", "7",
            "--cache", str(cache), "--batch-size", "2", "-q"]
    proc = _slow_child(tmp_path, args, IMGCLUST_TEST_SLOW_EMBED="0.25")
    _kill_when(proc, lambda: indexed_vectors(cache) >= 6)

    n_stored = indexed_vectors(cache)
    assert 6 <= n_stored < 24 and n_stored % 2 == 0, "the kill must land in the middle of extraction (12 batches)"
    assert not (out / "summary.json").exists()

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_vectors_cached"] >= n_stored and summary["n_vectors_computed"] > 0
    assert summary["n_vectors_cached"] + summary["n_vectors_computed"] == 24
    assert _clusters(out) == _clusters(reference.out_dir)


def test_run_killed_while_writing_outputs_can_be_rerun_into_the_same_folder(photos: Path, tmp_path: Path):
    # What a kill between the first output file and summary.json leaves behind.
    out = tmp_path / "out"
    out.mkdir()
    (out / OUT_MARKER).write_text("This folder holds the outputs of an imgclust run.\n")
    (out / "assignments.csv").write_text("path,cluster\nimg_0_0.png,")
    (out / ".summary.json.x1y2.tmp").write_text("{")
    result = run(photos, out, features="pixels", k=3, cache=False)
    assert result.summary["n_ok"] == 24 and len(_clusters(out)) == 24


def test_a_left_over_temporary_file_alone_does_not_block_a_rerun(photos: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{OUT_MARKER}.abc123.tmp").write_text("")  # killed while writing the marker itself
    run(photos, out, features="pixels", k=3, cache=False)
    assert (out / "summary.json").exists()


def test_kill_9_during_export_leaves_no_half_written_file_and_rerun_finishes(photos: Path, tmp_path: Path):
    out, dest = tmp_path / "out", tmp_path / "sorted"
    run(photos, out, features="pixels", k=3, cache=False)
    sources = {_digest(p): p for p in photos.iterdir()}
    assert len(sources) == 24

    def visible() -> list[Path]:
        return [p for p in dest.glob("cluster_*/*") if not p.name.startswith(".")]

    def partials() -> list[Path]:
        return [p for p in dest.glob("cluster_*/.imgclust-partial-*") if p.stat().st_size > 0]

    proc = _slow_child(tmp_path, ["export", str(out), "--to", str(dest)], IMGCLUST_TEST_SLOW_COPY="0.2")
    _kill_when(proc, lambda: dest.is_dir() and len(visible()) >= 3 and bool(partials()))

    assert partials(), "the kill must land in the middle of copying a file"
    done = visible()
    assert 3 <= len(done) < 24
    for p in done:  # whatever has its real name is complete
        assert _digest(p) in sources and sources[_digest(p)].name == p.name

    report = export(out, dest)
    assert report.done + report.skipped_existing == 24 and report.done == 24 - len(done)
    final = visible()
    assert len(final) == 24, sorted(p.name for p in final)
    assert sorted(_digest(p) for p in final) == sorted(sources)  # each image exactly once, complete
    assert not list(dest.glob("cluster_*/.imgclust-partial-*"))
    assert export(out, dest).done == 0  # a third run has nothing left to do


@pytest.mark.parametrize("code,message", [
    (errno.ENOSPC, "No space left on the device while writing {out}/assignments.csv. Free some space and run again."),
    (errno.EACCES, "Permission denied while writing {out}/assignments.csv. Choose an output folder you can write to."),
    (errno.EROFS, "Permission denied while writing {out}/assignments.csv. Choose an output folder you can write to."),
])
def test_disk_full_or_no_permission_while_writing_outputs(photos: Path, tmp_path: Path, monkeypatch, code, message):
    import imgclust._fs as fs

    before = {p.name: _digest(p) for p in photos.iterdir()}
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name != OUT_MARKER:
            raise OSError(code, os.strerror(code))
        real_replace(src, dst)

    monkeypatch.setattr(fs.os, "replace", failing_replace)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(photos), "--out", str(out), "--features", "pixels", "--k", "3",
                                       "--no-cache", "-q"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == "Error: " + message.format(out=out)
    assert {p.name: _digest(p) for p in photos.iterdir()} == before  # the input is untouched
    assert sorted(p.name for p in out.iterdir()) == [OUT_MARKER]  # no temporary files left behind


def test_disk_full_during_export(photos: Path, tmp_path: Path, monkeypatch):
    import imgclust.outputs.export as export_module

    out, dest = tmp_path / "out", tmp_path / "sorted"
    run(photos, out, features="pixels", k=3, cache=False)
    before = {p.name: _digest(p) for p in photos.iterdir()}
    calls = []

    def copy_then_fail(src, dst, **kw):
        calls.append(src)
        if len(calls) > 5:
            Path(dst).write_bytes(Path(src).read_bytes()[:100])  # the disk fills up half-way through a file
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return export_module.shutil.copyfile(src, dst)

    monkeypatch.setattr(export_module.shutil, "copy2", copy_then_fail)
    result = CliRunner().invoke(main, ["export", str(out), "--to", str(dest)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"Error: Export to {dest} stopped: No space left on device ({dest}/cluster_" in text
    assert text.endswith("Nothing was overwritten; fix the cause and run the same command again to finish.")
    assert {p.name: _digest(p) for p in photos.iterdir()} == before
    assert len(list(dest.glob("cluster_*/*"))) == 5  # five complete copies, no partial one
    monkeypatch.undo()
    assert export(out, dest).done == 19
    assert len(list(dest.glob("cluster_*/*"))) == 24
