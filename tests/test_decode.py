from pathlib import Path

import numpy as np
from PIL import Image

from conftest import draw_image
from imgclust.io.decode import decode


def test_decodes_to_rgb(tmp_path: Path):
    d = decode(draw_image(tmp_path / "a.png", color=(200, 0, 0), size=(40, 30)))
    assert d.status == "ok" and d.image.mode == "RGB" and d.image.size == (40, 30)


def test_broken_files_are_statuses_not_exceptions(tmp_path: Path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, I am not a picture")
    good = draw_image(tmp_path / "good.jpg", color=(0, 200, 0), size=(200, 200))
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert decode(tmp_path / "empty.jpg").status == "not_an_image"
    assert decode(tmp_path / "text.jpg").status == "not_an_image"
    assert decode(tmp_path / "cut.jpg").status == "truncated"
    assert decode(tmp_path / "missing.jpg").status == "unreadable"


def test_too_large_is_refused_before_decoding(tmp_path: Path):
    p = draw_image(tmp_path / "big.png", color=(1, 1, 1), size=(300, 300))
    d = decode(p, max_pixels=10_000)
    assert d.status == "too_large" and "90,000" in d.error and d.image is None


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path):
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    px = np.asarray(decode(tmp_path / "g16.png").image)
    assert 120 <= px[0, 0, 0] <= 135  # mid-grey, not white


def test_draft_keeps_at_least_the_requested_size(tmp_path: Path):
    p = draw_image(tmp_path / "photo.jpg", color=(10, 10, 200), size=(2000, 1500))
    d = decode(p, draft_size=(256, 256))
    assert d.image.size[0] >= 256 and d.image.size[1] >= 256 and d.image.size[0] < 2000
