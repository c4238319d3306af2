"""Export and its journal under hostile and unlucky conditions (issues 18 and 19): a rerun of another
grouping, moves across filesystems, hand-edited journals, undo from another folder, destinations
that a run would read, long and strange file names, and links."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import imgclust.pipeline as pipeline
from conftest import draw_image
from imgclust.cli import main
from imgclust.errors import InputError, OutputError
from imgclust.outputs.export import CLUSTERS_CSV, MANIFEST, export, free_name, plan_export, undo_export
from imgclust.outputs.tables import read_assignments, read_csv, write_csv

RED, BLUE = (220, 30, 30), (30, 40, 220)
REAL_COPYFILE = shutil.copyfile


@pytest.fixture(autouse=True)
def _no_report(monkeypatch):
    """The HTML report plays no part in export; skipping it keeps each run ~0.2 s (report tests cover names)."""
    monkeypatch.setattr(pipeline, "write_report", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "save_report_data", lambda *a, **k: None)


def _run(root: Path, out: Path, k: int = 2) -> Path:
    pipeline.run(root, out, features="pixels", k=k, cache=False)
    return out


def _hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file (links are listed as '-> target')."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            out[rel] = "-> " + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _exported(dest: Path) -> list[Path]:
    return sorted(p for p in dest.glob("cluster_*/*") if not p.name.startswith("."))


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """Seven images in two colours, one name used twice (red/0.png, red/extra/0.png)."""
    root = tmp_path / "photos"
    for c, (name, color) in enumerate({"red": RED, "blue": BLUE}.items()):
        for i in range(3):
            draw_image(root / name / f"{i}.png", color=color, seed=10 * c + i, size=(24, 16))
    draw_image(root / "red" / "extra" / "0.png", color=RED, seed=99, size=(24, 16))
    return root


def _folder_of(dest: Path) -> dict[str, str]:
    """sha256 of each exported file -> the cluster folder it is in."""
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p.parent.name for p in _exported(dest) if p.suffix == ".png"}


def _expected_folders(root: Path, out: Path) -> dict[str, str]:
    return {hashlib.sha256((root / r["path"]).read_bytes()).hexdigest(): f"cluster_{int(r['cluster']):02d}"
            for r in read_assignments(out)}


# ---------------------------------------------------------------------------------------------
# 18.1: the export of a rerun with another grouping is never "0 copied, all already there".


def test_export_of_a_rerun_with_another_grouping_is_refused_then_replaced(photos, tmp_path):
    out, dest = _run(photos, tmp_path / "out", k=2), tmp_path / "sorted"
    assert export(out, dest).done == 7
    (dest / "cluster_00" / "my-notes.txt").write_text("the user's own file")
    _run(photos, out, k=3)  # the same --out, another k
    before = _hashes(dest)
    code, text = _invoke(["export", str(out), "--to", str(dest)])
    assert code == 2
    assert text.startswith(f"Error: {dest} already holds an earlier copy export of a different grouping (from "
                           f"{out.resolve()}; 7 of its files are still there); adding this copy export would mix the "
                           "two. Choose another --to, or add --replace")
    assert _hashes(dest) == before  # nothing written

    code, text = _invoke(["export", str(out), "--to", str(dest), "--replace"])
    assert code == 0 and "Removed 7 files of the earlier export" in text and "Copied 7 images" in text
    assert _folder_of(dest) == _expected_folders(photos, out)  # every image sits in its new cluster's folder
    assert len(_exported(dest)) == 8 and (dest / "cluster_00" / "my-notes.txt").read_text() == "the user's own file"
    assert export(out, dest).done == 0  # and the new export is now the one a rerun finishes


def test_the_same_grouping_from_another_output_folder_is_the_same_export(photos, tmp_path):
    dest = tmp_path / "sorted"
    export(_run(photos, tmp_path / "out1"), dest)
    again = export(_run(photos, tmp_path / "out2"), dest)  # same images, same seed: the same grouping
    assert (again.done, again.skipped_existing) == (0, 7)


def test_replace_never_removes_files_an_earlier_move_took(photos, tmp_path):
    out, dest = _run(photos, tmp_path / "out", k=2), tmp_path / "sorted"
    copy_of_photos = tmp_path / "photos2"
    shutil.copytree(photos, copy_of_photos)
    export(out, dest, mode="move")
    out2 = _run(copy_of_photos, tmp_path / "out2", k=3)
    with pytest.raises(OutputError, match=r"were moved out of .*photos: put them back first with 'imgclust export "
                                          r"--undo --to .*sorted', or choose another --to\."):
        export(out2, dest, replace=True)
    assert len(_exported(dest)) == 7


def test_a_journal_from_an_older_imgclust_is_refused(photos, tmp_path):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    (dest / "cluster_00").mkdir(parents=True)
    (dest / MANIFEST).write_text(json.dumps({"op": "move", "source": str(photos / "red/0.png"),
                                             "target": "sorted/cluster_00/0.png"}) + "\n")
    with pytest.raises(OutputError, match="written by an older imgclust"):
        export(out, dest)
    with pytest.raises(InputError, match="written by an older imgclust.*nothing was moved"):
        undo_export(dest)


# ---------------------------------------------------------------------------------------------
# 18.3: moves and undo across filesystems (os.link / os.rename raise EXDEV between the two trees).


@pytest.fixture()
def two_filesystems(monkeypatch, tmp_path):
    """Make every link or rename between tmp_path/photos and tmp_path/sorted fail with EXDEV."""
    real_link, real_rename = os.link, os.rename
    trees = [tmp_path / "photos", tmp_path / "sorted"]

    def tree(p) -> int:
        return next((i for i, t in enumerate(trees) if Path(p).is_relative_to(t)), -1)

    def check(a, b):
        if tree(a) != tree(b):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(a), None, str(b))

    def link(a, b, **kw):
        check(a, b)
        return real_link(a, b, **kw)

    def rename(a, b, **kw):
        check(a, b)
        return real_rename(a, b, **kw)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "rename", rename)


def _fail_copy_half_way(monkeypatch, at_call: int):
    """shutil.copyfile writes half of the file, then fails (as a kill or a full disk would), at call ``at_call``."""
    real, calls = REAL_COPYFILE, []

    def copyfile(src, dst, *, follow_symlinks=True):
        calls.append(src)
        if len(calls) == at_call:
            data = Path(src).read_bytes()
            Path(dst).write_bytes(data[: len(data) // 2])
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(shutil, "copyfile", copyfile)


def test_move_and_undo_across_filesystems_put_every_byte_back(photos, tmp_path, two_filesystems):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    before = _hashes(photos)
    assert export(out, dest, mode="move").done == 7
    assert _hashes(photos) == {}
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in _exported(dest)) == sorted(before.values())
    assert not list(dest.rglob(".imgclust-partial-*"))
    assert undo_export(dest).restored == 7
    assert _hashes(photos) == before and _exported(dest) == []


def test_a_move_across_filesystems_that_dies_mid_file_leaves_no_truncated_file(photos, tmp_path, two_filesystems,
                                                                                monkeypatch):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    before = _hashes(photos)
    _fail_copy_half_way(monkeypatch, at_call=3)
    with pytest.raises(OutputError, match="run the same command again to finish"):
        export(out, dest, mode="move")
    for p in _exported(dest):  # whatever has a real name is complete
        assert hashlib.sha256(p.read_bytes()).hexdigest() in before.values(), p
    monkeypatch.setattr(shutil, "copyfile", REAL_COPYFILE)
    report = export(out, dest, mode="move")
    assert report.done + report.skipped_existing == 7
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in _exported(dest)) == sorted(before.values())
    assert not list(dest.rglob(".imgclust-partial-*")) and _hashes(photos) == {}


def test_a_move_across_filesystems_killed_before_removing_the_source_adds_no_second_copy(photos, tmp_path,
                                                                                        two_filesystems, monkeypatch):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    before = _hashes(photos)
    real_unlink = os.unlink

    def unlink(p, *a, **kw):
        if Path(p).is_relative_to(photos):
            raise OSError(errno.EIO, "Input/output error", str(p))  # the copy is in place, the source stays
        return real_unlink(p, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(OutputError):
        export(out, dest, mode="move")
    monkeypatch.setattr(os, "unlink", real_unlink)
    report = export(out, dest, mode="move")
    assert (report.done, report.skipped_existing) == (7, 0)
    assert len(_exported(dest)) == 7 and not any(p.name.endswith("-2.png") or p.name == "1-1.png"
                                                 for p in _exported(dest))
    assert undo_export(dest).restored == 7 and _hashes(photos) == before


def test_an_undo_across_filesystems_that_dies_mid_file_is_finished_by_a_rerun(photos, tmp_path, two_filesystems,
                                                                               monkeypatch):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    before = _hashes(photos)
    export(out, dest, mode="move")
    _fail_copy_half_way(monkeypatch, at_call=2)
    with pytest.raises(OutputError, match="Undo stopped"):
        undo_export(dest)
    for rel, digest in _hashes(photos).items():  # nothing truncated under a real name in the images folder
        assert before[rel] == digest
    monkeypatch.setattr(shutil, "copyfile", REAL_COPYFILE)
    assert undo_export(dest).restored == 6
    assert _hashes(photos) == before and _exported(dest) == []


@pytest.fixture()
def other_filesystem(tmp_path):
    """A folder on another filesystem than tmp_path (the tmpfs /dev/shm), removed afterwards."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no writable second filesystem (/dev/shm on another device than the test folder)")
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="imgclust-test-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_move_and_undo_onto_a_real_second_filesystem(photos, tmp_path, other_filesystem):
    out, dest = _run(photos, tmp_path / "out"), other_filesystem / "sorted"
    before = _hashes(photos)
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move", "--yes"])
    assert code == 0 and "Moved 7 images" in text
    assert _hashes(photos) == {} and not list(dest.rglob(".imgclust-partial-*"))
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in _exported(dest)) == sorted(before.values())
    assert undo_export(dest).restored == 7
    assert _hashes(photos) == before and not list(photos.rglob(".imgclust-partial-*"))


