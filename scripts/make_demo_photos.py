"""Rebuild src/imgclust/data/demo/: the ten photos the demo crops its images from.

Each is a public-domain or CC0 photo that scikit-image ships inside its wheel (skimage/data/),
shrunk to at most 320 px and saved as a JPEG so that the set stays small (about 200 KB). The demo
itself reads only the shipped copies and needs neither scikit-image nor a network.

    python scripts/make_demo_photos.py      # needs scikit-image (pip install "imgclust[classic]")
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

# demo class -> file in skimage/data/ (licences: src/imgclust/data/demo/LICENSE.md)
SOURCES = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cat": "chelsea.png",
    "clock": "clock_motion.png",
    "coffee": "coffee.png",
    "galaxies": "hubble_deep_field.jpg",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "rocket": "rocket.jpg",
}
MAX_SIDE = 320


def main() -> int:
    import skimage

    src = Path(skimage.__file__).parent / "data"
    dest = Path(__file__).resolve().parents[1] / "src" / "imgclust" / "data" / "demo"
    dest.mkdir(parents=True, exist_ok=True)
    for name, file in SOURCES.items():
        with Image.open(src / file) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            im.save(dest / f"{name}.jpg", quality=85, optimize=True)
        print(f"{name}.jpg  {im.size[0]}x{im.size[1]} {im.mode}  {(dest / f'{name}.jpg').stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
