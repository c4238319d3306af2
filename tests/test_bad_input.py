"""Bad input: every kind of broken, odd or hostile file becomes a row with a status and a reason, and
the run goes on. The tests make every file themselves.

One folder holds all the cases plus nine good images; one run (pixels, k=3) clusters it, and each
case is its own test that checks its row in assignments.csv (and, where it matters, what
:func:`imgclust.decode` makes of the file).
"""

from __future__ import annotations

import csv
import html
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFile

from conftest import draw_image
from imgclust import decode, discover
from imgclust.cli import main
from imgclust.io import decode as decode_module
from imgclust.io import discover as discover_module
from imgclust.io.decode import DEFAULT_MAX_PIXELS


def _png_with_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but holds one tiny compressed row.

    A decoder that trusted the header would allocate width * height * 3 bytes.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _save(path: Path, img: Image.Image, **kw: object) -> Path:
    img.save(path, **kw)  # type: ignore[arg-type]
    return path


def _rgb(w: int = 40, h: int = 30, color: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def _two_colour(w: int = 60, h: int = 30) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2:] = (0, 0, 255)
    return Image.fromarray(arr, "RGB")


# ---------------------------------------------------------------------------------------------
# The cases. make(root) creates the file(s) and returns the relative path of the row to check.


def _zero_byte(root: Path) -> str:
    (root / "empty.jpg").write_bytes(b"")
    return "empty.jpg"


def _truncated_jpeg(root: Path) -> str:
    full = _save(root / "full.tmpjpg", _two_colour(300, 200), format="JPEG", quality=90).read_bytes()
    (root / "full.tmpjpg").unlink()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    return "truncated.jpg"


def _truncated_png(root: Path) -> str:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), "RGB")
    data = _save(root / "x.tmppng", img, format="PNG").read_bytes()
    (root / "x.tmppng").unlink()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    return "truncated.png"


