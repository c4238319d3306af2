"""A cached rerun reads no image file whose identity is cached: not to embed it, not to hash it for the
content identity, not to look for duplicates. Only the report's thumbnails (at most about 1,200 files,
whatever the folder's size) are read again."""

from __future__ import annotations

import builtins
import traceback
from pathlib import Path

import pytest

import imgclust
from conftest import draw_image, photos_with_a_copy


@pytest.fixture()
def photos_with_copies(tmp_path: Path) -> Path:
    # one size for all: every file's size collides with another's, so duplicate detection looks at all
    return photos_with_a_copy(tmp_path / "photos", 5, ".bmp")


def _reads_of(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Record every open() of a file under ``folder``: (reads outside the report's thumbnails, thumbnail reads)."""
    other: list[str] = []
    thumbs: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(file, (str, Path)) and Path(file).resolve().is_relative_to(folder.resolve()):
            in_thumbnail = any(f.name == "thumbnail_data_uri" for f in traceback.extract_stack())
            (thumbs if in_thumbnail else other).append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    return other, thumbs


@pytest.mark.parametrize("identity", ["stat", "content"])
def test_cached_rerun_reads_no_image_file(photos_with_copies: Path, tmp_path: Path, identity: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {"features": "pixels", "k": 3, "identity": identity, "cache": tmp_path / "cache"}
    with monkeypatch.context() as m:
        first_reads, _ = _reads_of(photos_with_copies, m)
        first = imgclust.run(photos_with_copies, tmp_path / "out1", **settings)
    assert first_reads, "the counter must see the first run's reads"
    assert first.summary["n_duplicates"] == 1

    reads, thumb_reads = _reads_of(photos_with_copies, monkeypatch)
    second = imgclust.run(photos_with_copies, tmp_path / "out2", **settings)
    assert reads == []
    assert 0 < len(set(thumb_reads)) <= 16  # the report draws its thumbnails (one file may appear twice)
    assert (second.summary["n_vectors_cached"], second.summary["n_vectors_computed"]) == (16, 0)
    assert second.summary["results_cached"] == ["clean", "cluster", "names", "map"]  # the results cache reads none
    assert second.summary["duplicates"] == first.summary["duplicates"] == [["c0/copy of img_0.bmp", "c0/img_0.bmp"]]
    assert second.labels.tolist() == first.labels.tolist()


def test_changed_file_is_hashed_again(photos_with_copies: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The remembered digest belongs to (path, size, modification time): a file edited in place is read again."""
    settings = {"features": "pixels", "k": 3, "cache": tmp_path / "cache"}
    imgclust.run(photos_with_copies, tmp_path / "out1", **settings)
    target = photos_with_copies / "c0" / "copy of img_0.bmp"
    draw_image(target, color=(1, 2, 3), seed=99, size=(40, 30))  # same size, new bytes, new mtime
    reads, _ = _reads_of(photos_with_copies, monkeypatch)
    again = imgclust.run(photos_with_copies, tmp_path / "out2", **settings)
    assert again.summary["n_duplicates"] == 0
    assert set(reads) == {str(target)}