def test_kill_9_during_a_move_onto_another_filesystem_leaves_no_truncated_file(tmp_path, other_filesystem):
    from test_faults import _kill_when, _slow_child  # a real `python -m imgclust`, each file copy slowed down

    root = tmp_path / "photos"
    for i in range(12):
        draw_image(root / f"img_{i}.png", color=RED if i % 2 else BLUE, seed=i, size=(96, 72))
    out, dest = _run(root, tmp_path / "out"), other_filesystem / "sorted"
    before = _hashes(root)

    def partials() -> list[Path]:
        return [p for p in dest.glob("cluster_*/.imgclust-partial-*") if p.stat().st_size > 0]

    proc = _slow_child(tmp_path, ["export", str(out), "--to", str(dest), "--mode", "move", "--yes"],
                       IMGCLUST_TEST_SLOW_COPY="0.2")
    _kill_when(proc, lambda: dest.is_dir() and len(_exported(dest)) >= 2 and bool(partials()))
    assert partials(), "the kill must land in the middle of copying a file"
    assert 2 <= len(_exported(dest)) < 12
    for p in _exported(dest):  # whatever has a real name is complete
        assert hashlib.sha256(p.read_bytes()).hexdigest() in before.values(), p
    report = export(out, dest, mode="move")
    assert report.done + report.skipped_existing == 12
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in _exported(dest)) == sorted(before.values())
    assert _hashes(root) == {} and not list(dest.rglob(".imgclust-partial-*"))  # no "-1" copy, no temporary
    assert undo_export(dest).restored == 12 and _hashes(root) == before