def _jpeg_header_then_garbage(root: Path) -> str:
    (root / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    return "garbage.jpg"


def _text_named_jpg(root: Path) -> str:
    (root / "notes.jpg").write_text("shopping list: milk, eggs\n")
    return "notes.jpg"


def _html_named_png(root: Path) -> str:
    (root / "page.png").write_text("<!doctype html><html><body><script>alert(1)</script></body></html>")
    return "page.png"


def _png_named_jpg(root: Path) -> str:
    _save(root / "really_a_png.jpg", _rgb(), format="PNG")
    return "really_a_png.jpg"


def _gif_named_png(root: Path) -> str:
    _save(root / "really_a_gif.png", _rgb(color=(30, 200, 40)), format="GIF")
    return "really_a_gif.png"


def _png_16bit(root: Path) -> str:
    arr = np.full((30, 40), 32768, dtype=np.uint16)
    _save(root / "sixteen_bit.png", Image.fromarray(arr))
    return "sixteen_bit.png"


def _cmyk_jpeg(root: Path) -> str:
    _save(root / "cmyk.jpg", Image.new("CMYK", (40, 30), (0, 255, 255, 0)), quality=95)  # red in CMYK
    return "cmyk.jpg"


def _grayscale(root: Path) -> str:
    _save(root / "gray.jpg", Image.new("L", (40, 30), 90))
    return "gray.jpg"


def _one_bit(root: Path) -> str:
    _save(root / "one_bit.png", Image.new("1", (40, 30), 1))
    return "one_bit.png"


def _float_tiff(root: Path) -> str:
    _save(root / "float.tif", Image.fromarray(np.full((30, 40), 0.5, np.float32)))
    return "float.tif"


def _palette_transparent(root: Path) -> str:
    img = Image.new("P", (40, 30), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (20, 0, 40, 30))  # right half red, left half index 0 = transparent
    _save(root / "palette.png", img, transparency=0)
    return "palette.png"


def _rgba(root: Path) -> str:
    arr = np.zeros((30, 40, 4), np.uint8)
    arr[:, 20:] = (0, 0, 255, 255)  # right half opaque blue, left half fully transparent black
    _save(root / "rgba.png", Image.fromarray(arr, "RGBA"))
    return "rgba.png"


def _animated_gif(root: Path) -> str:
    frames = [_rgb(color=(255, 0, 0)), _rgb(color=(0, 0, 255)), _rgb(color=(0, 255, 0))]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return "animated.gif"


def _multipage_tiff(root: Path) -> str:
    frames = [_rgb(color=(255, 0, 0)), _rgb(color=(0, 0, 255))]
    frames[0].save(root / "pages.tif", save_all=True, append_images=frames[1:])
    return "pages.tif"


def _exif_rotated(root: Path) -> str:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored image must be turned 90 degrees clockwise to be shown
    _save(root / "rotated.jpg", _two_colour(), exif=exif, quality=95)
    return "rotated.jpg"


def _bomb_huge_header(root: Path) -> str:
    _png_with_header(root / "bomb.png", 100_000, 100_000)  # 10 gigapixels claimed
    return "bomb.png"


def _bomb_just_over_limit(root: Path) -> str:
    side = int((DEFAULT_MAX_PIXELS + 1) ** 0.5) + 1
    _png_with_header(root / "just_over.png", side, side)
    return "just_over.png"


def _zero_dimension(root: Path) -> str:
    _png_with_header(root / "zero_width.png", 0, 10)
    return "zero_width.png"


def _one_pixel(root: Path) -> str:
    _save(root / "one_pixel.png", _rgb(1, 1))
    return "one_pixel.png"


def _strip(root: Path) -> str:
    _save(root / "strip.png", _rgb(30000, 20, (20, 20, 200)))
    return "strip.png"


def _webp(root: Path) -> str:
    _save(root / "photo.webp", _rgb(color=(10, 120, 10)))
    return "photo.webp"


def _upper_case_extension(root: Path) -> str:
    _save(root / "LOUD.JPEG", _rgb(), format="JPEG")
    return "LOUD.JPEG"


def _directory_named_jpg(root: Path) -> str:
    (root / "folder.jpg").mkdir()
    return "folder.jpg"


def _broken_symlink(root: Path) -> str:
    (root / "broken.jpg").symlink_to(root / "does-not-exist.jpg")
    return "broken.jpg"


def _symlink_loop(root: Path) -> str:
    (root / "loop_a.jpg").symlink_to(root / "loop_b.jpg")
    (root / "loop_b.jpg").symlink_to(root / "loop_a.jpg")
    return "loop_a.jpg"


def _symlink_to_good_image(root: Path) -> str:
    target = draw_image(root / "targets" / "target.png", color=(10, 10, 10))
    (root / "link_to_good.png").symlink_to(target)
    return "link_to_good.png"


def _fifo(root: Path) -> str:
    os.mkfifo(root / "pipe.jpg")  # opening it for reading would block forever
    return "pipe.jpg"


def _apple_double(root: Path) -> str:
    (root / "._holiday.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # macOS resource fork
    return "._holiday.jpg"


def _name_with_spaces(root: Path) -> str:
    _save(root / "my holiday  photo .png", _rgb())
    return "my holiday  photo .png"


def _unicode_name(root: Path) -> str:
    _save(root / "café 猫 🐱 Ωmega.png", _rgb())
    return "café 猫 🐱 Ωmega.png"


def _non_utf8_name(root: Path) -> str:
    _save(Path(os.fsdecode(os.fsencode(root) + b"/latin1-\xe9t\xe9.png")), _rgb(), format="PNG")
    return "latin1-\\xe9t\\xe9.png"  # shown with backslash escapes


def _html_in_name(root: Path) -> str:
    _save(root / "<img src=x onerror=alert(1)>.png", _rgb())
    return "<img src=x onerror=alert(1)>.png"


def _quote_comma_newline_in_name(root: Path) -> str:
    _save(root / 'a "quoted", name\nwith newline.png', _rgb())
    return 'a "quoted", name\nwith newline.png'


def _very_long_name(root: Path) -> str:
    name = "long_" + "x" * 240 + ".png"  # 249 bytes; 255 is the usual limit
    _save(root / name, _rgb())
    return name


def _exact_duplicate(root: Path) -> str:
    (root / "red_0 copy.png").write_bytes((root / "good" / "red_0.png").read_bytes())
    return "red_0 copy.png"


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], str]
    status: str
    check: Callable[[Image.Image], None] | None = None  # checks decode(path).image when status is ok


def _pixel(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(img)[y, x])


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 30) -> bool:
    return all(abs(p - q) <= tol for p, q in zip(a, b, strict=True))


