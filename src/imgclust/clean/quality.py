"""Quality flags: blurry, dark, bright, low information, grayscale, small, odd aspect ratio.

The measurements (:func:`image_stats`) are taken from the pixels the extraction stage has just
decoded, so no file is read a second time; they are a few numbers per image, kept in the
embedding cache beside the vectors, so a cached run does not decode either. The flags
(:func:`quality_flags`) are thresholds on those numbers, chosen on planted cases (see
``bench/clean.py`` and docs/clean.md).

The measurements are taken on a grey copy whose shorter side is brought down to
:data:`ANALYSIS_SIDE` pixels (never enlarged), so a sharp 4000-pixel photo and a sharp
400-pixel one score alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Version of the measurements: bump when image_stats changes, so cached stats are recomputed.
STATS_VERSION = 4
ANALYSIS_SIDE = 128

#: The columns of an image_stats row, in order.
# phash0..3: the 64-bit perceptual hash (DCT of a 32x32 grey copy) as four 16-bit words (exact in float32).
STATS = ("width", "height", "luma_mean", "luma_p05", "luma_p95", "luma_std", "entropy", "sharpness", "chroma",
         "phash0", "phash1", "phash2", "phash3")
#: After the named columns: the grey levels of a 16x16 copy of the whole image (its thumbnail, squashed
#: to a square), row by row, 256 columns: the near-duplicate check compares these pixel by pixel.
THUMB_SIDE = 16
N_NAMED = len(STATS)
N_STATS = N_NAMED + THUMB_SIDE * THUMB_SIDE
_COL = {name: i for i, name in enumerate(STATS)}
_PUT_ROWS = 1 << 13


@dataclass(frozen=True)
class Measurements:
    """The quality measurements of n images as a run holds them: rows of :func:`image_stats` split into the
    named measurements and the thumbnails, whose grey levels (whole numbers 0-255) take a byte each, so
    they cost 308 bytes an image instead of the rows' 1,076.

    Attributes:
        named: np.ndarray of shape (n, N_NAMED), float32, in the order of :data:`STATS` (NaN rows: unknown).
        thumbs: np.ndarray of shape (n, THUMB_SIDE, THUMB_SIDE), uint8 (zeros where unknown).
    """

    named: np.ndarray
    thumbs: np.ndarray

    @classmethod
    def unknown(cls, n: int) -> Measurements:
        """n images, none measured."""
        return cls(np.full((n, N_NAMED), np.nan, np.float32), np.zeros((n, THUMB_SIDE, THUMB_SIDE), np.uint8))

    @classmethod
    def from_rows(cls, stats: np.ndarray) -> Measurements:
        """From rows of :func:`image_stats` (np.ndarray of shape (n, N_STATS); NaN rows: unknown)."""
        S = np.asarray(stats, dtype=np.float32).reshape(-1, N_STATS)
        m = cls.unknown(len(S))
        m.put(np.arange(len(S)), S)
        return m

    def __len__(self) -> int:
        return len(self.named)

    @property
    def known(self) -> np.ndarray:
        """np.ndarray of shape (n,), bool: whether each image was measured."""
        return np.asarray(~np.isnan(self.named).any(axis=1), dtype=bool)

    def put(self, idx: np.ndarray | list[int], rows: np.ndarray) -> None:
        """Set the images at ``idx`` from rows of :func:`image_stats` (np.ndarray of shape (len(idx), N_STATS))."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, N_STATS)
        idx = np.asarray(idx, dtype=np.int64)
        for s in range(0, len(idx), _PUT_ROWS):  # in pieces: the float copies of the thumbnails stay small
            part, at = rows[s:s + _PUT_ROWS], idx[s:s + _PUT_ROWS]
            self.named[at] = part[:, :N_NAMED]
            thumbs = np.clip(np.rint(np.nan_to_num(part[:, N_NAMED:], nan=0.0)), 0, 255).astype(np.uint8)
            self.thumbs[at] = thumbs.reshape(-1, THUMB_SIDE, THUMB_SIDE)

    def rows(self, idx: np.ndarray | list[int]) -> np.ndarray:
        """The images at ``idx`` as rows of :func:`image_stats` (what the cache keeps), float32."""
        named = self.named[idx]
        thumbs = self.thumbs[idx].reshape(len(named), -1).astype(np.float32)
        thumbs[np.isnan(named).any(axis=1)] = np.nan
        return np.concatenate([named, thumbs], axis=1)


