"""The built-in example: ten public-domain / CC0 photos shipped with imgclust (``imgclust/data/demo``,
licences in ``LICENSE.md`` there), each cut into many random crops, written as JPEG files in one folder
per photo, then clustered with raw pixels and with the network and scored against the photo each crop
came from. Nothing is downloaded.

A crop of the cat shows the cat at another place, size, brightness and colour: the content stays, the
pixels change. That is what a pretrained network is for, and where raw pixels fail.
"""

from __future__ import annotations

import io
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from ._fs import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from .errors import OutputError

#: raw pixels against the default features ("": see :mod:`imgclust.features.default`)
DEMO_FEATURES = ("pixels", "")
#: crops written per photo by default (10 photos: 300 images, about half a minute on a laptop CPU)
DEMO_PER_CLASS = 30
CROP_SIDE = 160


def demo_photos() -> dict[str, Path]:
    """The shipped source photos, ``{class name: path}``, sorted by name."""
    folder = Path(str(resources.files("imgclust") / "data" / "demo"))
    return {p.stem: p for p in sorted(folder.glob("*.jpg"))}


def _augment(photo: Image.Image, rng: np.random.Generator, side: int) -> Image.Image:
    """One random view of ``photo``: a crop of 20-100% of its area (aspect 3:4 to 4:3) at a random place,
    mirrored half the time, with brightness, contrast and saturation each scaled by 0.6-1.4."""
    w, h = photo.size
    for _ in range(20):
        area = rng.uniform(0.2, 1.0) * w * h
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw = ch = min(w, h)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = photo.crop((x, y, x + cw, y + ch)).resize((side, side), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(float(rng.uniform(0.6, 1.4)))
    return img


def write_demo_images(folder: str | os.PathLike[str], *, per_class: int = DEMO_PER_CLASS, seed: int = 0,
                      side: int = CROP_SIDE) -> int:
    """Write ``per_class`` random crops of each shipped photo as ``folder/<photo>/<index>.jpg``.

    The same ``seed`` writes the same images. Returns the number of images written.

    Example:
        >>> write_demo_images("demo-images", per_class=5)  # doctest: +SKIP
        50
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    n = 0
    for name, path in demo_photos().items():
        with Image.open(path) as im:
            photo = im.convert("RGB")
        for i in range(per_class):
            buf = io.BytesIO()
            _augment(photo, rng, side).save(buf, format="JPEG", quality=90)
            atomic_write_bytes(folder / name / f"{name}-{i:03d}.jpg", buf.getvalue())
            n += 1
    return n


def run_demo(out_dir: str | os.PathLike[str], *, features: tuple[str, ...] = DEMO_FEATURES, k: int | None = None,
             seed: int = 0, per_class: int = DEMO_PER_CLASS, progress: Any = None) -> dict[str, Any]:
    """Write the demo images under ``out_dir/images`` and cluster them with each of ``features``.

    Args:
        k: number of clusters (default: the number of shipped photos, 10).
        seed: seeds both the crops and the clustering.
        per_class: crops per photo.

    Returns:
        {features name: RunResult}, each run written to ``out_dir/<features name>``; an empty name in
        ``features`` stands for the default features, under the name they have on this machine.
    """
    from .features.default import default_features
    from .pipeline import run

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "images").is_dir():
        raise OutputError(f"{out_dir} is not empty. Choose a new folder for the demo.")
    ensure_writable_dir(out_dir)
    images = out_dir / "images"
    made_with = {"seed": seed, "per_class": per_class}
    if images.is_dir():
        try:
            earlier = json.loads((out_dir / "demo.json").read_text())
        except (OSError, ValueError):
            earlier = None
        if earlier != made_with:
            raise OutputError(f"{images} holds demo images made with other settings ({earlier or 'unknown'}). "
                              "Choose a new folder for the demo.")
    else:
        write_demo_images(images, per_class=per_class, seed=seed)
        atomic_write_json(out_dir / "demo.json", made_with)
    k = len(demo_photos()) if k is None else k
    results = {}
    for name in features:
        name, options = (name, {}) if name else default_features()
        results[name] = run(images, out_dir / name, features=name, feature_options=options, k=k, seed=seed,
                            labels="folder", cache=out_dir / "cache", progress=progress)
    return results
