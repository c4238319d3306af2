"""The built-in example: scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes),
written out as PNG files in one folder per digit, then clustered with both pipelines and scored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ._fs import atomic_write_bytes, ensure_writable_dir
from .errors import OutputError

DEMO_FEATURES = ("pixels", "efficientnet-lite0")


def write_digits(folder: str | os.PathLike[str], *, size: int = 64, limit: int | None = None) -> int:
    """Write the digits as ``folder/<digit>/<index>.png`` (dark ink on white paper, as scanned; ``size`` px).

    Returns the number of images written.
    """
    import io

    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    n = len(digits.images) if limit is None else min(limit, len(digits.images))
    for i in range(n):
        img8 = 255 - np.clip(digits.images[i] / 16.0 * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(img8, mode="L").resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        atomic_write_bytes(folder / str(digits.target[i]) / f"{i:04d}.png", buf.getvalue())
    return n


def run_demo(out_dir: str | os.PathLike[str], *, features: tuple[str, ...] = DEMO_FEATURES, k: int = 10,
             seed: int = 0, limit: int | None = None, progress: Any = None) -> dict[str, Any]:
    """Write the digits under ``out_dir/images`` and cluster them with each of ``features``.

    Returns:
        {features name: RunResult}, each run written to ``out_dir/<features name>``.
    """
    from .pipeline import run

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "images").is_dir():
        raise OutputError(f"{out_dir} is not empty. Choose a new folder for the demo.")
    ensure_writable_dir(out_dir)
    images = out_dir / "images"
    if not images.is_dir():
        write_digits(images, limit=limit)
    results = {}
    for name in features:
        results[name] = run(images, out_dir / name, features=name, k=k, seed=seed, labels="folder",
                            cache=out_dir / "cache", progress=progress)
    return results
