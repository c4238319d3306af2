"""pipeline.sweep, `imgclust sweep`, sweep.csv next to an automatic run, and the plots."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, shared_dataset
from imgclust.errors import ParameterError
from imgclust.outputs.plots import criteria_figure, elbow_figure, save_figure
from imgclust.pipeline import run, sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["k", "inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "accuracy_majority",
           "accuracy_hungarian", "nmi", "ari"]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_sweep_writes_the_table_plots_and_summary(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = sweep(image_folder, out, ks=[2, 3, 4, 5], features="pixels", feature_options={"size": 4}, cache=False)
    header, rows = read_csv(out / "sweep.csv")
    assert header == COLUMNS
    assert [int(row["k"]) for row in rows] == [2, 3, 4, 5]
    assert [row["k"] for row in rows if row["accuracy_hungarian"]] == ["3"]  # 3 labels
    by_k = {int(row["k"]): row for row in rows}
    assert float(by_k[3]["accuracy_hungarian"]) == 1.0 and float(by_k[3]["nmi"]) == 1.0
    assert all(float(row["accuracy_majority"]) >= float(by_k[2]["accuracy_majority"]) for row in rows)
    for name in ("elbow.png", "criteria.png"):
        assert_png(out / name)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "sweep" and summary["k"] == r.k == 3 and summary["k_auto"] is True
    assert summary["ks"] == [2, 3, 4, 5] and summary["k_reason"] == r.pick.reason
    assert summary["n_labels"] == 3 and "sweep" in summary["timings"]


def test_sweep_without_labels_leaves_the_score_columns_empty(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep(image_folder, out, ks=[2, 3], features="pixels", feature_options={"size": 4}, labels="none", cache=False)
    header, rows = read_csv(out / "sweep.csv")
    assert header == COLUMNS
    assert all(row[c] == "" for row in rows for c in COLUMNS[5:])


def test_auto_k_run_keeps_the_sweep_next_to_the_summary(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run(image_folder, out, features="pixels", feature_options={"size": 4}, k_range=(2, 6), cache=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == r.clustering.k == 3
    assert summary["k_auto"] is True and summary["k_reason"].startswith("the images fall most clearly into 3 groups")
    assert summary["k_sample"] == r.summary["n_ok"]  # a small folder: the sweep saw every image
    header, rows = read_csv(out / "sweep.csv")
    assert header == COLUMNS and [int(row["k"]) for row in rows] == [2, 3, 4, 5, 6]


def test_a_fixed_k_run_writes_no_sweep(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(image_folder, out, features="pixels", feature_options={"size": 4}, k=3, cache=False)
    assert not (out / "sweep.csv").exists()
    assert json.loads((out / "summary.json").read_text())["k_auto"] is False


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    ks = [2, 16, 64, 100, 256]
    fig = elbow_figure(ks, [100.0, 60.0, 40.0, 35.0, 20.0], chosen_k=16, elbow_k=16)
    assert_png(save_figure(fig, tmp_path / "elbow.png"))
    crit = {"silhouette": [0.1, 0.2, math.nan, 0.1, 0.05], "accuracy_hungarian": [0.9] + [math.nan] * 4,
            "nmi": [math.nan] * 5}
    fig = criteria_figure(ks, crit, chosen_k=16)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2  # an all-NaN criterion gets no panel
    assert_png(save_figure(fig, tmp_path / "criteria.png"))
    assert sorted(os.listdir(tmp_path)) == ["criteria.png", "elbow.png"]  # no temporary files left


def test_cli_sweep_end_to_end(image_folder: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    p = run_cli(["sweep", str(image_folder), "--out", str(out), "--features", "pixels", "--size", "4",
                 "--ks", "2-4", "--no-cache", "-q"], cli_env)
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())  # rich wraps lines at the terminal width
    assert "Suggested k = 3: the images fall most clearly into 3 groups" in text
    assert "acc. majority: many-to-one accuracy" in text and "rises with k by construction" in text
    assert "acc. Hungarian: one-to-one accuracy" in text
    assert sorted(os.listdir(out)) == [".imgclust-output", "criteria.png", "elbow.png", "summary.json", "sweep.csv"]


def test_sweep_rejects_a_k_larger_than_the_images(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"number of usable images \(18\); got 50\. Give smaller --ks\."):
        sweep(image_folder, tmp_path / "out", ks=[2, 50], features="pixels", feature_options={"size": 4}, cache=False)
    assert not (tmp_path / "out").exists()  # nothing written before the check


@pytest.mark.slow
def test_auto_k_on_dogs_vs_cats_is_two(tmp_path: Path) -> None:
    images = shared_dataset("dogs-vs-cats-1000")
    # The shared cache (IMGCLUST_CACHE, set by conftest to a fresh folder unless kept) only saves time.
    r = run(images, tmp_path / "out", k_range=(2, 30))
    assert r.summary["k"] == 2, r.summary["k_reason"]
    assert r.metrics is not None and r.metrics["accuracy_hungarian"] > 0.9
    assert np.isfinite(r.clustering.inertia)
