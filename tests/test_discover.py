from pathlib import Path

import pytest

from conftest import draw_image
from imgclust.errors import InputError, ParameterError
from imgclust.io.discover import attach_labels, discover, resolve_label_mode


def test_finds_every_extension_in_any_case_recursively(tmp_path: Path):
    for name in ["a.jpg", "b.JPEG", "c.Png", "sub/d.bmp", "sub/deeper/e.gif", "f.webp", "g.TIF", "h.tiff"]:
        draw_image(tmp_path / name, color=(200, 10, 10), fmt={"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP",
                   "gif": "GIF", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"}[name.rsplit(".", 1)[1].lower()])
    (tmp_path / "notes.txt").write_text("not an image")
    recs = discover(tmp_path)
    assert [r.relpath for r in recs] == ["a.jpg", "b.JPEG", "c.Png", "f.webp", "g.TIF", "h.tiff", "sub/d.bmp",
                                         "sub/deeper/e.gif"]
    assert all(r.ok and r.size > 0 and r.mtime_ns > 0 for r in recs)


def test_output_folder_inside_is_never_read(image_folder: Path):
    out = image_folder / "out"
    draw_image(out / "x.png", color=(1, 2, 3))
    recs = discover(image_folder, exclude=[out])
    assert not any(r.relpath.startswith("out/") for r in recs)


def test_missing_folder_and_file_are_clear_errors(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "nope")
    f = draw_image(tmp_path / "a.png", color=(1, 2, 3))
    with pytest.raises(InputError, match="not a folder"):
        discover(f)


def test_label_modes(tmp_path: Path):
    for rel in ["cat/cat.1.jpg", "cat/x_2.jpg", "dog/dog-3.jpg", "dog/sub/dog.4.jpg"]:
        draw_image(tmp_path / rel, color=(9, 9, 9))
    recs = discover(tmp_path)
    folder, used = attach_labels(recs, "auto")
    assert used == "folder" and [r.label for r in folder] == ["cat", "cat", "dog", "dog"]
    prefix, used = attach_labels(recs, "prefix")
    assert used == "prefix" and [r.label for r in prefix] == ["cat", "x", "dog", "dog"]
    none, used = attach_labels(recs, "none")
    assert used == "none" and all(r.label is None for r in none)


def test_auto_labels_need_two_first_level_folders(tmp_path: Path):
    assert resolve_label_mode("auto", ["a.jpg", "b.jpg"]) == "none"
    assert resolve_label_mode("auto", ["only/a.jpg", "only/b.jpg"]) == "none"
    assert resolve_label_mode("auto", ["x/a.jpg", "y/b.jpg"]) == "folder"
    with pytest.raises(ParameterError, match="Unknown label mode"):
        resolve_label_mode("colour", [])


def test_a_record_keeps_its_path_as_text_and_gives_it_as_a_path(tmp_path: Path):
    """A folder of millions of images: each record holds its path as one string (a Path keeps each part
    as a string of its own), shares its label's string, and still pickles and compares as before."""
    import pickle

    from imgclust.io.discover import ImageRecord

    for name in ("x/1.png", "x/2.png", "y/3.png"):
        draw_image(tmp_path / name, color=(200, 30, 30))
    records, mode = attach_labels(discover(tmp_path), "folder")
    r = records[0]
    assert isinstance(r.file, str) and r.path == tmp_path.resolve() / "x/1.png" and isinstance(r.path, Path)
    assert records[0].label is records[1].label == "x"  # one string per label
    assert pickle.loads(pickle.dumps(r)) == r and not hasattr(r, "__dict__")
    assert ImageRecord(tmp_path / "z.png", "z.png").file == str(tmp_path / "z.png")  # a Path given becomes text
