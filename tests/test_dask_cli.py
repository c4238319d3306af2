"""The real command line with ``--backend dask``: every option path of ``imgclust run``, compared with a local run.

Each test runs ``python -m imgclust run`` in a subprocess (as a user would) and compares every output
file with a local run of the same command (see ``same_outputs``: the same k, the same clusters, the same
rows of assignments.csv).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import run_cli
from test_dask import draw_folder, same_outputs

pytest.importorskip("distributed")


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "assignments.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def summary(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return draw_folder(tmp_path_factory.mktemp("dask-cli") / "images", per_class=7)


def test_cli_dask_needs_a_cache(images: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    r = run_cli(["run", str(images), "--out", str(tmp_path / "out"), "--features", "pixels", "--backend", "dask",
                 "--workers", "1", "--no-cache", "-q"], cli_env)
    assert r.returncode == 2, r.stderr
    assert "cannot run with --no-cache" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
def test_cli_dask_default_settings_first_run_and_cached_rerun(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Default settings (automatic k, default method): exit 0, the same outputs as a local run.

    The cached rerun of a folder without broken files sends nothing to the workers; it used to die
    with KeyError: 'n_workers' after writing its outputs.
    """
    images = draw_folder(tmp_path / "images", per_class=7)
    (images / "red" / "broken.jpg").unlink()
    base = ["run", str(images), "--features", "pixels", "-q"]
    local = run_cli([*base, "--out", str(tmp_path / "local"), "--cache", str(tmp_path / "c-local")], cli_env)
    assert local.returncode == 0, local.stderr
    dask = ["--backend", "dask", "--workers", "2", "--cache", str(tmp_path / "c-dask")]
    first = run_cli([*base, *dask, "--out", str(tmp_path / "dask1")], cli_env)
    assert first.returncode == 0, first.stderr
    assert "Ran on Dask: 2 workers" in first.stdout
    rerun = run_cli([*base, *dask, "--out", str(tmp_path / "dask2")], cli_env)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert "Nothing ran on Dask: every vector was in the cache" in rerun.stdout
    local_rerun = run_cli([*base, "--out", str(tmp_path / "local2"), "--cache", str(tmp_path / "c-local")], cli_env)
    assert local_rerun.returncode == 0, local_rerun.stderr
    for here, there in (("local", "dask1"), ("local2", "dask2")):
        same_outputs(tmp_path / here, tmp_path / there)
        assert rows(tmp_path / there) == rows(tmp_path / here)
        assert summary(tmp_path / there)["k"] == summary(tmp_path / here)["k"]
    assert summary(tmp_path / "local")["k_auto"] is True
    assert (summary(tmp_path / "dask1")["n_vectors_computed"], summary(tmp_path / "dask2")["n_vectors_cached"]) == (21, 21)
    assert summary(tmp_path / "dask1")["statuses"] == {"ok": 21}
    assert summary(tmp_path / "dask2")["backend"] == {"name": "dask", "scheduler": None, "n_workers": 0}


@pytest.mark.distributed
@pytest.mark.parametrize("options", [
    ["--k", "3", "--method", "kmeans", "--seed", "4"],
    ["--k", "3", "--method", "spectral", "--labels", "none", "--size", "12"],
    ["--k", "auto", "--k-range", "2-5", "--identity", "content", "--batch-size", "3", "--method", "kmeans"],
], ids=["k3-kmeans", "k3-spectral-nolabels-size", "auto-range-content-identity"])
def test_cli_dask_options_equal_local(images: Path, tmp_path: Path, cli_env: dict[str, str],
                                      options: list[str]) -> None:
    base = ["run", str(images), "--features", "pixels", "-q", *options]
    local = run_cli([*base, "--out", str(tmp_path / "local"), "--cache", str(tmp_path / "c-local")], cli_env)
    assert local.returncode == 0, local.stderr
    dask = run_cli([*base, "--out", str(tmp_path / "dask"), "--cache", str(tmp_path / "c-dask"),
                    "--backend", "dask", "--workers", "2"], cli_env)
    assert dask.returncode == 0, dask.stderr
    assert "Ran on Dask: 2 workers" in dask.stdout
    same_outputs(tmp_path / "local", tmp_path / "dask")
    assert rows(tmp_path / "dask") == rows(tmp_path / "local")
    assert summary(tmp_path / "dask")["config"] == summary(tmp_path / "local")["config"]
