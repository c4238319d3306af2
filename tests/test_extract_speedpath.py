"""The fast extraction path gives the reference model's vectors, in the records' order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw_image
from imgclust.features import get_extractor
from imgclust.features.extract import embed_shard, extract, prepare_one
from imgclust.io.discover import discover


def photo_like(path: Path, seed: int, size: tuple[int, int]) -> Path:
    """A smooth random 'photo' (low-frequency colour fields plus fine noise), saved as JPEG."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i, size in enumerate([(320, 240), (240, 320), (500, 374), (96, 64)]):
        photo_like(root / f"p{i}.jpg", seed=i, size=size)
    draw_image(root / "drawn.png", color=(200, 30, 30), shape="circle", size=(180, 150))
    return root


def test_onnx_vectors_match_the_eager_pytorch_reference(photos: Path) -> None:
    import torch

    from imgclust.features.efficientnet import build_reference_network

    fast = get_extractor("efficientnet-lite0", runtime="onnx")
    records = discover(photos)
    X_fast = extract(records, fast, cache=None, batch_size=3).X
    # The reference: the unmodified eager PyTorch network on the same resized pixels, scaled in NumPy
    # as the reference code does ((x - 127) / 128, channels first), then average-pooled.
    pixels = np.stack([prepare_one(fast, r).array for r in records])
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (224, 224, 3)
    x = np.ascontiguousarray(((pixels.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2))
    with torch.inference_mode():
        X_ref = build_reference_network("efficientnet-lite0").extract_features(torch.from_numpy(x)).mean(dim=(2, 3)).numpy()
    assert X_fast.shape == (len(records), 1280)
    assert np.abs(X_fast - X_ref).max() < 1e-3
    assert np.abs(X_ref).max() > 0.1  # real activations, not an all-zero pass
    # The eager runtime of the extractor (scaling inside the model) agrees too.
    X_torch = get_extractor("efficientnet-lite0", runtime="torch").embed(pixels)
    assert np.abs(X_torch - X_ref).max() < 1e-4


def test_overlapped_extract_equals_serial_shard_and_keeps_order(tmp_path: Path, photos: Path) -> None:
    """Threads decode ahead of the network: the vectors must still line up with their records."""
    pixels = get_extractor("pixels", size=12)
    images = tmp_path / "images"
    images.mkdir()
    for i, p in enumerate(sorted(photos.iterdir())):
        (images / f"{i:02d}_{p.name}").write_bytes(p.read_bytes())
    (images / "03_broken.jpg").write_bytes(b"not a jpeg at all")
    records = discover(images)
    ex = extract(records, pixels, cache=None, batch_size=2, decode_threads=3)
    X_serial, prepared = embed_shard(pixels, records)
    assert [r.status for r in ex.records] == [p.status for p in prepared]
    assert sum(not r.ok for r in ex.records) == 1
    np.testing.assert_array_equal(ex.X, X_serial)
    for row, rec in zip(ex.X, ex.usable, strict=True):
        np.testing.assert_array_equal(row, pixels.embed(prepare_one(pixels, rec).array[None])[0])


def test_large_jpeg_is_decoded_at_reduced_scale_with_nearly_the_same_result(tmp_path: Path) -> None:
    ex = get_extractor("efficientnet-lite0", runtime="onnx")
    big = photo_like(tmp_path / "big.jpg", seed=5, size=(2400, 1800))
    rec = discover(tmp_path)[0]
    with Image.open(big) as im:
        im.draft("RGB", ex.draft_size)
        assert im.size == (600, 450)  # DCT scaling by 1/4 keeps the shorter side >= 256 (crop >= 224)
    drafted = prepare_one(ex, rec).array
    with Image.open(big) as im:
        full = ex.prepare(im.convert("RGB"))
    assert drafted.shape == full.shape == (224, 224, 3)
    # Same picture: the inputs differ by resampling detail only (a few levels of 255).
    assert np.abs(drafted.astype(np.int16) - full).mean() < 6
