"""Export: copies by default, never overwrites, never writes outside its destination; a move needs
--yes, shows a plan first, is recorded in a manifest and can be undone."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import draw_image
from imgclust.cli import main
from imgclust.errors import OutputError
from imgclust.outputs.export import CLUSTERS_CSV, MANIFEST, export, undo_export
from imgclust.pipeline import run


def _tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (links: '-> target')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture()
def finished_run(tmp_path: Path) -> tuple[Path, Path]:
    """A clustered folder: two classes, with the same file name in two subfolders."""
    root = tmp_path / "photos"
    for c, (name, color) in enumerate({"red": (220, 30, 30), "blue": (30, 40, 220)}.items()):
        for i in range(3):
            draw_image(root / name / f"{i}.png", color=color, seed=10 * c + i)
    draw_image(root / "red" / "extra" / "0.png", color=(220, 30, 30), seed=99)  # same name as red/0.png
    out = tmp_path / "out"
    run(root, out, features="pixels", k=2, cache=False)
    return root, out


def _exported(dest: Path) -> list[Path]:
    return sorted(p for p in dest.glob("cluster_*/*") if not p.name.startswith("."))


def test_copy_is_the_default_and_leaves_the_input_untouched(finished_run, tmp_path):
    root, out = finished_run
    before = _tree(root)
    code, text = _invoke(["export", str(out), "--to", str(tmp_path / "sorted")])
    assert code == 0 and "Copied 7 images into" in text and "(0 already there)" in text
    assert _tree(root) == before
    files = _exported(tmp_path / "sorted")
    assert len(files) == 7 and sorted(p.name for p in files).count("0-1.png") == 1  # same name: suffix
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in files) == sorted(before.values())


def test_rerun_adds_nothing_twice(finished_run, tmp_path):
    _, out = finished_run
    dest = tmp_path / "sorted"
    first = export(out, dest)
    names = [p.name for p in _exported(dest)]
    again = export(out, dest)
    assert (first.done, again.done, again.skipped_existing) == (7, 0, 7)
    assert [p.name for p in _exported(dest)] == names


def test_never_overwrites_a_file_already_at_the_destination(finished_run, tmp_path):
    root, out = finished_run
    dest = tmp_path / "sorted"
    export(out, dest)
    victim = next(p for p in _exported(dest) if p.name == "1.png")
    for p in _exported(dest):  # the user replaces the exported files with their own work
        p.write_bytes(b"the user's own file")
    report = export(out, dest)
    assert report.done == 7  # exported again under new names ...
    assert victim.read_bytes() == b"the user's own file"  # ... and nothing of the user's was overwritten
    assert sum(p.read_bytes() == b"the user's own file" for p in _exported(dest)) == 7


def test_symlink_mode_and_its_rerun(finished_run, tmp_path):
    root, out = finished_run
    dest = tmp_path / "links"
    assert export(out, dest, mode="symlink").done == 7
    assert export(out, dest, mode="symlink").done == 0
    links = _exported(dest)
    assert len(links) == 7 and all(p.is_symlink() and p.resolve().is_relative_to(root.resolve()) for p in links)


def test_export_destination_inside_the_images_folder_is_refused(finished_run):
    root, out = finished_run
    before = _tree(root)
    for dest in (root / "sorted", root, root / "red"):
        code, text = _invoke(["export", str(out), "--to", str(dest)])
        assert (code, text) == (2, f"Error: The export destination {dest} is inside the images folder "
                                   f"{root.resolve()}; choose a folder outside it so the images are never "
                                   "mixed with the output.")
        assert _tree(root) == before and not (root / "sorted").exists()


def test_export_needs_a_destination_and_a_run(tmp_path):
    assert _invoke(["export", str(tmp_path)]) == (2, "Error: Name the destination with --to DEST.")
    assert _invoke(["export", str(tmp_path), "--to", str(tmp_path / "d")]) == (
        2, f"Error: {tmp_path} holds no summary.json: it is not the output folder of an imgclust run.")
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------
# Move: a plan, --yes, a manifest, undo.


def test_move_without_yes_shows_the_plan_and_moves_nothing(finished_run, tmp_path):
    root, out = finished_run
    before = _tree(root)
    dest = tmp_path / "sorted"
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move"])
    assert code == 2
    assert f"Plan: move 7 images out of their folder into 2 folders under {dest}:" in text
    assert f"{dest}/cluster_00/" in text and f"{dest}/cluster_01/" in text
    assert text.endswith("Error: Moving files needs --yes. Nothing was moved. (Every move is recorded; "
                         "'imgclust export --undo --to DEST' puts files back.)")
    assert _tree(root) == before and not dest.exists()


def test_move_records_every_move_and_undo_puts_everything_back(finished_run, tmp_path):
    root, out = finished_run
    before = _tree(root)
    dest = tmp_path / "sorted"
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move", "--yes"])
    assert code == 0 and "Moved 7 images into" in text
    assert _tree(root) == {}  # every image left its folder ...
    moved = _exported(dest)
    assert len(moved) == 7  # ... and is at the destination, none lost
    header, *entries = [json.loads(line) for line in (dest / MANIFEST).read_text().splitlines()]
    assert (header["op"], header["images_dir"], header["mode"]) == ("export", str(root.resolve()), "move")
    # targets relative to DEST, sources relative to the images folder (recorded once, in the header)
    assert sorted(e["target"] for e in entries) == sorted(p.relative_to(dest).as_posix() for p in moved)
    assert {e["source"] for e in entries} == set(before)

    rerun = export(out, dest, mode="move")  # a rerun moves nothing twice, and knows those files were moved
    assert (rerun.done, rerun.skipped_existing, rerun.missing_sources) == (0, 7, [])

    code, text = _invoke(["export", "--undo", "--to", str(dest)])
    assert (code, text) == (0, f"Put back 7 files moved by an earlier export to {dest} into {root.resolve()}.")
    assert _tree(root) == before
    assert _exported(dest) == []
    assert undo_export(dest).restored == 0  # undo twice is harmless


def test_undo_never_overwrites_a_file_put_back_in_the_meantime(finished_run, tmp_path):
    root, out = finished_run
    dest = tmp_path / "sorted"
    export(out, dest, mode="move")
    (root / "blue" / "1.png").write_bytes(b"a new file the user made")
    code, text = _invoke(["export", "--undo", "--to", str(dest)])
    assert code == 0 and text.startswith(f"Put back 6 files moved by an earlier export to {dest} into")
    assert "Left in place, nothing overwritten:" in text and f"(something else is now at {root}/blue/1.png)" in text
    assert (root / "blue" / "1.png").read_bytes() == b"a new file the user made"
    assert [p.name for p in _exported(dest)] == ["1.png"]  # the moved original is still there, not deleted


def test_undo_without_a_manifest(tmp_path):
    assert _invoke(["export", "--undo", "--to", str(tmp_path)]) == (
        2, f"Error: {tmp_path} holds no {MANIFEST}: nothing to undo.")


def test_move_and_undo_with_names_that_are_not_utf8(tmp_path):
    # Not UTF-8: a file name, and the images, output and destination folders themselves.
    def latin1(name: bytes) -> Path:
        return Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + name))

    root, out, dest = latin1(b"ph\xf6tos"), latin1(b"r\xe9sultats"), latin1(b"tri\xe9")
    weird = Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.png"))
    for i, color in enumerate([(220, 30, 30), (30, 40, 220)]):
        draw_image(root / f"{i}.png", color=color, seed=i)
    draw_image(weird, color=(30, 40, 220), seed=5, fmt="PNG")
    run(root, out, features="pixels", k=2, cache=False)
    assert Path(json.loads((out / "summary.json").read_text(encoding="utf-8"))["images_dir"]) == root
    assert export(out, dest, mode="move").done == 3 and not weird.exists()
    assert undo_export(dest).restored == 3 and weird.exists()


# ---------------------------------------------------------------------------------------------
# Nothing is written outside the destination.


def test_hostile_cluster_names_stay_inside_the_destination(finished_run, tmp_path):
    root, out = finished_run
    summary = json.loads((out / "summary.json").read_text())
    summary["cluster_names"] = {"0": "../../escaped", "1": "/tmp/abs"}
    (out / "summary.json").write_text(json.dumps(summary))
    dest = tmp_path / "sorted"
    export(out, dest)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not (p.is_relative_to(dest) or p.is_relative_to(root)
                                                                    or p.is_relative_to(out))]
    assert outside == []
    assert sorted(p.name for p in dest.iterdir()) == ["cluster_00", "cluster_01", CLUSTERS_CSV, MANIFEST]


def test_a_link_in_the_destination_pointing_outside_is_not_followed(finished_run, tmp_path):
    _, out = finished_run
    dest, elsewhere = tmp_path / "sorted", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "cluster_00").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="is a link to a place outside"):
        export(out, dest)
    assert list(elsewhere.iterdir()) == []


def test_move_interrupted_after_recording_its_intent_is_finished_and_undone(finished_run, tmp_path, monkeypatch):
    import imgclust.outputs.export as export_module

    root, out = finished_run
    before = _tree(root)
    dest = tmp_path / "sorted"
    real_move, calls = export_module._move_no_overwrite, []

    def dies_on_third(src, target):
        calls.append(src)
        if len(calls) == 3:
            raise OSError(5, "Input/output error", str(src))  # the intent is in the manifest; the file is not moved
        real_move(src, target)

    monkeypatch.setattr(export_module, "_move_no_overwrite", dies_on_third)
    with pytest.raises(OutputError, match="run the same command again to finish"):
        export(out, dest, mode="move")
    monkeypatch.undo()
    assert len(_tree(root)) == 5 and len(_exported(dest)) == 2
    report = export(out, dest, mode="move")
    assert (report.done, report.skipped_existing) == (5, 2)
    assert _tree(root) == {} and len(_exported(dest)) == 7
    assert undo_export(dest).restored == 7
    assert _tree(root) == before


def test_move_killed_between_link_and_unlink_is_finished_without_a_second_copy(finished_run, tmp_path):
    root, out = finished_run
    before = _tree(root)
    dest = tmp_path / "sorted"
    export(out, dest, mode="move")
    entry = json.loads((dest / MANIFEST).read_text().splitlines()[1])
    os.link(dest / entry["target"], root / entry["source"])  # the state a kill -9 inside the move leaves: both names, one file
    report = export(out, dest, mode="move")
    assert (report.done, report.skipped_existing) == (1, 6)
    assert _tree(root) == {} and len(_exported(dest)) == 7  # no "-1" copy
    assert undo_export(dest).restored == 7 and _tree(root) == before