def _check_16bit(img: Image.Image) -> None:
    assert _close(_pixel(img, 5, 5), (128, 128, 128), 1), "16-bit values must be scaled, not clipped to 255"


def _check_cmyk(img: Image.Image) -> None:
    r, g, b = _pixel(img, 5, 5)
    assert r > 180 and g < 80 and b < 80, (r, g, b)


def _check_palette(img: Image.Image) -> None:
    assert _pixel(img, 5, 5) == (255, 255, 255), "transparent pixels go on white"
    assert _pixel(img, 30, 5) == (255, 0, 0)


def _check_rgba(img: Image.Image) -> None:
    assert _pixel(img, 5, 5) == (255, 255, 255), "transparent pixels go on white, not black"
    assert _pixel(img, 30, 5) == (0, 0, 255)


def _check_first_frame_red(img: Image.Image) -> None:
    assert _close(_pixel(img, 5, 5), (255, 0, 0)), _pixel(img, 5, 5)


def _check_rotated(img: Image.Image) -> None:
    # Stored 60x30 with red on the left; orientation 6 shows it turned clockwise: 30x60, red on top.
    assert img.size == (30, 60)
    assert _close(_pixel(img, 15, 5), (255, 0, 0)) and _close(_pixel(img, 15, 55), (0, 0, 255))


def _check_strip(img: Image.Image) -> None:
    assert img.size == (30000, 20)


def _check_png_named_jpg(img: Image.Image) -> None:
    assert _pixel(img, 0, 0) == (200, 40, 40)


CASES: dict[str, Case] = {
    "zero_byte_file": Case(_zero_byte, "empty_file"),
    "truncated_jpeg": Case(_truncated_jpeg, "truncated"),
    "truncated_png": Case(_truncated_png, "truncated"),
    "jpeg_header_then_garbage": Case(_jpeg_header_then_garbage, "not_an_image"),
    "text_named_jpg": Case(_text_named_jpg, "not_an_image"),
    "html_named_png": Case(_html_named_png, "not_an_image"),
    "png_named_jpg": Case(_png_named_jpg, "ok", _check_png_named_jpg),
    "gif_named_png": Case(_gif_named_png, "ok"),
    "png_16bit": Case(_png_16bit, "ok", _check_16bit),
    "cmyk_jpeg": Case(_cmyk_jpeg, "ok", _check_cmyk),
    "grayscale": Case(_grayscale, "ok", lambda img: _close(_pixel(img, 0, 0), (90, 90, 90), 2) or pytest.fail()),
    "one_bit": Case(_one_bit, "ok", lambda img: _pixel(img, 0, 0) == (255, 255, 255) or pytest.fail()),
    "float_tiff": Case(_float_tiff, "ok", lambda img: _close(_pixel(img, 0, 0), (128, 128, 128), 1) or pytest.fail()),
    "palette_with_transparency": Case(_palette_transparent, "ok", _check_palette),
    "rgba": Case(_rgba, "ok", _check_rgba),
    "animated_gif_first_frame": Case(_animated_gif, "ok", _check_first_frame_red),
    "multipage_tiff_first_page": Case(_multipage_tiff, "ok", _check_first_frame_red),
    "exif_rotated_jpeg": Case(_exif_rotated, "ok", _check_rotated),
    "decompression_bomb_10_gigapixels": Case(_bomb_huge_header, "too_large"),
    "decompression_bomb_just_over_limit": Case(_bomb_just_over_limit, "too_large"),
    "zero_width_header": Case(_zero_dimension, "not_an_image"),
    "one_pixel": Case(_one_pixel, "ok", lambda img: img.size == (1, 1) or pytest.fail()),
    "strip_30000x20": Case(_strip, "ok", _check_strip),
    "webp": Case(_webp, "ok"),
    "upper_case_extension": Case(_upper_case_extension, "ok"),
    "directory_named_jpg": Case(_directory_named_jpg, "is_a_directory"),
    "broken_symlink": Case(_broken_symlink, "broken_symlink"),
    "symlink_loop": Case(_symlink_loop, "symlink_loop"),
    "symlink_to_good_image": Case(_symlink_to_good_image, "ok"),
    "fifo_named_jpg": Case(_fifo, "not_a_file"),
    "hidden_apple_double": Case(_apple_double, "hidden"),
    "name_with_spaces": Case(_name_with_spaces, "ok"),
    "unicode_name": Case(_unicode_name, "ok"),
    "non_utf8_name": Case(_non_utf8_name, "ok"),
    "html_in_name": Case(_html_in_name, "ok"),
    "quote_comma_newline_in_name": Case(_quote_comma_newline_in_name, "ok"),
    "very_long_name": Case(_very_long_name, "ok"),
    "exact_duplicate": Case(_exact_duplicate, "ok"),
}