@dataclass(frozen=True)
class QualityThresholds:
    """Where each flag starts (chosen on planted cases; see docs/clean.md).

    Attributes:
        dark_p95: ``dark`` when 95% of the pixels are darker than this (luma, 0-255).
        bright_p05: ``bright`` when 95% of the pixels are brighter than this.
        low_information_entropy: ``low_information`` below this grey-level entropy (bits, 0-8).
        blurry_sharpness: ``blurry`` below this sharpness (standard deviation of the Laplacian
            divided by the standard deviation of the grey levels, at the analysis scale).
        grayscale_chroma: ``grayscale`` when the mean difference between colour channels is below this.
        small_side: ``small`` when the longer side has fewer pixels than this.
        odd_aspect: ``odd_aspect`` when the longer side is more than this many times the shorter.
    """

    dark_p95: float = 80.0
    bright_p05: float = 160.0
    low_information_entropy: float = 2.0
    blurry_sharpness: float = 0.15
    grayscale_chroma: float = 1.0
    small_side: int = 64
    odd_aspect: float = 3.0


DEFAULT_THRESHOLDS = QualityThresholds()
#: Every flag, in the order they are written.
FLAGS = ("blurry", "dark", "bright", "low_information", "grayscale", "small", "odd_aspect")


def image_stats(image: Image.Image, original_size: tuple[int, int] | None = None) -> np.ndarray:
    """The quality measurements of one decoded image.

    Args:
        image: an RGB image (as :func:`imgclust.io.decode.decode` returns it; a JPEG may be drafted smaller).
        original_size: (width, height) stored in the file; default ``image.size``.

    Returns:
        np.ndarray of shape (N_STATS,), float32, in the order of :data:`STATS`.

    Example:
        >>> from PIL import Image
        >>> s = image_stats(Image.new("RGB", (50, 40), (10, 10, 10)))
        >>> float(s[STATS.index("luma_mean")])
        10.0
    """
    w, h = original_size if original_size and original_size[0] > 0 else image.size
    small = image if image.mode == "RGB" else image.convert("RGB")
    factor = min(small.size) // ANALYSIS_SIDE
    if factor >= 2:  # a box reduction first: several times cheaper than resampling the full image
        small = small.reduce(factor)
    # Grey levels at the analysis scale; Pillow's C code does the conversions and resizing (ITU-R 601 luma).
    grey_img = small.convert("L")
    side = min(grey_img.size)
    if side > ANALYSIS_SIDE:
        scale = ANALYSIS_SIDE / side
        grey_img = grey_img.resize((max(1, round(grey_img.size[0] * scale)), max(1, round(grey_img.size[1] * scale))),
                                   Image.Resampling.BILINEAR)
    grey8 = np.asarray(grey_img)
    hist = np.bincount(grey8.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    cdf = np.cumsum(hist) / total
    p05, p95 = float(np.searchsorted(cdf, 0.05)), float(np.searchsorted(cdf, 0.95))
    levels = np.arange(256, dtype=np.float64)
    mean = float(hist @ levels / total)
    std = float(np.sqrt(max(hist @ (levels - mean) ** 2 / total, 0.0)))
    prob = hist[hist > 0] / total
    entropy = float(-(prob * np.log2(prob)).sum())
    if grey8.shape[0] >= 3 and grey8.shape[1] >= 3:
        grey = grey8.astype(np.float32)
        lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
        sharpness = float(lap.std()) / max(std, 1.0)
    else:
        sharpness = 0.0
    # Colour: the mean difference between channels, on a 32x32 copy (enough to tell colour from grey).
    rgb = np.asarray(small.resize((32, 32), Image.Resampling.BOX), dtype=np.int16)
    chroma = float((np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])).mean() / 2)
    words = perceptual_hash(grey_img)
    thumb = np.asarray(grey_img.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX), np.float32)
    return np.concatenate([np.array([w, h, mean, p05, p95, std, entropy, sharpness, chroma, *words],
                                    dtype=np.float32), thumb.ravel()])


def thumbnails(stats: np.ndarray) -> np.ndarray:
    """The 16x16 grey thumbnail of each row of ``stats`` (rows of :func:`image_stats`).

    Returns:
        np.ndarray of shape (n_images, THUMB_SIDE, THUMB_SIDE), float32 grey levels 0-255 (NaN where
        the measurements are unknown).
    """
    S = np.asarray(stats, dtype=np.float32).reshape(-1, N_STATS)
    return S[:, len(STATS):].reshape(-1, THUMB_SIDE, THUMB_SIDE)


