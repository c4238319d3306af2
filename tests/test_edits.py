"""The edit journal (imgclust.edits) and `imgclust edit`: apply, validation, undo/redo, crash safety, and the
edits reaching export, the report, summary.json and `imgclust assign`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import draw_classes, run_cli
from imgclust import edits
from imgclust.errors import InputError
from imgclust.outputs.export import export
from imgclust.outputs.tables import read_assignments, read_summary
from imgclust.pipeline import run

ROWS = [{"path": f"{c}/{i}.png", "cluster": str(k), "status": "ok", "label": c}
        for k, c in enumerate("abc") for i in range(4)] + [{"path": "bad.jpg", "cluster": "", "status": "unreadable"}]


def test_apply_each_edit() -> None:
    ed = edits.apply(ROWS, [{"op": "rename", "cluster": 0, "name": "beach"},
                            {"op": "merge", "clusters": [1, 2]},
                            {"op": "move", "paths": ["a/0.png", "a/1.png"], "to": "new", "name": "odd"},
                            {"op": "exclude", "paths": ["b/3.png"]}], suggested_names={"1": "dog"}, k=3)
    clusters = {r["path"]: r["cluster"] for r in ed.rows}
    assert clusters["a/0.png"] == clusters["a/1.png"] == "3"  # new ids start at the run's k
    assert clusters["c/0.png"] == "1" and clusters["b/3.png"] == "" and clusters["bad.jpg"] == ""
    assert ed.names == {0: "beach", 1: "dog", 3: "odd"} and ed.sizes == {0: 2, 1: 7, 3: 2}
    assert ed.n_edits == 4 and ed.n_excluded == 1 and ed.k == 4
    assert [r["original_cluster"] for r in ed.rows][:5] == ["0"] * 4 + ["1"]
    assert ROWS[0]["cluster"] == "0"  # the input rows are not changed
    # What a report reads: the rows still clustered, as they were read (no copy), and their edited clusters.
    kept, labels = ed.clustered()
    shown = [r for r in ed.rows if r["cluster"] != ""]
    assert [r["path"] for r in kept] == [r["path"] for r in shown] and all(r in ROWS for r in kept)
    assert labels.tolist() == [int(r["cluster"]) for r in shown]


@pytest.mark.parametrize("bad, message", [
    ({"op": "rename", "cluster": 7, "name": "x"}, "Unknown cluster 7"),
    ({"op": "rename", "cluster": 0, "name": "  "}, "non-empty"),
    ({"op": "rename", "cluster": 0, "name": "a\nb"}, "control characters"),
    ({"op": "merge", "clusters": [0]}, "at least two"),
    ({"op": "merge", "clusters": [0, 0]}, "twice"),
    ({"op": "move", "paths": ["nope.png"], "to": 0}, "Unknown image 'nope.png'"),
    ({"op": "move", "paths": ["bad.jpg"], "to": 0}, "Unknown image"),
    ({"op": "move", "paths": ["a/0.png"], "to": 9}, "Unknown cluster 9"),
    ({"op": "exclude", "paths": "a/0.png"}, "non-empty list"),
    ({"op": "split", "cluster": 0, "groups": [["a/0.png", "a/1.png", "a/2.png", "a/3.png"]]}, "leave some"),
    ({"op": "split", "cluster": 0, "groups": [["b/0.png"]]}, "only its own"),
    ({"op": "delete"}, "Unknown edit 'delete'"),
])
def test_invalid_edits_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(edits.EditError, match=message):
        edits.apply(ROWS, [bad])


def test_undo_redo_and_forgotten_redo() -> None:
    a, b, c = ([{"op": "rename", "cluster": 0, "name": n}] for n in "abc")
    journal = [{"op": "apply", "edits": a}, {"op": "apply", "edits": b}, {"op": "undo"}, {"op": "undo"},
               {"op": "redo"}, {"op": "undo"}, {"op": "undo"}]  # an undo with nothing left does nothing
    done, n_undone = edits.effective_edits(journal)
    assert done == [] and n_undone == 2
    done, n_undone = edits.effective_edits([*journal, {"op": "redo"}, {"op": "apply", "edits": c}, {"op": "redo"}])
    assert done == [a, c] and n_undone == 0


def test_plan_split_keeps_the_largest_part() -> None:
    state = edits.EditState.from_rows(ROWS, 3)
    X = np.zeros((12, 2), np.float32)
    X[:3] = 0.0
    X[3] = 10.0  # a/3.png is far from a/0..2
    planned = edits.plan_split(state, 0, 2, X, method="kmeans")
    assert planned["groups"] == [["a/3.png"]]
    with pytest.raises(edits.EditError, match="2 to 4 parts"):
        edits.plan_split(state, 0, 5, X)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("edits")
    draw_classes(root / "images", 6)
    run(root / "images", root / "out", features="pixels", k=3, cache=False, method="kmeans")
    return root / "out"


@pytest.fixture()
def out(base_run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(base_run, dest)
    return dest


def clusters_of(out: Path) -> dict[str, str]:
    """path -> cluster of each folder (e.g. 'red' -> '2') in the run."""
    return {r["path"].split("/")[0]: r["cluster"] for r in read_assignments(out)}


def test_journal_is_appended_and_reopened(out: Path) -> None:
    c = clusters_of(out)
    j = edits.Journal(out)
    j.commit([{"op": "rename", "cluster": int(c["red"]), "name": "reds"}])
    j.commit([{"op": "move", "paths": ["blue/blue_0.png"], "to": int(c["red"])}])
    j.undo()
    before = (out / "assignments.csv").read_bytes()
    again = edits.Journal(out)  # a new process sees the same state
    assert again.edited.names[int(c["red"])] == "reds" and again.edited.n_edits == 1 and again.can_redo
    assert len((out / "edits.jsonl").read_text().splitlines()) == 3
    assert (out / "assignments.csv").read_bytes() == before


def test_a_journal_open_elsewhere_sees_the_other_edits_first(out: Path) -> None:
    c = clusters_of(out)
    red, green = int(c["red"]), int(c["green"])
    page, cli = edits.Journal(out), edits.Journal(out)  # e.g. an open review page and imgclust edit
    cli.commit([{"op": "merge", "clusters": [red, green]}])
    with pytest.raises(edits.EditError, match=f"Unknown cluster {green}"):
        page.commit([{"op": "rename", "cluster": green, "name": "greens"}])
    assert page.edited.n_edits == 1 and edits.load(out).n_edits == 1  # nothing that would not replay was written


def test_a_line_cut_by_a_crash_is_ignored_and_repaired(out: Path) -> None:
    c = clusters_of(out)
    j = edits.Journal(out)
    j.commit([{"op": "rename", "cluster": int(c["red"]), "name": "reds"}])
    with open(out / "edits.jsonl", "ab") as fh:
        fh.write(b'{"v": 1, "op": "apply", "edits": [{"op": "rena')  # killed mid-write
    j = edits.Journal(out)
    assert j.edited.n_edits == 1
    j.commit([{"op": "rename", "cluster": int(c["green"]), "name": "greens"}])
    assert edits.load(out).names == {int(c["red"]): "reds", int(c["green"]): "greens"}


def test_a_damaged_middle_line_is_an_error(out: Path) -> None:
    (out / "edits.jsonl").write_text('{"op": "zap"}\n{"v": 1, "op": "undo"}\n')
    with pytest.raises(InputError, match="Line 1 of .*edits.jsonl is not an edit"):
        edits.load(out)


def test_edits_flow_to_export_summary_report_and_assign(out: Path, tmp_path: Path, cli_env: dict) -> None:
    c = clusters_of(out)
    red, green, blue = int(c["red"]), int(c["green"]), int(c["blue"])
    ed = edits.edit(out, rename={red: "<b>reds</b>/.."}, merge=[[green, blue]],
                    move={"red/red_0.png": "new"}, exclude=["red/red_1.png"])
    assert ed.n_edits == 4
    rep = export(out, tmp_path / "sorted")
    folders = {p.parent.name: sorted(q.name for q in p.parent.iterdir()) for p in (tmp_path / "sorted").rglob("*.png")}
    assert folders["_b_reds_b_"] == [f"red_{i}.png" for i in (2, 3, 4, 5)]  # the given name, made safe
    assert folders["cluster_03"] == ["red_0.png"]
    assert len(folders[f"cluster_{green:02d}"]) == 12 and rep.done == 17  # red_1 excluded
    s = read_summary(out)["edits"]
    assert s["n_edits"] == 4 and s["n_excluded"] == 1 and s["k"] == 3
    assert s["metrics_before"]["accuracy_hungarian"] == 1.0 and s["metrics_after"]["accuracy_hungarian"] < 1.0
    from imgclust.outputs.report import write_report

    html = write_report(out).read_text()
    assert "4 edits" in html and "&lt;b&gt;reds&lt;/b&gt;/.." in html and "<b>reds" not in html

    got = run_cli(["assign", str(out / "model"), str(Path(read_summary(out)["images_dir"])), "--out",
                   str(tmp_path / "assigned"), "--no-cache", "-q"], cli_env)
    assert got.returncode == 0, got.stderr
    assigned = {r["path"]: r["cluster"] for r in read_assignments(tmp_path / "assigned")}
    assert {assigned[f"blue/blue_{i}.png"] for i in range(6)} == {str(green)}  # merged: blue follows green
    summary = json.loads((tmp_path / "assigned" / "summary.json").read_text())
    assert summary["n_edits"] == 4 and summary["k"] == 3 and summary["cluster_ids"] == sorted([red, green, 3])
    assert "3 clusters" in got.stdout and f"\n{' ' * 7}{blue} " not in got.stdout  # blue's number is gone


def test_cli_edit_refuses_unknown_clusters_and_paths(out: Path, cli_env: dict) -> None:
    got = run_cli(["edit", str(out), "--rename", "0=fine", "--move", "nope.png=1"], cli_env)
    assert got.returncode == 2 and "Unknown image 'nope.png'" in got.stderr
    got = run_cli(["edit", str(out), "--merge", "0,9"], cli_env)
    assert got.returncode == 2 and "Unknown cluster 9" in got.stderr
    got = run_cli(["edit", str(out), "--rename", "zero=x"], cli_env)
    assert got.returncode == 2 and "not a cluster number" in got.stderr
    assert not (out / "edits.jsonl").exists()


def test_cli_edit_split_undo_redo(out: Path, cli_env: dict) -> None:
    got = run_cli(["edit", str(out), "--rename", "0=beach", "--split", "1=2", "--exclude", "red/red_2.png"], cli_env)
    assert got.returncode == 0, got.stderr
    assert "beach" in got.stdout and "1 images excluded" in got.stdout
    ed = edits.load(out)
    assert ed.n_edits == 3 and len(ed.clusters) == 4 and ed.names[0] == "beach"
    got = run_cli(["edit", str(out), "--undo"], cli_env)
    assert got.returncode == 0 and edits.load(out).n_edits == 0
    edits.Journal(out).redo()
    assert edits.load(out).n_edits == 3
    got = run_cli(["edit", str(out), "--redo"], cli_env)
    assert got.returncode == 2 and "Nothing to redo" in got.stderr


def test_a_new_run_in_the_folder_retires_the_old_edits(out: Path) -> None:
    edits.edit(out, rename={0: "old"})
    summary = read_summary(out)
    run(summary["images_dir"], out, features="pixels", k=2, cache=False, method="kmeans")
    assert not (out / "edits.jsonl").exists() and edits.load(out).n_edits == 0
    (kept,) = out.glob("edits-until-*.jsonl")
    assert '"old"' in kept.read_text()