@dataclass
class BadRun:
    root: Path
    out: Path
    relpaths: dict[str, str]
    rows: dict[str, dict[str, str]]
    summary: dict[str, object]
    cli_output: str


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> BadRun:
    base = tmp_path_factory.mktemp("bad")
    root = base / "images"
    for c, (name, color) in enumerate({"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items()):
        for i in range(3):
            draw_image(root / "good" / f"{name}_{i}.png", color=color, seed=10 * c + i)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    relpaths = {case_id: case.make(root) for case_id, case in CASES.items()}
    out = base / "out"
    result = CliRunner().invoke(main, ["run", str(root), "--out", str(out), "--features", "pixels", "--k", "3",
                                       "--labels", "none", "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    with open(out / "assignments.csv", encoding="utf-8", newline="") as fh:
        rows = {row["path"]: row for row in csv.DictReader(fh)}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return BadRun(root, out, relpaths, rows, summary, " ".join(result.output.split()))


def test_there_are_at_least_25_kinds_of_bad_input():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_a_row_with_status_and_reason(bad_run: BadRun, case_id: str):
    case = CASES[case_id]
    rel = bad_run.relpaths[case_id]
    row = bad_run.rows.get(rel)
    assert row is not None, f"{rel!r} is missing from assignments.csv"
    assert row["status"] == case.status, row
    if case.status == "ok":
        assert row["cluster"] in {"0", "1", "2"} and row["error"] == ""
    else:
        assert row["cluster"] == "" and len(row["error"]) > 15, row
    if case.check is not None:
        path = bad_run.root / rel if case_id != "non_utf8_name" else next(
            r.path for r in discover(bad_run.root) if r.relpath == rel)
        decoded = decode(path)
        assert decoded.status == "ok" and decoded.image is not None and decoded.image.mode == "RGB"
        case.check(decoded.image)


def test_every_file_is_a_row_and_the_run_goes_on(bad_run: BadRun):
    expected = set(bad_run.relpaths.values()) | {f"good/{c}_{i}.png" for c in ("red", "green", "blue")
                                                for i in range(3)} | {"targets/target.png", "loop_b.jpg"}
    assert set(bad_run.rows) == expected
    n_ok = sum(r["status"] == "ok" for r in bad_run.rows.values())
    assert bad_run.summary["n_ok"] == n_ok and bad_run.summary["n_images"] == len(expected)
    assert bad_run.summary["n_failed"] == len(expected) - n_ok > 10
    assert f"{len(expected) - n_ok} files could not be used" in bad_run.cli_output


def test_files_without_an_image_extension_are_not_rows(bad_run: BadRun):
    # .DS_Store and other non-image names are not considered at all (documented in docs/bad-input.md).
    assert ".DS_Store" not in bad_run.rows


def test_exact_duplicates_are_reported(bad_run: BadRun):
    assert bad_run.rows["red_0 copy.png"]["duplicate_of"] == "good/red_0.png"
    assert bad_run.rows["good/red_0.png"]["duplicate_of"] == ""
    assert bad_run.rows["red_0 copy.png"]["cluster"] == bad_run.rows["good/red_0.png"]["cluster"]
    groups = bad_run.summary["duplicates"]
    assert ["good/red_0.png", "red_0 copy.png"] in groups
    # Several cases above are the same plain picture, and a link is the same bytes as its target.
    assert ["link_to_good.png", "targets/target.png"] in groups
    assert bad_run.summary["n_duplicates"] == sum(len(g) - 1 for g in groups)
    assert f"{bad_run.summary['n_duplicates']} files are exact copies of another file" in bad_run.cli_output
    marked = {p: r["duplicate_of"] for p, r in bad_run.rows.items() if r["duplicate_of"]}
    assert marked == {p: g[0] for g in groups for p in g[1:]}


def test_failed_files_are_listed_escaped_in_the_html_report(bad_run: BadRun):
    report = bad_run.out / "report.html"
    if not report.exists():
        pytest.skip("this build writes no report.html (issue 4 adds it)")
    text = report.read_text(encoding="utf-8")
    assert "<img src=x onerror=alert(1)>" not in text
    assert "<script>alert(1)</script>" not in text
    for rel, row in bad_run.rows.items():
        if row["status"] != "ok":
            assert html.escape(rel, quote=False) in text or html.escape(rel) in text, rel


def test_decompression_bomb_is_refused_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    def no_load(self):  # a decoder that got this far would allocate gigabytes
        raise AssertionError("pixels of a too-large image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    for w, h in ((100_000, 100_000), (20_000, 20_000), (10_000, 9_000)):
        d = decode(_png_with_header(tmp_path / f"b{w}.png", w, h))
        assert d.status == "too_large" and d.image is None, d
        assert "pixels is more than the limit" in d.error or "decompression bomb" in d.error


def test_max_pixels_is_a_parameter(tmp_path):
    path = tmp_path / "x.png"
    _rgb(40, 30).save(path)
    d = decode(path, max_pixels=1000)
    assert d.status == "too_large" and d.error == ("40x30 = 1,200 pixels is more than the limit of 1,000 "
                                                   "(a possible decompression bomb).")


def test_unreadable_file_real_permissions(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: root can read a file whose mode is 000; see the monkeypatched test below")
    path = draw_image(tmp_path / "secret.png", color=(1, 2, 3))
    path.chmod(0)
    try:
        (rec,) = discover(tmp_path)
        assert rec.status == "permission_denied"
        assert decode(path).status == "permission_denied"
    finally:
        path.chmod(0o644)


def test_unreadable_file_is_reported_by_discover(tmp_path, monkeypatch):
    # Works as root too: the permission check is made to say "no", as it does for other users.
    draw_image(tmp_path / "secret.png", color=(1, 2, 3))
    draw_image(tmp_path / "fine.png", color=(1, 2, 3))
    real_access = os.access
    monkeypatch.setattr(discover_module.os, "access",
                        lambda p, mode, **kw: False if Path(p).name == "secret.png" else real_access(p, mode, **kw))
    recs = {r.relpath: r for r in discover(tmp_path)}
    assert recs["secret.png"].status == "permission_denied"
    assert recs["secret.png"].error == "No permission to read this file."
    assert recs["fine.png"].ok


def test_unreadable_file_is_reported_by_decode(tmp_path, monkeypatch):
    # A file whose permissions change between discovery and decoding: open() raises PermissionError.
    import builtins

    path = draw_image(tmp_path / "secret.png", color=(1, 2, 3))
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, str | bytes | os.PathLike) and Path(os.fsdecode(file)) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    d = decode(path)
    assert (d.status, d.error) == ("permission_denied", "No permission to read this file.")


def test_file_that_disappears_before_decoding(tmp_path):
    path = draw_image(tmp_path / "gone.png", color=(1, 2, 3))
    path.unlink()
    assert decode(path).status == "unreadable"


def test_error_messages_never_hold_undecodable_bytes(tmp_path, monkeypatch):
    # A reason that quotes a non-UTF-8 file name must still be writable to a UTF-8 CSV.
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.png"))
    _rgb().save(path, format="PNG")

    def fail(*args, **kwargs):
        raise OSError(f"cannot read {path}")

    monkeypatch.setattr(decode_module.Image, "open", fail)
    d = decode(path)
    assert d.status == "corrupt"
    d.error.encode("utf-8")  # raises if a surrogate escape slipped through


# ---------------------------------------------------------------------------------------------
# Bad parameters and states: a clear message, exit code 2, and nothing written.


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(root.rglob("*"))}


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture()
def three_good_two_bad(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for i, color in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)]):
        draw_image(root / f"good_{i}.png", color=color, seed=i)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    return root


RUN = ["--features", "pixels", "--no-cache", "-q"]


@pytest.mark.parametrize("args,message", [
    (["--k", "0"], "Error: Invalid value for '--k': k must be at least 1; got 0."),
    (["--k", "-3"], "Error: Invalid value for '--k': k must be at least 1; got -3."),
    (["--k", "three"], "Error: Invalid value for '--k': k must be a whole number or 'auto'; got 'three'."),
    (["--k", "2.5"], "Error: Invalid value for '--k': k must be a whole number or 'auto'; got '2.5'."),
    # 5 files, 3 usable: the limit is the number of usable images.
    (["--k", "4"], "Error: k must be between 1 and the number of usable images (3); got 4."),
    (["--k", "2", "--features", "resnet"], "Error: Unknown features 'resnet'."),
    (["--k", "2", "--features", "pixel"], "Error: Unknown features 'pixel'. Did you mean 'pixels'?"),
    (["--k", "2", "--method", "kmean"], "Error: Unknown method 'kmean'. Did you mean 'kmeans'? Available: "),
    (["--k", "2", "--method", "dbscan-ish"], "Error: Unknown method 'dbscan-ish'. Available: "),
    (["--k-range", "5-2"], "Error: A k range needs 1 <= LOW <= HIGH; got '5-2'."),
    (["--k-range", "two"], "Error: A k range looks like 2-30; got 'two'."),
    (["--k", "2", "--seed", "-1"], "Error: Invalid value for '--seed': -1 is not in the range x>=0."),
    (["--k", "2", "--batch-size", "0"], "Error: Invalid value for '--batch-size': 0 is not in the range x>=1."),
])
def test_bad_parameter_exit_2_and_nothing_written(three_good_two_bad: Path, tmp_path: Path, args, message):
    before = _snapshot(three_good_two_bad)
    out = tmp_path / "out"
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(out), *args,
                          *(RUN if "--features" not in args else ["--no-cache", "-q"])])
    assert code == 2, text
    assert message in text
    assert not out.exists()
    assert _snapshot(three_good_two_bad) == before


