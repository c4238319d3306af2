from pathlib import Path

import pytest
from click.testing import CliRunner

from imgclust.cli import main
from imgclust.demo import run_demo, write_digits


def test_digits_are_written_as_labelled_images(tmp_path: Path):
    assert write_digits(tmp_path / "d", limit=25) == 25
    files = sorted((tmp_path / "d").rglob("*.png"))
    assert len(files) == 25 and {f.parent.name for f in files} <= set("0123456789")


def test_small_demo_with_pixels(tmp_path: Path):
    res = run_demo(tmp_path / "demo", features=("pixels",), limit=200)
    m = res["pixels"].metrics
    assert m is not None and m["accuracy_hungarian"] > 0.5  # digits are easy even for raw pixels


@pytest.mark.slow
def test_full_demo_command(tmp_path: Path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "efficientnet-lite0" in result.output and "pixels" in result.output