# ---------------------------------------------------------------------------------------------
# 18.7: folders are cluster_00, cluster_01 ...; the suggested names go to clusters.csv.


def test_folders_are_named_by_cluster_number_and_the_names_go_to_clusters_csv(photos, tmp_path):
    out = _run(photos, tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    summary["cluster_names"] = {"0": "Labrador retriever / kelpie", "1": "tabby"}
    (out / "summary.json").write_text(json.dumps(summary))
    dest = tmp_path / "sorted"
    code, _ = _invoke(["export", str(out), "--to", str(dest)])
    assert code == 0
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == ["cluster_00", "cluster_01"]
    rows = read_csv(dest / CLUSTERS_CSV)
    assert [(r["folder"], r["cluster"], r["suggested_name"]) for r in rows] == [
        ("cluster_00", "0", "Labrador retriever / kelpie"), ("cluster_01", "1", "tabby")]
    assert [int(r["images"]) for r in rows] == [len(list((dest / f).iterdir())) for f in ("cluster_00", "cluster_01")]
    # another run of the same grouping gives the same folders with the same files
    out2 = _run(photos, tmp_path / "out2")
    dest2 = tmp_path / "sorted2"
    export(out2, dest2)
    assert {p.relative_to(dest).as_posix() for p in _exported(dest)} == {
        p.relative_to(dest2).as_posix() for p in _exported(dest2)}


# ---------------------------------------------------------------------------------------------
# 19.1, 19.2: undo checks every journal entry and does not depend on the current folder.


def _tamper(dest: Path, *entries: dict) -> None:
    with open(dest / MANIFEST, "a") as fh:
        for e in entries:
            fh.write(json.dumps(e) + "\n")


def test_undo_refuses_journal_entries_that_point_outside(photos, tmp_path):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    before = _hashes(photos)
    export(out, dest, mode="move")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    st = victim.stat()
    planted = next(p for p in _exported(dest))
    pst = planted.stat()
    (photos / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _tamper(dest,
            {"op": "move", "source": "stolen.txt", "target": "../victim.txt", "size": st.st_size,
             "mtime_ns": st.st_mtime_ns},  # takes a file from outside DEST
            {"op": "move", "source": "../planted.png", "target": planted.relative_to(dest).as_posix(),
             "size": pst.st_size, "mtime_ns": pst.st_mtime_ns},  # puts a file outside the images folder
            {"op": "move", "source": "linked/deep/planted.png", "target": planted.relative_to(dest).as_posix(),
             "size": pst.st_size, "mtime_ns": pst.st_mtime_ns},  # the same, through a link in the images folder
            {"op": "move", "source": str(tmp_path / "abs.png"), "target": "/etc/hostname", "size": 1,
             "mtime_ns": 1})
    code, text = _invoke(["export", "--undo", "--to", str(dest)])
    assert code == 2
    assert text.count("Refused:") == 4 and text.endswith(
        f"Error: 4 entries of the export journal in {dest} failed a check and were not moved (listed above); it may "
        "have been edited. Nothing was overwritten.")
    assert victim.read_text() == "mine" and not (photos / "stolen.txt").exists()
    assert not (tmp_path / "planted.png").exists() and not (tmp_path / "elsewhere").exists()  # no folder made
    assert not (tmp_path / "abs.png").exists()
    (photos / "linked").unlink()
    assert _hashes(photos) == before  # the honest entries were put back


def test_undo_checks_that_the_file_is_the_one_it_moved(photos, tmp_path):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    export(out, dest, mode="move")
    swapped = _exported(dest)[0]
    swapped.unlink()
    swapped.write_bytes(b"another file, same name")
    report = undo_export(dest)
    assert report.restored == 6 and len(report.refused) == 1
    assert report.refused[0].startswith(f"{swapped}: not the file that export moved")
    assert swapped.read_bytes() == b"another file, same name"


def test_undo_works_from_any_folder_and_never_touches_look_alike_files(photos, tmp_path, monkeypatch):
    out = _run(photos, tmp_path / "out")
    before = _hashes(photos)
    monkeypatch.chdir(tmp_path)
    export(out, "sorted", mode="move")  # a relative DEST
    elsewhere = tmp_path / "elsewhere"
    decoys = {}
    for p in _exported(tmp_path / "sorted"):  # a folder holding sorted/cluster_NN/<same names>, unrelated files
        decoy = elsewhere / "sorted" / p.parent.name / p.name
        decoy.parent.mkdir(parents=True, exist_ok=True)
        decoy.write_bytes(b"unrelated " + p.name.encode())
        decoys[decoy] = decoy.read_bytes()
    monkeypatch.chdir(elsewhere)
    assert undo_export(tmp_path / "sorted").restored == 7
    assert _hashes(photos) == before
    assert all(d.read_bytes() == data for d, data in decoys.items())


def test_undo_only_follows_a_journal_of_the_user_running_it(photos, tmp_path):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    export(out, dest, mode="move")
    try:
        os.chown(dest / MANIFEST, os.geteuid() + 4242, -1)  # as another user would leave it in a shared DEST
    except PermissionError:
        pytest.skip("changing a file's owner needs root")
    with pytest.raises(InputError, match=r"belongs to another user .*only follows an export journal you own"):
        undo_export(dest)
    assert len(_exported(dest)) == 7


# ---------------------------------------------------------------------------------------------
# 19.4: DEST can never be read as images by a later run.


def test_a_destination_that_contains_the_images_folder_is_refused(tmp_path):
    dest = tmp_path / "sorted"
    root = dest / "cluster_00"
    for i, color in enumerate([RED, BLUE, RED]):
        draw_image(root / f"{i}.png", color=color, seed=i, size=(24, 16))
    out = _run(root, tmp_path / "out")
    before = _hashes(dest)
    code, text = _invoke(["export", str(out), "--to", str(dest)])
    assert (code, text) == (2, f"Error: The export destination {dest} contains the images folder {root}; choose a "
                               "folder outside it so the images are never mixed with the output.")
    assert _hashes(dest) == before


def test_a_destination_reached_from_the_images_folder_through_a_link_is_refused(photos, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (photos / "more").symlink_to(elsewhere, target_is_directory=True)
    out = _run(photos, tmp_path / "out")
    dest = elsewhere / "sorted"
    code, text = _invoke(["export", str(out), "--to", str(dest)])
    assert (code, text) == (2, f"Error: The export destination {dest} is inside {elsewhere}, which the images folder "
                               f"reaches through the symbolic link {photos / 'more'}: the next run would read the "
                               "exported files as images. Choose a folder outside it.")
    assert not dest.exists()


# ---------------------------------------------------------------------------------------------
# 19.6: any file name round-trips through assignments.csv.

ODD_NAMES = ["car\rriage.png", "new\nline.png", "both\r\n.png", 'quo"te.png', "com,ma.png", "ünï©ødé 猫.png",
             "\x1b[31mansi.png", "tab\there.png", " space .png", "-dash.png", "[bold]x[red].png", "\x85nel\u2028.png"]


def test_csv_round_trips_any_text(tmp_path):
    rows = [{"path": n, "cluster": i} for i, n in enumerate(ODD_NAMES)]
    write_csv(tmp_path / "a.csv", rows)
    assert [r["path"] for r in read_csv(tmp_path / "a.csv")] == ODD_NAMES
    with open(tmp_path / "a.csv", encoding="utf-8", newline="") as fh:  # any csv reader sees the same
        assert [r["path"] for r in csv.DictReader(fh)] == ODD_NAMES


def test_csv_is_written_row_by_row_and_a_failure_leaves_the_old_file(tmp_path):
    """Rows are written as a generator makes them (a table of millions is never held whole); an error
    midway leaves the earlier file as it was and no temporary file."""
    path = tmp_path / "a.csv"
    write_csv(path, ({"path": n, "cluster": i} for i, n in enumerate(ODD_NAMES)))
    assert [r["path"] for r in read_csv(path)] == ODD_NAMES
    before = path.read_bytes()

    def failing():
        yield {"path": "x.png", "cluster": 0}
        raise ValueError("labels for 1 usable records")

    with pytest.raises(ValueError, match="usable records"):
        write_csv(path, failing())
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    write_csv(tmp_path / "empty.csv", iter([]), ["path", "cluster"])
    assert (tmp_path / "empty.csv").read_text() == "path,cluster\n"


def test_file_names_with_control_characters_survive_run_and_export(tmp_path):
    root = tmp_path / "photos"
    for i, name in enumerate(ODD_NAMES):
        draw_image(root / name, color=RED if i % 2 else BLUE, seed=i, size=(24, 16), fmt="PNG")
    out = _run(root, tmp_path / "out")
    assert sorted(r["path"] for r in read_assignments(out)) == sorted(ODD_NAMES)
    rep = export(out, tmp_path / "sorted")
    assert (rep.done, rep.missing_sources) == (len(ODD_NAMES), [])
    assert sorted(p.name for p in _exported(tmp_path / "sorted")) == sorted(ODD_NAMES)


# ---------------------------------------------------------------------------------------------
# 19.8: names at the length limit.


def test_clashing_names_at_the_length_limit_are_shortened(tmp_path):
    root = tmp_path / "photos"
    long_ascii = "x" * 251 + ".png"  # 255 bytes
    long_utf8 = "é" * 125 + "y.png"  # 255 bytes, two per é
    for sub in ("a", "b"):
        for name in (long_ascii, long_utf8):
            draw_image(root / sub / name, color=RED, seed=1, size=(24, 16))  # same bytes: same cluster
    draw_image(root / "blue.png", color=BLUE, seed=2, size=(24, 16))
    out = _run(root, tmp_path / "out")
    before = _hashes(root)
    dest = tmp_path / "sorted"
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move", "--yes"])
    assert code == 0 and "Moved 5 images" in text
    names = sorted(p.name for p in _exported(dest))
    assert all(len(os.fsencode(n)) <= 255 for n in names) and len(names) == 5
    assert "x" * 249 + "-1.png" in names and "é" * 124 + "-1.png" in names  # cut by whole characters
    assert undo_export(dest).restored == 5 and _hashes(root) == before


def test_free_name_cuts_the_stem_by_bytes(tmp_path):
    (tmp_path / ("a" * 251 + ".png")).write_bytes(b"")
    assert free_name(tmp_path, "a" * 251 + ".png").name == "a" * 249 + "-1.png"
    assert free_name(tmp_path, "b" * 300 + ".png").name == "b" * 251 + ".png"  # too long even alone
    assert free_name(tmp_path, "new.png").name == "new.png"


def test_an_error_names_the_target_not_the_temporary_file(photos, tmp_path, monkeypatch):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"

    def full(src, dst, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copy2", full)
    code, text = _invoke(["export", str(out), "--to", str(dest)])
    assert code == 2 and ".imgclust-partial" not in text
    assert f"Error: Export to {dest} stopped: No space left on device ({dest}/cluster_0" in text
    assert "/0.png)" in text or "/1.png)" in text or "/2.png)" in text


# ---------------------------------------------------------------------------------------------
# 19.9: a journal that is a link is never followed.


def test_a_journal_that_is_a_link_is_refused(photos, tmp_path):
    out, dest = _run(photos, tmp_path / "out"), tmp_path / "sorted"
    dest.mkdir()
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    (dest / MANIFEST).symlink_to(outside)
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move", "--yes"])
    assert code == 2 and text.endswith(
        f"Error: {dest / MANIFEST} is a symbolic link (to {outside}); imgclust does not read or write its export "
        f"journal through a link, which could put it outside {dest}. Remove the link, or choose another --to.")
    assert outside.read_text() == "" and len(_hashes(photos)) == 7
    assert _invoke(["export", "--undo", "--to", str(dest)])[0] == 2


# ---------------------------------------------------------------------------------------------
# 19.13: a move only takes files that live inside the images folder.


def test_move_leaves_links_and_files_outside_the_images_folder_alone(photos, tmp_path):
    outside = tmp_path / "outside"
    for i in range(2):
        draw_image(outside / f"o{i}.png", color=BLUE, seed=50 + i, size=(24, 16))
    (photos / "linked").symlink_to(outside, target_is_directory=True)
    (photos / "blue" / "rel-link.png").symlink_to("0.png")  # a relative link
    out = _run(photos, tmp_path / "out")
    outside_before, photos_before = _hashes(outside), _hashes(photos)
    dest = tmp_path / "sorted"
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move"])
    assert code == 2 and "Plan: move 7 images" in text
    assert f"Left where it is: linked/o0.png: really lives at {outside / 'o0.png'}, outside the images folder" in text
    assert "Left where it is: blue/rel-link.png: a symbolic link; moving it would move only the link" in text
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move", "--yes"])
    assert code == 0 and "Moved 7 images" in text and "3 images were left where they are" in text
    assert _hashes(outside) == outside_before and (photos / "blue" / "rel-link.png").is_symlink()
    assert undo_export(dest).restored == 7
    assert _hashes(photos) == photos_before


def test_plan_lists_every_image(photos, tmp_path):
    out = _run(photos, tmp_path / "out")
    plan = plan_export(out, tmp_path / "sorted", mode="move")
    assert len(plan.actions) == 7 and plan.folders == {0: "cluster_00", 1: "cluster_01"} and plan.not_moved == []