def test_missing_images_folder(tmp_path: Path):
    code, text = _invoke(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: The images folder {tmp_path / 'nope'} does not exist or is not a folder.")
    assert not (tmp_path / "out").exists()


def test_images_folder_is_a_file(tmp_path: Path):
    path = draw_image(tmp_path / "one.png", color=(1, 2, 3))
    code, text = _invoke(["run", str(path), "--out", str(tmp_path / "out"), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: The images folder {path} does not exist or is not a folder.")
    assert not (tmp_path / "out").exists()


def test_empty_images_folder(tmp_path: Path):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "images" / "readme.txt").write_text("no pictures here")
    code, text = _invoke(["run", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: Found 0 images under {tmp_path / 'images'}. "
                               "Supported extensions: .jpg .jpeg .png .bmp .gif .webp .tif .tiff.")
    assert not (tmp_path / "out").exists()


def test_no_usable_image(tmp_path: Path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"")
    (root / "b.jpg").write_text("text")
    (root / "c.png").write_text("<html></html>")
    code, text = _invoke(["run", str(root), "--out", str(tmp_path / "out"), "--k", "2", *RUN])
    assert code == 2
    assert text == (f"Error: None of the 3 files under {root} is a usable image (2 not_an_image, 1 empty_file). "
                    "See assignments.csv of a run with at least one good image for each file's reason.")
    assert not (tmp_path / "out").exists()


def test_output_folder_inside_images_folder(three_good_two_bad: Path):
    before = _snapshot(three_good_two_bad)
    out = three_good_two_bad / "results"
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(out), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: The output folder {out} is inside the images folder {three_good_two_bad}. "
                               "Choose an output folder outside it, so outputs are never read as input.")
    assert _snapshot(three_good_two_bad) == before


def test_images_folder_inside_output_folder(three_good_two_bad: Path):
    out = three_good_two_bad.parent
    before = _snapshot(out)
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(out), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: The images folder {three_good_two_bad} is inside the output folder {out}. "
                               "Choose a separate output folder.")
    assert _snapshot(out) == before


def test_output_folder_full_of_other_files(three_good_two_bad: Path, tmp_path: Path):
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.docx").write_bytes(b"precious")
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(out), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: The output folder {out} is not empty and is not from an earlier imgclust "
                               "run. Choose an empty or new folder; imgclust never writes among other files.")
    assert _snapshot(out) == {"thesis.docx": b"precious"}


