import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import run_cli
from imgclust.cli import main


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_every_command_has_help(runner: CliRunner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in main.commands:
        sub = runner.invoke(main, [name, "--help"])
        assert sub.exit_code == 0, name
        assert "Usage:" in sub.output and len(main.commands[name].help or "") > 10, name


def test_run_prints_summary_and_writes_outputs(runner: CliRunner, image_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["run", str(image_folder), "--out", str(out), "--features", "pixels", "--k", "3",
                                  "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "18 of 18 images clustered into 3 groups with pixels + kmeans" in text
    assert "accuracy (one-to-one, Hungarian) 1.000" in text
    assert json.loads((out / "summary.json").read_text())["k"] == 3


@pytest.mark.parametrize("args,message", [
    (["--k", "0"], "k must be at least 1; got 0."),
    (["--k", "many"], "k must be a whole number or 'auto'; got 'many'."),
    (["--k", "99"], "k must be between 1 and the number of usable images (18); got 99."),
    (["--features", "resnet"], "Unknown features 'resnet'."),
    (["--features", "pixel"], "Did you mean 'pixels'?"),
    (["--method", "kmean", "--k", "3"], "Unknown method 'kmean'. Did you mean 'kmeans'?"),
])
def test_bad_parameters_exit_2_with_a_clear_message(runner, image_folder, tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(main, ["run", str(image_folder), "--out", str(out), "--features", "pixels", "--no-cache",
                                  "-q", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (out / "assignments.csv").exists()


def test_missing_folder_exit_2(runner, tmp_path):
    result = runner.invoke(main, ["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--k", "2"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_python_dash_m_entry_point(image_folder, tmp_path, cli_env):
    proc = run_cli(["run", str(image_folder), "--out", str(tmp_path / "o"), "--features", "pixels", "--k", "3",
                    "--no-cache", "-q"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "clustered into 3 groups" in proc.stdout
    bad = run_cli(["run", str(image_folder), "--out", str(image_folder / "o"), "--features", "pixels", "--k", "3"],
                  cli_env)
    assert bad.returncode == 2 and "inside the images folder" in bad.stderr


def test_export_copies_into_cluster_folders(runner, image_folder, tmp_path):
    out, dest = tmp_path / "out", tmp_path / "sorted"
    assert runner.invoke(main, ["run", str(image_folder), "--out", str(out), "--features", "pixels", "--k", "3",
                                "--no-cache", "-q"]).exit_code == 0
    result = runner.invoke(main, ["export", str(out), "--to", str(dest)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == ["cluster_00", "cluster_01", "cluster_02"]
    assert sum(1 for p in dest.glob("cluster_*/*")) == 18
    assert len(list(image_folder.rglob("*.*"))) == 18  # the input is untouched
    again = runner.invoke(main, ["export", str(out), "--to", str(dest)])
    assert "(18 already there)" in " ".join(again.output.split()) and sum(1 for p in dest.glob("cluster_*/*")) == 18


def test_move_needs_yes(runner, image_folder, tmp_path):
    out, dest = tmp_path / "out", tmp_path / "sorted"
    runner.invoke(main, ["run", str(image_folder), "--out", str(out), "--features", "pixels", "--k", "2", "--no-cache",
                         "-q"])
    result = runner.invoke(main, ["export", str(out), "--to", str(dest), "--mode", "move"])
    assert result.exit_code == 2 and "Moving files needs --yes. Nothing was moved." in " ".join(result.output.split())
    assert len(list(image_folder.rglob("*.*"))) == 18
