"""bench/quality.py: the subsets and junk it adds, and a small end-to-end run (so the benchmark does not rot)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _bench():
    if str(REPO / "bench") not in sys.path:  # as when run as a script: its folder on the path
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module


def test_class_subsets_pick_some_classes_and_part_of_each() -> None:
    q = _bench()
    y = np.repeat(np.array([f"c{i}" for i in range(10)]), 20)
    subsets = q.class_subsets(y, 30, np.random.default_rng(0))
    assert len(subsets) == 30
    for idx in subsets:
        assert len(np.unique(idx)) == len(idx)
        classes, counts = np.unique(y[idx], return_counts=True)
        assert 3 <= len(classes) <= 9
        assert np.all((counts >= 6) & (counts <= 20))  # 30-100 % of 20
    y2 = np.repeat(np.array(["a", "b"]), 10)
    assert all(len(np.unique(y2[idx])) == 2 for idx in q.class_subsets(y2, 5, np.random.default_rng(1)))


def test_quality_run_with_subsets_and_junk(tmp_path: Path, capsys) -> None:
    q = _bench()
    root = tmp_path / "datasets" / "toy"
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30)]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            img = np.clip(np.array(colour) + rng.normal(0, 12, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    out = tmp_path / "q.csv"
    assert q.main(["--datasets", str(tmp_path / "datasets"), "--features", "pixels", "--cache", str(tmp_path / "c"),
                   "--subsets", "2", "--junk", "3", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["variant"] for r in rows if r["method"] == "kmeans"] == ["full", "+3 junk", "subset 0", "subset 1"]
    full = {r["method"]: float(r["accuracy_hungarian"]) for r in rows if r["variant"] == "full"}
    assert full["kmeans"] == 1.0 and full["spectral"] == 1.0
    junk = [r for r in rows if r["variant"] == "+3 junk"]
    assert all(int(r["n"]) == 27 for r in junk)
    assert "over 2 random class subsets" in capsys.readouterr().out


def test_quality_table_per_features(tmp_path: Path, capsys) -> None:
    q = _bench()
    root = tmp_path / "datasets" / "toy"
    rng = np.random.default_rng(1)
    for c, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220)]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(5):
            img = np.clip(np.array(colour) + rng.normal(0, 12, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    out = tmp_path / "q.csv"
    assert q.main(["--datasets", str(tmp_path / "datasets"), "--features", "pixels,colour-histogram",
                   "--methods", "kmeans", "--subsets", "1", "--cache", str(tmp_path / "c"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted({(r["features"], r["precision"]) for r in rows}) == [("colour-histogram", "default"),
                                                                         ("pixels", "default")]
    table = capsys.readouterr().out.split("one-to-one accuracy per features x precision")[1].splitlines()
    assert [line.split()[:3] for line in table[2:4]] == [["pixels", "default", "kmeans"],
                                                         ["colour-histogram", "default", "kmeans"]]