def test_output_folder_below_a_file(three_good_two_bad: Path, tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "out"
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(out), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: Cannot create the output folder {out}: {blocker} is a file, not a folder. "
                               "Choose another output folder.")


def test_output_folder_not_writable(three_good_two_bad: Path, tmp_path: Path, monkeypatch):
    # As root every folder is writable, so the permission check is made to say "no" for this one.
    import imgclust.pipeline as pipeline

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(pipeline.os, "access", lambda p, mode, **kw: False if Path(p) == locked
                        else real_access(p, mode, **kw))
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(locked / "out"), "--k", "2", *RUN])
    assert (code, text) == (2, f"Error: Permission denied: cannot write in {locked}. "
                               "Choose an output folder you can write to.")
    assert list(locked.iterdir()) == []


def test_output_folder_not_writable_real_permissions(three_good_two_bad: Path, tmp_path: Path):
    if os.geteuid() == 0:
        pytest.skip("running as root: a folder with mode 555 is still writable for root (see the test above)")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, text = _invoke(["run", str(three_good_two_bad), "--out", str(locked / "out"), "--k", "2", *RUN])
        assert code == 2 and "Permission denied" in text
    finally:
        locked.chmod(0o755)


def _pixels_cache(tmp_path: Path, meta: dict[str, object]) -> tuple[Path, Path]:
    from imgclust.features import get_extractor

    cache = tmp_path / "cache"
    folder = cache / "vectors" / get_extractor("pixels").cache_id()
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(meta))
    return cache, folder


