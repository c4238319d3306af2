"""Shared fixtures. Tests draw their own images with Pillow; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
# ../shared/datasets of the checkout, or of a folder above it (git worktrees live one level deeper).
SHARED_DATASETS = next((p / "shared" / "datasets" for p in REPO.parents if (p / "shared" / "datasets").is_dir()),
                       REPO.parent / "shared" / "datasets")


def pytest_configure(config: pytest.Config) -> None:
    # Never touch the user's real cache: every test session gets its own.
    if "IMGCLUST_CACHE" not in os.environ or os.environ.get("IMGCLUST_TEST_KEEP_CACHE") != "1":
        import tempfile

        os.environ["IMGCLUST_CACHE"] = tempfile.mkdtemp(prefix="imgclust-test-cache-")
        config._imgclust_test_cache = os.environ["IMGCLUST_CACHE"]  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    # The session's own cache (exported graphs, vectors) goes with it: each session made one in /tmp.
    made = getattr(config, "_imgclust_test_cache", None)
    if made:
        import shutil

        shutil.rmtree(made, ignore_errors=True)


def draw_image(path: Path, *, color: tuple[int, int, int], shape: str = "square", size: tuple[int, int] = (64, 48),
               seed: int = 0, fmt: str | None = None) -> Path:
    """Draw a coloured shape on a noisy background and save it (format from the extension unless ``fmt``)."""
    rng = np.random.default_rng(seed)
    w, h = size
    bg = (rng.integers(0, 40, size=(h, w, 3)) + 200).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(img)
    m = int(rng.integers(2, max(3, min(w, h) // 6)))
    box = (m, m, w - m, h - m)
    if shape == "square":
        d.rectangle(box, fill=color)
    elif shape == "circle":
        d.ellipse(box, fill=color)
    else:
        d.polygon([(w // 2, m), (m, h - m), (w - m, h - m)], fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


CLASSES = {"red": ((220, 30, 30), "square"), "green": ((30, 200, 40), "circle"), "blue": ((30, 40, 220), "triangle")}


def draw_classes(root: Path, per_class: int) -> Path:
    """The three CLASSES, ``per_class`` PNGs each, in one subfolder per class (image i of class c has seed 10c + i)."""
    for c, (name, (color, shape)) in enumerate(CLASSES.items()):
        for i in range(per_class):
            draw_image(root / name / f"{name}_{i}.png", color=color, shape=shape, seed=10 * c + i)
    return root


def photos_with_a_copy(root: Path, per_class: int, ext: str = ".png") -> Path:
    """Three colours, ``per_class`` images each of one size (40 x 30, so every file's size collides with
    another's), in folders c0, c1, c2, plus ``c0/copy of img_0{ext}``, an exact duplicate."""
    for c, color in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)]):
        for i in range(per_class):
            draw_image(root / f"c{c}" / f"img_{i}{ext}", color=color, seed=10 * c + i, size=(40, 30))
    shutil.copy(root / "c0" / f"img_0{ext}", root / "c0" / f"copy of img_0{ext}")
    return root


def indexed_vectors(cache_root: Path) -> int:
    """Vectors indexed (not only appended) in the embedding stores under ``cache_root``, read while another
    process may be writing."""
    total = 0
    for index in cache_root.glob("vectors/*/index.sqlite"):
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=30)
        try:
            total += db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not created yet
            pass
        finally:
            db.close()
    return total


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """Three well-separated classes (red squares, green circles, blue triangles), 6 images each, in
    first-level subfolders, with mixed-case extensions and one nested folder."""
    root = tmp_path / "images"
    exts = [".png", ".JPG", ".jpeg", ".PNG", ".bmp", ".png"]
    for c, (name, (color, shape)) in enumerate(CLASSES.items()):
        for i in range(6):
            sub = root / name / ("nested" if i == 5 else "")
            draw_image(sub / f"{name}_{i}{exts[i]}", color=color, shape=shape, seed=10 * c + i,
                       size=(64 + 8 * i, 48 + 4 * i))
    return root


@pytest.fixture()
def cli_env() -> dict[str, str]:
    """Environment for running ``python -m imgclust`` from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgclust", *args], env=env, capture_output=True, text=True,
                          **kw)  # type: ignore[call-overload]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not found at {path} (see shared/datasets/MANIFEST.md)")
    return path
