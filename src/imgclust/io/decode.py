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
import threading
import warnings
from dataclasses import dataclass
from typing import Any

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
    reserved: int = 0  # bytes of the decode budget still held for ``image`` (see decode(keep_reserved=True))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping 16-bit data or losing alpha sensibly."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        top = 65535.0 if (mode.startswith("I;16") or _max_value(img) > 255) else 255.0
        return _scale_to_8bit(img, top).convert("RGB")
    if mode == "F":
        top = 1.0 if _max_value(img) <= 1.0 else 255.0
        return _scale_to_8bit(img, top).convert("RGB")
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


def _max_value(img: Image.Image) -> float:
    high = img.getextrema()[1]  # computed by Pillow without a copy of the pixels
    return max(0.0, float(high))  # type: ignore[arg-type]


def _scale_to_8bit(img: Image.Image, top: float) -> Image.Image:
    """A 16-bit, 32-bit or float image scaled to 8-bit L, ``top`` -> 255, a block of rows at a time: the
    float temporaries stay within :data:`SCALE_BLOCK_PIXELS` pixels however large the image."""
    w, h = img.size
    out = np.empty((h, w), dtype=np.uint8)
    rows = max(1, SCALE_BLOCK_PIXELS // max(w, 1))
    for y in range(0, h, rows):
        block = np.asarray(img.crop((0, y, w, min(h, y + rows))), dtype=np.float64)
        out[y:y + rows] = np.clip(block / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


# ---------------------------------------------------------------------------------------------
# The decode memory budget: bytes, not pixels, shared by every thread that decodes.

# At most 1 GB held by decoding at once in a process (all decode threads together), unless
# $IMGCLUST_DECODE_BUDGET_MB says otherwise.
DEFAULT_DECODE_BUDGET: int = 1_000_000_000
BUDGET_ENV = "IMGCLUST_DECODE_BUDGET_MB"
# Rows of a 16-bit/float image are scaled to 8 bits in blocks of this many pixels.
SCALE_BLOCK_PIXELS = 1 << 20
_SCALE_BLOCK_BYTES = SCALE_BLOCK_PIXELS * 34  # the block, its float64 copy and two float64 temporaries


class DecodeBudget:
    """A number of bytes that decoding may hold at once, shared by threads.

    :func:`decode` estimates what an image will cost (:func:`decode_cost`) from its header, before any
    pixel is decoded, and waits until that much of the budget is free; an image that would need more than
    the whole budget is refused (status ``too_large``). So however many threads decode, and however small
    the files, decoding never holds more than the budget.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"A decode budget must be positive; got {max_bytes}.")
        self.max_bytes = int(max_bytes)
        self.in_use = 0
        self.peak = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> bool:
        """Wait until ``n`` bytes are free and take them; False (at once) when ``n`` exceeds the whole budget."""
        if n > self.max_bytes:
            return False
        with self._cond:
            while self.in_use + n > self.max_bytes:
                self._cond.wait()
            self.in_use += n
            self.peak = max(self.peak, self.in_use)
        return True

    def release(self, n: int) -> None:
        """Give back ``n`` bytes taken by :meth:`acquire`."""
        if n <= 0:
            return
        if n >= TRIM_AFTER_BYTES:
            _return_freed_memory()
        with self._cond:
            self.in_use = max(0, self.in_use - n)
            self._cond.notify_all()


# After a large image, freed memory is handed back to the system before the budget is: glibc keeps what a
# thread freed in that thread's own heap, so without this each decode thread would keep the memory of the
# largest image it decoded (measured: 4 threads held 2.5 times the budget in resident memory). It has a
# price: the next large image faults its memory in again (12 photos of 12 megapixels decoded at full size
# took about 1.4 times as long). Extraction decodes JPEGs at a reduced scale (every extractor has a
# draft size), which stays below this threshold, so it is paid for large PNG/TIFF images only.
TRIM_AFTER_BYTES = 24_000_000
_malloc_trim: Any = None


def _return_freed_memory() -> None:
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_shared_budget: DecodeBudget | None = None
_shared_lock = threading.Lock()


def shared_budget() -> DecodeBudget:
    """The budget shared by every decode in this process: ``$IMGCLUST_DECODE_BUDGET_MB`` megabytes, else 1 GB."""
    global _shared_budget
    with _shared_lock:
        if _shared_budget is None:
            _shared_budget = DecodeBudget(budget_from_env())
        return _shared_budget


def budget_from_env() -> int:
    """Bytes of ``$IMGCLUST_DECODE_BUDGET_MB`` (a positive number of megabytes), else :data:`DEFAULT_DECODE_BUDGET`."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_DECODE_BUDGET
    try:
        mb = float(text)
    except ValueError:
        mb = 0.0
    if not mb > 0 or mb != mb or mb == float("inf"):
        from ..errors import ParameterError

        raise ParameterError(f"${BUDGET_ENV} must be a positive number of megabytes; got '{text}'.")
    return int(mb * 1_000_000)


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow keeps in memory per pixel of ``mode`` (8-bit multi-band modes, RGB too, take 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decode_cost(mode: str, size: tuple[int, int], frames: int = 1, transparency: bool = False) -> int:
    """Bytes that decoding an image of ``mode`` and ``size`` to RGB may hold at its peak (an upper estimate).

    It counts bytes, not pixels: the stored image (its bit depth and channels: 1 byte a pixel for L/P,
    2 for 16-bit, 4 for RGB/RGBA/CMYK/32-bit/float), a second frame buffer for animations (GIF and APNG
    keep the previous frame to draw the next), the copy made to apply EXIF orientation, and the
    conversion to RGB (a white background and a composite for transparency; a block of float rows and an
    8-bit copy for 16-bit and float images), plus a margin for resizing and for what the memory allocator
    keeps around a large decode.
    """
    w, h = size
    px = max(0, w) * max(0, h)
    stored = _bytes_per_pixel(mode)
    per_pixel = stored * (2 if frames > 1 else 1) + stored + 4 + 1  # image (+ previous frame), oriented copy, RGB
    extra = 0
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and transparency):
        per_pixel += 16  # RGBA copy, white background, composite (and a margin: measured 24 bytes a pixel in all)
    elif mode.startswith("I") or mode == "F":
        per_pixel += 1  # the 8-bit copy
        extra = _SCALE_BLOCK_BYTES
    # 15% and 8 MB more: what the allocator keeps around a large decode (measured with four decode threads)
    return int(px * per_pixel * 1.15) + extra + 8_000_000


def _over_budget(img: Image.Image, cost: int, frames: int, budget: DecodeBudget) -> str:
    w, h = img.size
    what = f"{w}x{h} {img.mode}" + (f", {frames} frames" if frames > 1 else "")
    return (f"Decoding this image ({what}) needs about {cost / 1e6:,.0f} MB, more than the decode memory budget "
            f"of {budget.max_bytes / 1e6:,.0f} MB (a possible decompression bomb; raise ${BUDGET_ENV} to "
            "decode it).")


def _readable(text: str) -> str:
    # Reasons may quote a file name that is not UTF-8 (surrogate escapes); show its bytes as \\x.. escapes.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def decode(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    budget: DecodeBudget | None = None,
    keep_reserved: bool = False,
) -> Decoded:
    """Decode an image file into RGB.

    Args:
        path: the file.
        max_pixels: refuse images with more pixels than this (status ``too_large``), checked before
            decoding.
        draft_size: when given, JPEGs are decoded at a reduced scale that is still at least this
            (width, height) (Pillow's ``draft()``: several times faster for large photos).
        budget: the memory budget this decode counts against (default: :func:`shared_budget`, shared by
            every thread of the process). It waits for its estimated cost to be free; an image that needs
            more than the whole budget is ``too_large``.
        keep_reserved: keep the bytes of the returned RGB image reserved (``Decoded.reserved``) until the
            caller gives them back with ``budget.release(decoded.reserved)`` once it has dropped the image.

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
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    img.seek(0)
                if draft_size is not None and img.format == "JPEG":
                    img.draft("RGB", draft_size)
                budget = budget if budget is not None else shared_budget()
                cost = decode_cost(img.mode, img.size, frames, "transparency" in img.info)
                if not budget.acquire(cost):
                    return Decoded(None, "too_large", _over_budget(img, cost, frames, budget), (w, h))
                kept = 0
                try:
                    img.load()
                    if img.format == "JPEG":
                        # A loaded JPEG holds all its pixels: orient it in place (an upright photo is not copied).
                        ImageOps.exif_transpose(img, in_place=True)
                        rgb = _to_rgb(img)
                    else:  # other formats may need their open file later (frames): work on a copy
                        oriented = ImageOps.exif_transpose(img)
                        rgb = _to_rgb(oriented if oriented is not None else img)
                    rgb.load()
                    kept = min(cost, rgb.width * rgb.height * 4) if keep_reserved else 0
                    return Decoded(rgb, "ok", "", (w, h), reserved=kept)
                finally:
                    budget.release(cost - kept)
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