def test_cache_written_by_another_extractor_is_not_trusted(three_good_two_bad: Path, tmp_path: Path):
    cache, folder = _pixels_cache(tmp_path, {"format": 1, "cache_id": "resnet50-0123456789abcdef", "dim": 2048})
    before = _snapshot(cache)
    out = tmp_path / "out"
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(out), "--k", "2", "--features", "pixels",
                          "--cache", str(cache), "-q"])
    assert (code, text) == (2, f"Error: The cache {folder} holds vectors of another extractor "
                               "(resnet50-0123456789abcdef, dim 2048); not trusting it. "
                               "Delete that folder or pass another --cache.")
    assert not out.exists() and _snapshot(cache) == before


def test_cache_written_by_a_newer_version_is_not_trusted(three_good_two_bad: Path, tmp_path: Path):
    cache, folder = _pixels_cache(tmp_path, {"format": 99, "imgclust_version": "9.0"})
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(tmp_path / "out"), "--k", "2",
                          "--features", "pixels", "--cache", str(cache), "-q"])
    assert (code, text) == (2, f"Error: The cache {folder} was written by a newer imgclust (9.0); this is 0.1.0. "
                               "Upgrade imgclust or pass another --cache.")
    assert not (tmp_path / "out").exists()


def test_unreadable_cache_metadata_is_not_trusted(three_good_two_bad: Path, tmp_path: Path):
    cache, folder = _pixels_cache(tmp_path, {})
    (folder / "meta.json").write_text("{not json")
    code, text = _invoke(["run", str(three_good_two_bad), "--out", str(tmp_path / "out"), "--k", "2",
                          "--features", "pixels", "--cache", str(cache), "-q"])
    assert code == 2 and text.startswith(f"Error: The cache metadata {folder / 'meta.json'} is unreadable")
    assert not (tmp_path / "out").exists()


