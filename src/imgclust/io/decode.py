"""Turn one image file into RGB pixels, or into a recorded reason why it cannot be done.

:func:`decode` never raises for a bad file: it returns a :class:`Decoded` whose ``status``
says what went wrong. Content decides the format, not the extension (a PNG named ``.jpg`` is
read as the PNG it is), but only the formats imgclust lists are ever opened (:data:`ALLOWED_FORMATS`):
a file of any other format (PostScript/EPS, which Pillow hands to the external Ghostscript program,
PPM, ICO, ...) is a row with status ``unsupported_format`` and is never parsed. Size is checked from
the header before any pixel is decoded, so a decompression bomb is refused without using its memory.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb threshold (about 89 megapixels) is our default ceiling.
DEFAULT_MAX_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

# The only Pillow plugins imgclust lets open a file: the formats the README lists (JPEG's opener also reads
# MPO, the multi-picture JPEG that phones write). Every other plugin stays unused: EPS would run
# Ghostscript, an external program, on an untrusted file, and the rarer parsers are less tested.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP and TIFF"


@dataclass(frozen=True)
class Decoded:
    """The result of decoding one file.

    Attributes:
        image: a loaded PIL image in mode ``RGB`` (None when the file could not be used).
        status: ``"ok"`` or a reason: ``not_an_image``, ``unsupported_format``, ``truncated``, ``too_large``, ``unreadable``,
            ``corrupt``.
        error: a human-readable explanation when status is not ok.
        original_size: (width, height) as stored in the file, before EXIF rotation (0, 0 if unknown).
    """

    image: Image.Image | None
    status: str = "ok"
    error: str = ""
    original_size: tuple[int, int] = (0, 0)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping 16-bit data or losing alpha sensibly."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels are shown on white, as image viewers do.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """The Pillow format a file's first bytes announce, among the formats imgclust does *not* open, else None.

    Only each plugin's signature check runs (a pure function of 16 bytes, as in ``Image.open``): nothing
    is parsed and no external program runs.
    """
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(16)
    except OSError:
        return None
    Image.init()
    for fmt in Image.ID:
        if fmt in ALLOWED_FORMATS:
            continue
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(prefix):
                return fmt
        except Exception:  # noqa: BLE001 - a signature check that fails only means "not this format"
            continue
    return None


def _unidentified(path: str | os.PathLike[str]) -> Decoded:
    fmt = sniff_format(path)
    if fmt is not None:
        return Decoded(None, "unsupported_format",
                       f"The file's content is {fmt}, a format imgclust does not open (only {FORMAT_NAMES}). "
                       "Convert it to one of these to include it.")
    return Decoded(None, "not_an_image", "The file's content is not an image format imgclust reads "
                   f"({FORMAT_NAMES}).")


def _readable(text: str) -> str:
    # Reasons may quote a file name that is not UTF-8 (surrogate escapes); show its bytes as \\x.. escapes.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def decode(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Decoded:
    """Decode an image file into RGB.

    Args:
        path: the file.
        max_pixels: refuse images with more pixels than this (status ``too_large``), checked before
            decoding.
        draft_size: when given, JPEGs are decoded at a reduced scale that is still at least this
            (width, height) (Pillow's ``draft()``: several times faster for large photos).

    Returns:
        :class:`Decoded`. EXIF orientation is applied; the first frame of an animation is used;
        transparency is composited on white; 16-bit images are scaled, not clipped.

    Example:
        >>> d = decode("cat.jpg")  # doctest: +SKIP
        >>> d.status, d.image.size  # doctest: +SKIP
        ('ok', (500, 374))
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns about bombs (checked below) and damaged metadata (not actionable): no noise.
            warnings.simplefilter("ignore")
            with Image.open(path, formats=ALLOWED_FORMATS) as img:
                w, h = img.size
                if w <= 0 or h <= 0:
                    return Decoded(None, "corrupt", f"The image header says it is {w}x{h} pixels.", (w, h))
                if w * h > max_pixels:
                    return Decoded(None, "too_large",
                                   f"{w}x{h} = {w * h:,} pixels is more than the limit of {max_pixels:,} "
                                   "(a possible decompression bomb).", (w, h))
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                if draft_size is not None and img.format == "JPEG":
                    img.draft("RGB", draft_size)
                img.load()
                if img.format == "JPEG":
                    # A loaded JPEG holds all its pixels: orient it in place (an upright photo is not copied).
                    ImageOps.exif_transpose(img, in_place=True)
                    rgb = _to_rgb(img)
                else:  # other formats may need their open file later (frames): work on a copy
                    oriented = ImageOps.exif_transpose(img)
                    rgb = _to_rgb(oriented if oriented is not None else img)
                rgb.load()
                return Decoded(rgb, "ok", "", (w, h))
    except UnidentifiedImageError:
        return _unidentified(path)
    except Image.DecompressionBombError as exc:
        return Decoded(None, "too_large", _readable(str(exc)))
    except PermissionError:
        return Decoded(None, "permission_denied", "No permission to read this file.")
    except FileNotFoundError:
        return Decoded(None, "unreadable", "The file disappeared while it was being read.")
    except OSError as exc:
        text = _readable(str(exc))
        if "truncated" in text.lower():
            return Decoded(None, "truncated", f"The image file is truncated (incomplete): {text}.")
        return Decoded(None, "corrupt", f"The image data is damaged: {text}.")
    except (ValueError, SyntaxError, MemoryError, EOFError,
            # what Pillow's format plugins raise on damaged headers (found by fuzzing; see tests)
            TypeError, IndexError, KeyError, ZeroDivisionError, struct.error) as exc:
        return Decoded(None, "corrupt", _readable(f"The image data is damaged: {type(exc).__name__}: {exc}."))