def _named(stats: np.ndarray) -> np.ndarray:
    """The named columns of ``stats``: rows of :func:`image_stats`, or their named part alone (``Measurements.named``)."""
    S = np.asarray(stats, dtype=np.float32)
    S = S.reshape(-1, S.shape[-1] if S.ndim else N_STATS)
    if S.shape[1] not in (N_NAMED, N_STATS):
        raise ValueError(f"quality measurements have {N_NAMED} or {N_STATS} columns; got {S.shape[1]}")
    return S[:, :N_NAMED]


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)


_DCT32 = _dct_matrix(32)


def perceptual_hash(image: Image.Image) -> list[int]:
    """The 64-bit pHash of an image (8x8 low frequencies of the DCT of a 32x32 grey copy, above their median).

    Returns:
        Four 16-bit words (most significant first).
    """
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    low = (_DCT32 @ grey @ _DCT32.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False  # the mean (DC term) says nothing about the picture's structure
    words = np.packbits(bits).view(">u2")
    return [int(x) for x in words]


def hash_bits(stats: np.ndarray) -> np.ndarray:
    """The pHash of each row of ``stats`` as +-1 values, shape (n_images, 64), float32.

    Two hashes that differ in d bits have cosine ``1 - 2 d / 64``, so a Hamming radius becomes a
    cosine threshold and the same neighbour search serves both.
    """
    S = _named(stats)
    words = S[:, _COL["phash0"]:_COL["phash3"] + 1].astype(">u2")
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1)
    return bits.astype(np.float32) * 2 - 1


def hash_words(stats: np.ndarray) -> np.ndarray:
    """The pHash of each row of ``stats`` as one 64-bit word, np.ndarray of shape (n_images,), uint64 (bits in
    the order of :func:`hash_bits`)."""
    words = _named(stats)[:, _COL["phash0"]:_COL["phash3"] + 1].astype(np.uint64)
    return (words[:, 0] << 48) | (words[:, 1] << 32) | (words[:, 2] << 16) | words[:, 3]


def quality_flags(stats: np.ndarray, thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> list[list[str]]:
    """The flags of each image.

    Args:
        stats: np.ndarray of shape (n_images, N_STATS), rows of :func:`image_stats` (or their first
            N_NAMED columns: ``Measurements.named``).

    Returns:
        One list of flag names (from :data:`FLAGS`, in that order) per image; empty for a clean image.

    A flat image is ``low_information`` only (not also blurry or grayscale: that says nothing more);
    a dark or bright image is not also called blurry or grayscale (its edges and colours are lost in
    the dark or the glare, not to focus or to a black-and-white film). An image whose measurements
    are unknown (NaN) gets no flag.
    """
    t = thresholds
    S = _named(stats)
    c = _COL
    w, h = S[:, c["width"]], S[:, c["height"]]
    low = S[:, c["entropy"]] < t.low_information_entropy
    dark = ~low & (S[:, c["luma_p95"]] < t.dark_p95)
    bright = ~low & (S[:, c["luma_p05"]] > t.bright_p05)
    checks = {
        "blurry": ~low & ~dark & ~bright & (S[:, c["sharpness"]] < t.blurry_sharpness),
        "dark": dark,
        "bright": bright,
        "low_information": low,
        "grayscale": ~low & ~dark & ~bright & (S[:, c["chroma"]] < t.grayscale_chroma),
        "small": np.maximum(w, h) < t.small_side,
        "odd_aspect": np.maximum(w, h) > t.odd_aspect * np.maximum(np.minimum(w, h), 1),
    }
    return [[f for f in FLAGS if checks[f][i]] for i in range(len(S))]


def quality_text(flags: Sequence[str]) -> str:
    """An image's entry in the ``quality`` column of assignments.csv: its flags joined by ``;`` (empty when clean)."""
    return ";".join(flags)


def quality_counts(flags: Sequence[Sequence[str]]) -> dict[str, int]:
    """Images per flag (every flag listed, zeros included), for summary.json."""
    counts = dict.fromkeys(FLAGS, 0)
    for fs in flags:
        for f in fs:
            counts[f] += 1
    return counts