def test_damaged_cache_store_is_ignored_and_recomputed(three_good_two_bad: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    args = ["run", str(three_good_two_bad), "--k", "2", "--features", "pixels", "--cache", str(cache), "-q"]
    assert _invoke([*args, "--out", str(tmp_path / "a")])[0] == 0
    segments = list(cache.rglob("seg-*.f32"))
    assert segments
    for segment in segments:
        segment.write_bytes(b"damaged")
    code, text = _invoke([*args, "--out", str(tmp_path / "b")])
    assert code == 0, text
    a = (tmp_path / "a" / "assignments.csv").read_text()
    assert (tmp_path / "b" / "assignments.csv").read_text() == a
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["n_vectors_computed"] == 3


# ---------------------------------------------------------------------------------------------
# Security: nothing a user passes is unpickled.

SRC = Path(__file__).resolve().parents[1] / "src" / "imgclust"


def _calls(pattern: str) -> list[tuple[str, str]]:
    import re

    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(pattern, text):
            # the whole call, up to its closing parenthesis (calls may span lines)
            depth, end = 0, m.end() - 1
            for end in range(m.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            found.append((f"{path.relative_to(SRC)}:{text.count(chr(10), 0, m.start()) + 1}", text[m.start():end + 1]))
    return found


def test_no_unpickling_anywhere_in_the_package():
    assert _calls(r"\b(c?[Pp]ickle|joblib|dill|cloudpickle|marshal|shelve)\.(loads?|Unpickler|open)\(") == []
    assert _calls(r"\byaml\.(unsafe_)?load\(") == []


def test_every_torch_load_is_weights_only():
    for where, call in _calls(r"\btorch\.load\("):
        assert "weights_only=True" in call, f"{where}: {call}"


def test_every_numpy_load_refuses_pickles():
    for where, call in _calls(r"\bnp\.load\(|\bnumpy\.load\("):
        assert "allow_pickle=False" in call, f"{where}: {call}"


# ---------------------------------------------------------------------------------------------
# Damaged files of every format: decode never raises (seeded random byte flips and cuts).

KNOWN_STATUSES = {"ok", "not_an_image", "unsupported_format", "truncated", "too_large", "corrupt", "unreadable", "permission_denied"}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM"])
def test_randomly_damaged_files_never_crash_decode(tmp_path: Path, fmt: str):
    # Before the fix, damaged TIFF headers raised TypeError("Missing dimensions") out of decode.
    import io

    rng = np.random.default_rng(sum(map(ord, fmt)))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, format=fmt)
    data = buf.getvalue()
    path = tmp_path / "damaged.bin"
    statuses = set()
    for t in range(60):
        d = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            d[int(rng.integers(0, len(d)))] = int(rng.integers(0, 256))
        if t % 3 == 0:
            d = d[: int(rng.integers(1, len(d)))]
        path.write_bytes(bytes(d))
        result = decode(path)
        assert result.status in KNOWN_STATUSES
        assert (result.image is None) == (result.status != "ok") and (result.status == "ok" or result.error)
        statuses.add(result.status)
    assert statuses != {"ok"}


def test_tiff_with_a_damaged_directory_is_corrupt_not_a_crash(tmp_path: Path):
    # Found by the fuzzing above: Pillow raises TypeError("Missing dimensions") for this file.
    path = tmp_path / "damaged.tif"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[int.from_bytes(data[4:8], "little")] = 7  # the first directory now claims 7 entries
    path.write_bytes(bytes(data))
    result = decode(path)
    assert result.status == "corrupt" and result.error.startswith("The image data is damaged: TypeError")


def test_a_folder_link_back_to_its_parent_is_walked_once(tmp_path: Path):
    root = tmp_path / "images"
    draw_image(root / "a.png", color=(1, 2, 3))
    draw_image(root / "sub" / "b.png", color=(1, 2, 3))
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a cycle: sub/up/sub/up/...
    (root / "loop_dir").symlink_to(root / "loop_dir")  # a link to itself
    assert [(r.relpath, r.status) for r in discover(root)] == [("a.png", "ok"), ("sub/b.png", "ok")]


def test_paths_that_look_like_terminal_markup_are_printed_as_they_are(tmp_path: Path):
    # "[/]" and "[red]" are rich markup; a path holding them once crashed the CLI (MarkupError).
    root = tmp_path / "ph[" / "]otos [bold]"
    for i, color in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)]):
        draw_image(root / f"{i} [red].png", color=color, seed=i)
    out, dest = tmp_path / "o[" / "]ut [red]", tmp_path / "d[" / "]est"
    missing = tmp_path / "x[" / "]missing"
    assert _invoke(["run", str(missing), "--out", str(out), "--k", "2", *RUN]) == (
        2, f"Error: The images folder {missing} does not exist or is not a folder.")
    code, text = _invoke(["run", str(root), "--out", str(out), "--k", "2", *RUN])
    assert code == 0 and f"Results in {out}/ (assignments.csv, summary.json, report.html)" in text
    code, text = _invoke(["export", str(out), "--to", str(dest), "--mode", "move"])
    assert code == 2 and f"folders under {dest}:" in text and f"{dest}/cluster_00/" in text
    code, text = _invoke(["export", str(out), "--to", str(dest)])
    assert code == 0 and f"Copied 3 images into {dest}/" in text
