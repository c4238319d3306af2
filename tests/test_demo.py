import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from imgclust.cli import main
from imgclust.demo import demo_photos, run_demo, write_demo_images
from imgclust.errors import OutputError


def test_the_shipped_photos_are_small_and_each_has_its_licence():
    photos = demo_photos()
    assert len(photos) == 10
    assert sum(p.stat().st_size for p in photos.values()) < 400_000
    licence = (next(iter(photos.values())).parent / "LICENSE.md").read_text()
    for name in photos:
        row = next(line for line in licence.splitlines() if line.startswith(f"| {name}.jpg |"))
        assert re.search(r"public domain|CC0", row), row


def test_demo_images_are_labelled_crops_and_the_seed_fixes_them(tmp_path: Path):
    assert write_demo_images(tmp_path / "a", per_class=3, seed=5) == 30
    files = sorted((tmp_path / "a").rglob("*.jpg"))
    assert {f.parent.name for f in files} == set(demo_photos())
    assert Image.open(files[0]).size == (160, 160)
    write_demo_images(tmp_path / "b", per_class=3, seed=5)
    write_demo_images(tmp_path / "c", per_class=3, seed=6)
    first = [np.asarray(Image.open(f)) for f in files[:3]]
    same = [np.asarray(Image.open(tmp_path / "b" / f.relative_to(tmp_path / "a"))) for f in files[:3]]
    other = [np.asarray(Image.open(tmp_path / "c" / f.relative_to(tmp_path / "a"))) for f in files[:3]]
    assert all(np.array_equal(x, y) for x, y in zip(first, same, strict=True))
    assert not any(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(first, other, strict=True))


def test_small_demo_with_pixels(tmp_path: Path):
    res = run_demo(tmp_path / "demo", features=("pixels",), per_class=2)
    assert res["pixels"].summary["n_ok"] == 20 and res["pixels"].summary["k"] == 10
    assert res["pixels"].metrics is not None
    with pytest.raises(OutputError, match="made with other settings"):
        run_demo(tmp_path / "demo", features=("pixels",), per_class=2, seed=1)


@pytest.mark.slow
def test_demo_command_shows_the_network_above_pixels(tmp_path: Path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    # The default features: efficientnet-lite2 at int8, or efficientnet-lite0 where int8 is not available.
    rows = {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^\s*(pixels|efficientnet-lite\d(?: int8)?)\s+\w+\s+([01]\.\d{3})", result.output, re.M)}
    network = next(name for name in rows if name != "pixels")
    assert set(rows) == {"pixels", network}, result.output
    assert rows[network] >= rows["pixels"] + 0.3, result.output
    assert f"{network} is ahead" in result.output
