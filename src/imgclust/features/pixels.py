"""Raw pixels: the original method's baseline ("standard k-means" on flattened thumbnails)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..errors import ParameterError
from .base import Extractor, ExtractorSpec, register_extractor


class PixelsExtractor(Extractor):
    """Each image resized to ``size`` x ``size`` RGB (aspect ratio not kept), scaled to [0, 1], flattened.

    With the default size 32 the vector has 32 * 32 * 3 = 3072 values.
    """

    name = "pixels"

    def __init__(self, size: int = 32) -> None:
        if not isinstance(size, int) or size < 1 or size > 1024:
            raise ParameterError(f"size must be an integer between 1 and 1024; got {size!r}.")
        self.size = size
        self.dim = size * size * 3

    def preprocessing(self) -> dict[str, Any]:
        return {"size": self.size, "resize": "squash", "filter": "bilinear", "scale": "x/255", "order": "HWC-RGB"}

    @property
    def draft_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def prepare(self, image: Image.Image) -> np.ndarray:
        small = image.resize((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=np.float32).reshape(len(batch), self.dim)


register_extractor(ExtractorSpec(
    name="pixels",
    factory=PixelsExtractor,
    description="Raw RGB pixels resized to size x size (default 32 -> 3072 values); the original baseline.",
    dim=3072,
))
