"""The clean checks: quality flags, near-duplicates, outliers, their columns, export options and `similar`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

import imgclust
from imgclust.clean.neardup import find_near_duplicates, groups_from_pairs, pixel_similarity
from imgclust.clean.outliers import outlier_scores
from imgclust.clean.quality import (
    FLAGS,
    N_STATS,
    STATS,
    Measurements,
    hash_bits,
    image_stats,
    quality_flags,
    thumbnails,
)
from imgclust.clean.stage import measure, near_duplicate_method, pick_kept, run_checks
from imgclust.cli import main
from imgclust.errors import InputError, ParameterError
from imgclust.features import get_extractor
from imgclust.features.extract import extract
from imgclust.io.discover import discover


def scene(seed: int, size: tuple[int, int] = (160, 120), family: int | None = None) -> Image.Image:
    """A colourful picture with sharp edges, different for every seed; pictures of one ``family``
    share their colours and most of their shapes (so their vectors are alike), not all."""
    colours = np.random.default_rng(1000 + (seed if family is None else family))
    seeded = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    c0, c1 = colours.integers(0, 256, 3), colours.integers(0, 256, 3)
    img = Image.fromarray((c0 * (1 - x) * (1 - y) + c1 * x * y + 60 * (x - y)).clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for i in range(12):
        rng = seeded if family is None or i >= 9 else colours
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        box = (x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2)))
        fill = tuple(int(v) for v in colours.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
    return img


def stats_of(img: Image.Image) -> np.ndarray:
    return image_stats(img)[None, :]


# --- quality flags ------------------------------------------------------------------------------

def test_a_sharp_colourful_picture_has_no_flag() -> None:
    assert quality_flags(np.stack([image_stats(scene(s)) for s in range(5)])) == [[]] * 5


@pytest.mark.parametrize(("flag", "make"), [
    ("blurry", lambda im: im.filter(ImageFilter.GaussianBlur(4))),
    ("dark", lambda im: ImageEnhance.Brightness(im).enhance(0.2)),
    ("bright", lambda im: Image.eval(im, lambda v: 255 - (255 - v) // 4)),
    ("low_information", lambda im: Image.new("RGB", im.size, (40, 120, 200))),
    ("grayscale", lambda im: im.convert("L").convert("RGB")),
    ("small", lambda im: im.resize((40, 30))),
    ("odd_aspect", lambda im: im.resize((400, 100))),
])
def test_each_planted_problem_gets_its_flag_and_only_it(flag: str, make) -> None:  # type: ignore[no-untyped-def]
    assert quality_flags(stats_of(make(scene(3)))) == [[flag]]


def test_flags_use_the_size_stored_in_the_file_not_the_drafted_size() -> None:
    img = scene(1, (100, 80))
    assert quality_flags(image_stats(img, (2000, 1600))[None]) == [[]]
    assert quality_flags(image_stats(img, (50, 40))[None]) == [["small"]]


def test_unknown_measurements_give_no_flag() -> None:
    assert quality_flags(np.full((1, N_STATS), np.nan, np.float32)) == [[]]


def test_stats_are_measured_while_decoding_and_kept_in_the_cache(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "images"
    folder.mkdir()
    for s in range(3):
        scene(s).save(folder / f"{s}.png")
    records = discover(folder)
    ex = extract(records, get_extractor("pixels"))
    assert ex.stats is not None and ex.stats.shape == (3, N_STATS) and not np.isnan(ex.stats).any()
    np.testing.assert_allclose(ex.stats[0], image_stats(scene(0)), rtol=1e-5)

    from imgclust.clean.stage import open_stats_cache

    cache = open_stats_cache(tmp_path / "cache", (32, 32))
    M, n_decoded = measure(records, ex.stats, draft_size=(32, 32), cache=cache)
    assert n_decoded == 0 and np.array_equal(M.rows(np.arange(3)), ex.stats)
    # Vectors from the cache mean nothing was decoded: the measurements come from the cache, no file is read.
    import imgclust.clean.stage as stage

    monkeypatch.setattr(stage, "decode", lambda *a, **k: pytest.fail("decoded a file a second time"))
    M2, n_decoded = measure(records, np.full_like(ex.stats, np.nan), draft_size=(32, 32),
                            cache=open_stats_cache(tmp_path / "cache", (32, 32)))
    assert n_decoded == 0 and np.array_equal(M.named, M2.named) and np.array_equal(M.thumbs, M2.thumbs)


def test_measurements_keep_thumbnails_in_a_byte_a_level_and_give_back_the_same_rows() -> None:
    rows = np.stack([image_stats(scene(s)) for s in range(3)])
    rows[1] = np.nan  # an image never measured
    M = Measurements.from_rows(rows)
    assert M.thumbs.dtype == np.uint8 and M.named.shape == (3, len(STATS))
    assert M.known.tolist() == [True, False, True]
    back = M.rows(np.arange(3))
    np.testing.assert_array_equal(back[[0, 2]], rows[[0, 2]])  # grey levels are whole numbers: nothing lost
    assert np.isnan(back[1]).all()
    assert quality_flags(M.named) == quality_flags(rows)
    np.testing.assert_array_equal(hash_bits(M.named[[0, 2]]), hash_bits(rows[[0, 2]]))


def test_stats_missing_everywhere_are_measured_by_decoding_once(tmp_path: Path) -> None:
    scene(0).save(tmp_path / "a.png")
    M, n_decoded = measure(discover(tmp_path), None, draft_size=None)
    assert n_decoded == 1 and quality_flags(M.named) == [[]] and M.known.all()


# --- near-duplicates ------------------------------------------------------------------------------

def test_groups_are_connected_components_of_pairs_above_the_threshold() -> None:
    sims = np.array([[0.95, 0.1], [0.95, 0.2], [0.91, 0.3], [0.91, 0.1], [0.5, 0.1]], np.float32)
    idx = np.array([[1, 4], [0, 4], [3, 0], [2, 0], [0, 1]])
    nd = groups_from_pairs(5, sims, idx, 0.9)
    assert nd.group.tolist() == [0, 0, 1, 1, -1] and nd.groups == [[0, 1], [2, 3]] and nd.n_extra == 2
    assert groups_from_pairs(5, sims, idx, 0.93).groups == [[0, 1]]


def test_near_duplicates_of_vectors_without_an_n_by_n_matrix() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    X[7] = X[3] + 0.01 * rng.normal(size=16)
    X[20] = X[3] + 0.01 * rng.normal(size=16)
    nd = find_near_duplicates(X, threshold=0.99)
    assert nd.groups == [[3, 7, 20]] and nd.method == "embedding"
    assert find_near_duplicates(X, method="off").n_groups == 0


def test_pixel_similarity_tells_a_copy_from_a_different_picture() -> None:
    base = scene(3, (320, 240))
    copies = [base.resize((200, 150)).crop((10, 8, 190, 142)),  # resized, cropped 10% on each side
              ImageEnhance.Brightness(base.crop((0, 0, 280, 216))).enhance(1.2),  # cropped 12% at one end
              base.resize((160, 120))]
    T = thumbnails(np.stack([image_stats(im) for im in [base, *copies, scene(9, (320, 240)), scene(4, (320, 240))]]))
    sim = pixel_similarity(np.repeat(T[:1], 5, axis=0), T[1:])
    assert np.all(sim[:3] > 0.8) and np.all(sim[3:] < 0.5), sim
    assert pixel_similarity(T[1:2], T[:1]) == pytest.approx(sim[0], abs=1e-5)  # either order


def test_a_different_picture_is_no_near_duplicate_however_alike_the_vectors() -> None:
    pictures = [scene(s, (96, 72)) for s in range(6)]
    pictures.append(pictures[0].resize((80, 60)).crop((4, 3, 76, 57)))  # a copy of picture 0
    X = np.ones((7, 8), np.float32)  # every vector alike (cosine 1): the pixels must decide
    res = run_checks(X, np.stack([image_stats(p) for p in pictures]), {"near_duplicates": "embedding"})
    assert res.near.groups == [[0, 6]]
    X[1:6] += np.eye(5, 8, dtype=np.float32) * 8  # cosines 0.6, below the candidate floor: never compared
    nd = find_near_duplicates(X, thumbs=thumbnails(np.stack([image_stats(p) for p in pictures])))
    assert nd.groups == [[0, 6]]


def test_perceptual_hash_survives_resizing_and_reencoding(tmp_path: Path) -> None:
    base = scene(7, (320, 240))
    base.resize((160, 120)).save(tmp_path / "copy.jpg", quality=40)
    copy = Image.open(tmp_path / "copy.jpg").convert("RGB")
    H = hash_bits(np.stack([image_stats(base), image_stats(copy), image_stats(scene(8, (320, 240)))]))
    hamming = (H[:, None, :] != H[None, :, :]).sum(axis=2)
    assert hamming[0, 1] <= 8 < hamming[0, 2]


def test_bad_near_duplicate_settings_are_refused() -> None:
    with pytest.raises(ParameterError, match="must be one of embedding, phash, off; got 'cnn'"):
        find_near_duplicates(np.eye(3), method="cnn")
    with pytest.raises(ParameterError, match=r"cosine in \(-1, 1\]; got 1.5"):
        find_near_duplicates(np.eye(3), threshold=1.5)


def test_auto_method_follows_the_features() -> None:
    assert near_duplicate_method("auto", "efficientnet-lite0") == "embedding"
    assert near_duplicate_method("auto", "timm:resnet50") == "embedding"
    assert near_duplicate_method("auto", "pixels") == "phash"
    assert near_duplicate_method("embedding", "pixels") == "embedding"


def test_flat_images_are_never_near_duplicates_of_each_other() -> None:
    flat = [image_stats(Image.new("RGB", (64, 64), c)) for c in ((10, 20, 30), (200, 10, 10), (5, 200, 90))]
    pictures = [image_stats(scene(s)) for s in range(4)]
    X = np.ones((7, 8), np.float32)  # every vector alike: only the flat-image rule keeps them apart
    X[3:] += np.eye(4, 8, dtype=np.float32) * 5
    res = run_checks(X, np.stack(flat + pictures), {"near_duplicates": "embedding"})
    assert all(res.near.group[:3] == -1)


@pytest.mark.parametrize(("rule", "kept"), [("largest", 1), ("sharpest", 0)])
def test_the_kept_image_of_a_group(rule: str, kept: int) -> None:
    rows = [{"path": "b.jpg", "width": "100", "height": "80", "sharpness": "0.9", "file_size": "10"},
            {"path": "a.jpg", "width": "200", "height": "160", "sharpness": "0.3", "file_size": "5"}]
    assert pick_kept(rows, rule) == kept
    with pytest.raises(ParameterError, match="largest or the sharpest"):
        pick_kept(rows, "newest")


# --- outliers -------------------------------------------------------------------------------------

def test_an_image_unlike_the_others_is_the_outlier() -> None:
    from imgclust.neighbors import knn, unit_rows

    rng = np.random.default_rng(1)
    # Two clusters of different spread (64 dimensions, like embeddings): the sparser one is ordinary,
    # only the lone point stands out.
    odd = np.zeros((1, 64))
    odd[0, ::2], odd[0, 1::2] = 3, -3
    X = np.concatenate([rng.normal(size=(40, 64)) + 2, rng.normal(size=(40, 64)) * 1.5 - 2, odd]).astype(np.float32)
    o = outlier_scores(*knn(unit_rows(X - X.mean(axis=0)), 10))
    assert np.flatnonzero(o.outlier).tolist() == [80] and o.score.argmax() == 80 and o.k == 10
    assert np.median(o.score) == pytest.approx(1.0, abs=0.2)
    with pytest.raises(ParameterError, match="at least 1; got 0"):
        outlier_scores(*knn(unit_rows(X), 3), k=0)


def test_the_outlier_rule_is_the_one_measured_for_the_network() -> None:
    """EfficientNet-Lite2 int8 scores unusual pictures lower than Lite0 does: it has its own measured rule
    (k, cut-off); settings given override it one by one; other features keep the general rule."""
    from imgclust.clean.outliers import DEFAULT_CUTOFF, DEFAULT_K, RULES, default_rule

    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    stats = np.stack([image_stats(scene(s, (48, 36))) for s in range(40)])
    lite2 = RULES[("efficientnet-lite2", "int8")]
    assert lite2 != (DEFAULT_K, DEFAULT_CUTOFF) and default_rule("efficientnet-lite2", "fp32") == (DEFAULT_K, DEFAULT_CUTOFF)

    def rule(settings: dict | None = None, **kw: object) -> tuple[int, float]:
        o = run_checks(X, stats, settings, **kw).outliers  # type: ignore[arg-type]
        return o.k, o.cutoff

    assert rule(features="efficientnet-lite2", precision="int8") == lite2
    assert rule(features="efficientnet-lite2") == rule(features="efficientnet-lite0", precision="fp32") == (10, 1.5)
    assert rule(features="pixels") == (DEFAULT_K, DEFAULT_CUTOFF)
    assert rule({"outlier_k": 5}, features="efficientnet-lite2", precision="int8") == (5, lite2[1])
    assert rule({"outlier_cutoff": 2.0}, features="efficientnet-lite2", precision="int8") == (lite2[0], 2.0)
    summary = run_checks(X, stats, features="efficientnet-lite2", precision="int8").summary()["outliers"]
    assert summary["k"] == lite2[0] and f"{lite2[0]}-th" in summary["rule"]
    with pytest.raises(ParameterError, match="at least 1; got 0"):
        run_checks(X, stats, {"outlier_k": 0})


def test_a_run_takes_the_outlier_rule_of_its_network_and_precision(monkeypatch, tmp_path: Path) -> None:
    """The run hands the checks the precision its network ran at (int8 may fall back to fp32)."""
    from imgclust.clean import outliers
    from imgclust.features.pixels import PixelsExtractor

    images = tmp_path / "images"
    images.mkdir()
    for s in range(12):
        scene(s, (64, 48)).save(images / f"p{s:02d}.png")
    monkeypatch.setattr(outliers, "RULES", {("pixels", "int8"): (3, 7.5), ("pixels", "fp32"): (4, 8.5)})
    run = imgclust.run(images, tmp_path / "a", features="pixels", k=2, cache=False)
    assert (run.summary["outliers"]["k"], run.summary["outliers"]["cutoff"]) == (4, 8.5)
    monkeypatch.setattr(PixelsExtractor, "precision", "int8", raising=False)
    run = imgclust.run(images, tmp_path / "b", features="pixels", k=2, cache=False)
    assert (run.summary["outliers"]["k"], run.summary["outliers"]["cutoff"]) == (3, 7.5)


def test_exact_copies_do_not_divide_by_zero() -> None:
    sims = np.ones((4, 2), np.float32)
    idx = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    o = outlier_scores(sims, idx, k=2)
    assert np.all(np.isfinite(o.score)) and o.n_outliers == 0


# --- a run: columns, duplicates.csv, summary, export ------------------------------------------------

@pytest.fixture(scope="module")
def messy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pixels run over 24 pictures of two families, a resized JPEG copy of one, a flat image, a
    blurred picture and a picture unlike all the others (mostly black: also low information)."""
    root = tmp_path_factory.mktemp("clean")
    images = root / "images"
    images.mkdir()
    for s in range(24):
        scene(s, (160, 120), family=s % 2).save(images / f"p{s:02d}.png")
    scene(0, (160, 120), family=0).resize((120, 90)).save(images / "p00 copy.jpg", quality=60)
    Image.new("RGB", (160, 120), (20, 90, 160)).save(images / "flat.png")
    scene(30, (160, 120), family=1).filter(ImageFilter.GaussianBlur(5)).save(images / "blurred.png")
    odd = Image.new("RGB", (160, 120))  # black, but for a small picture in a corner: unlike the rest as pixels
    odd.paste(scene(40, (40, 30)), (0, 0))
    odd.save(images / "odd.png")
    imgclust.run(images, root / "out", features="pixels", k=3, cache=root / "cache")
    return root


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def test_run_writes_the_clean_columns_duplicates_csv_and_counts(messy_run: Path) -> None:
    out = messy_run / "out"
    rows = _rows(out / "assignments.csv")
    assert rows["flat.png"]["quality"] == "low_information" and rows["blurred.png"]["quality"] == "blurry"
    assert rows["p05.png"]["quality"] == ""
    assert rows["p00.png"]["near_duplicate_group"] == rows["p00 copy.jpg"]["near_duplicate_group"] != ""
    assert all(r["near_duplicate_group"] == "" for p, r in rows.items() if p not in ("p00.png", "p00 copy.jpg"))
    cutoff = json.loads((out / "summary.json").read_text())["outliers"]["cutoff"]
    assert all((float(r["outlier_score"]) > cutoff) == (r["outlier"] == "1") for r in rows.values())
    assert all(r["outlier"] in ("0", "1") for r in rows.values())
    dups = list(_rows(out / "duplicates.csv").values())
    assert [(d["path"], d["kept"]) for d in dups] == [("p00 copy.jpg", "0"), ("p00.png", "1")]  # the larger kept
    s = json.loads((out / "summary.json").read_text())
    assert s["quality_counts"] == {f: {"low_information": 2, "blurry": 1}.get(f, 0) for f in FLAGS}
    assert s["near_duplicates"]["method"] == "phash" and s["near_duplicates"]["n_groups"] == 1
    assert s["outliers"]["n_outliers"] == sum(r["outlier"] == "1" for r in rows.values()) and "clean" in s["timings"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="near-duplicates"' in html and 'id="outliers"' in html and 'id="quality"' in html


def test_export_one_per_duplicate_group_and_outliers_apart(messy_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(messy_run / "out", out)
    rows = list(_rows(out / "assignments.csv").values())
    for r in rows:  # mark one image as an outlier, whatever the run found
        r["outlier"] = "1" if r["path"] == "odd.png" else "0"
    with open(out / "assignments.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dest = tmp_path / "sorted"
    res = CliRunner().invoke(main, ["export", str(out), "--to", str(dest), "--one-per-duplicate-group",
                                    "--outliers-to", "odd ones"])
    assert res.exit_code == 0, res.output
    assert "the largest one (most pixels)" in res.output
    exported = {p.relative_to(dest).as_posix() for p in dest.glob("*/*") if p.is_file()}
    names = {p.split("/")[-1] for p in exported}
    assert "p00.png" in names and "p00 copy.jpg" not in names and len(exported) == 27
    assert [p for p in exported if p.startswith("odd ones/")] == ["odd ones/odd.png"]


def test_export_sharpest_of_each_group(messy_run: Path) -> None:
    from imgclust.outputs.export import plan_export

    plan = plan_export(messy_run / "out", messy_run / "elsewhere", one_per_duplicate_group="sharpest")
    sources = {a.source.name for a in plan.actions}
    dups = list(_rows(messy_run / "out" / "duplicates.csv").values())
    sharpest = max(dups, key=lambda d: float(d["sharpness"]))["path"]
    assert sharpest in sources and len(sources & {d["path"] for d in dups}) == 1
    with pytest.raises(ParameterError, match="plain folder name"):
        plan_export(messy_run / "out", messy_run / "elsewhere", outliers_to="../up")
    with pytest.raises(ParameterError, match="is the name of a cluster's folder"):
        plan_export(messy_run / "out", messy_run / "elsewhere", outliers_to=plan.folders[0])


# --- similar -------------------------------------------------------------------------------------

def test_similar_python_finds_the_copy_first(messy_run: Path, tmp_path: Path) -> None:
    query = tmp_path / "query.jpg"
    scene(0, (160, 120), family=0).resize((100, 75)).save(query, quality=70)
    (res,) = imgclust.similar(messy_run / "out", [query], top=3, cache=messy_run / "cache")
    assert res.query == str(query) and len(res.matches) == 3
    assert {m.path for m in res.matches[:2]} == {"p00.png", "p00 copy.jpg"}
    assert res.matches[0].similarity >= res.matches[1].similarity >= res.matches[2].similarity
    assert isinstance(res.matches[0].cluster, int)


def test_similar_cli_json(messy_run: Path) -> None:
    res = CliRunner().invoke(main, ["similar", str(messy_run / "out"), str(messy_run / "images" / "p03.png"),
                                    "--top", "2", "--json", "--cache", str(messy_run / "cache")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data[0]["matches"][0] == {"path": "p03.png", "cluster": data[0]["matches"][0]["cluster"], "similarity": 1.0}
    assert len(data[0]["matches"]) == 2


def test_similar_cli_table(messy_run: Path) -> None:
    res = CliRunner().invoke(main, ["similar", str(messy_run / "out"), str(messy_run / "images" / "p03.png"),
                                    "--cache", str(messy_run / "cache")])
    assert res.exit_code == 0 and "Most like" in res.output and "p03.png" in res.output


def test_similar_bad_queries_exit_2_with_a_clear_message(messy_run: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    out = str(messy_run / "out")
    res = CliRunner().invoke(main, ["similar", out, str(tmp_path / "gone.jpg")])
    assert res.exit_code == 2 and f"Error: The query image {tmp_path / 'gone.jpg'} does not exist." in res.output
    res = CliRunner().invoke(main, ["similar", out, str(text)])
    assert res.exit_code == 2
    assert (f"Error: The query {text} cannot be used: not an image. The file's content is not an image format "
            "imgclust reads (JPEG, PNG, GIF, BMP, WebP and TIFF).") in res.output
    res = CliRunner().invoke(main, ["similar", out, str(tmp_path)])
    assert res.exit_code == 2 and "is not a file" in res.output
    res = CliRunner().invoke(main, ["similar", str(tmp_path), str(messy_run / "images" / "p03.png")])
    assert res.exit_code == 2 and "not the output folder of an imgclust run" in res.output
    with pytest.raises(InputError, match="does not exist"):
        imgclust.similar(out, [tmp_path / "gone.jpg"])
    with pytest.raises(ParameterError, match="top must be a whole number of at least 1; got 0"):
        imgclust.similar(out, [text], top=0)


def test_stats_columns_are_documented() -> None:
    assert STATS[:2] == ("width", "height") and N_STATS == len(STATS) + 16 * 16


def test_run_cli_near_duplicate_options_reach_the_run(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for s in range(6):
        scene(s).save(images / f"{s}.png")
    res = CliRunner().invoke(main, ["run", str(images), "--out", str(tmp_path / "out"), "--features", "pixels",
                                    "--k", "2", "--no-cache", "-q", "--near-duplicates", "embedding",
                                    "--near-duplicate-threshold", "0.99"])
    assert res.exit_code == 0, res.output
    assert "Clean: 0 near-duplicate groups" in res.output
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["near_duplicates"]["method"] == "embedding" and s["near_duplicates"]["threshold"] == 0.99
    assert s["config"]["clean_options"] == {"near_duplicates": "embedding", "near_duplicate_threshold": 0.99}
    res = CliRunner().invoke(main, ["run", str(images), "--out", str(tmp_path / "out2"), "--features", "pixels",
                                    "--no-cache", "-q", "--near-duplicate-threshold", "2"])
    assert res.exit_code == 2 and "A near-duplicate threshold is a cosine in (-1, 1]; got 2.0." in res.output
    assert not (tmp_path / "out2").exists()  # refused before any work


@pytest.mark.parametrize("method", ["embedding", "phash"])
def test_a_large_run_shares_one_neighbour_search_and_finds_the_same(monkeypatch, method: str) -> None:
    """Above the exact size the checks rank one shared candidate search; on data where that search is
    complete (an exact one), every check must come out as with its own search."""
    import imgclust.neighbors as nb
    from imgclust.clean import stage

    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 24)).astype(np.float32)
    X[[7, 20]] = X[3] + 0.01 * rng.normal(size=(2, 24))
    X[50] += 8.0  # one odd vector
    stats = np.stack([image_stats(scene(s, (64, 48))) for s in range(120)])
    stats[[7, 20]] = stats[3]  # the copies are copies in pixels too
    alone = run_checks(X, stats, {"near_duplicates": method})
    calls = []
    real_knn = nb.knn
    monkeypatch.setattr(nb, "knn", lambda *a, **k: calls.append(a[1]) or real_knn(*a, **k))
    monkeypatch.setattr(nb, "EXACT_BELOW", 100)
    shared = stage.run_checks(X, stats, {"near_duplicates": method})
    assert len(calls) == 1  # one search for every check
    assert np.array_equal(shared.near.group, alone.near.group) and [3, 7, 20] in shared.near.groups
    np.testing.assert_allclose(shared.outliers.score, alone.outliers.score, rtol=1e-5)
    assert np.array_equal(shared.outliers.outlier, alone.outliers.outlier)


def test_one_centred_search_gives_the_cosines_of_the_vectors_too() -> None:
    from imgclust.clean.stage import centred_neighbours
    from imgclust.neighbors import knn, unit_rows

    rng = np.random.default_rng(5)
    X = np.abs(rng.normal(size=(60, 12))).astype(np.float32) + 0.5  # all positive, like a network's
    searched = centred_neighbours(X, 8)
    expected = knn(unit_rows(X - X.mean(axis=0)), 8)
    np.testing.assert_array_equal(searched.idx, expected[1])
    sims, idx = searched.raw_cosines(3)
    Z = unit_rows(X)
    np.testing.assert_allclose(sims, np.einsum("nd,nmd->nm", Z, Z[idx]), atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-7)  # most similar first
    assert set(idx[0].tolist()) <= set(searched.idx[0].tolist())  # from the same search


def test_large_run_hashes_ranked_from_64_bit_words_as_from_their_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large run ranks each image's candidates by the bits their hashes differ in, from one word a hash
    (8 bytes, not 64 floats), a chunk of rows at a time: the same neighbours and cosines as the cosine of
    the +-1 bit vectors."""
    import imgclust.clean.stage as stage
    from imgclust.clean.quality import hash_words
    from imgclust.neighbors import rerank, unit_rows

    monkeypatch.setattr(stage, "_ROW_CHUNK", 7)  # several chunks
    rng = np.random.default_rng(2)
    n = 40
    stats = np.zeros((n, N_STATS), np.float32)
    stats[:, STATS.index("phash0"):STATS.index("phash3") + 1] = rng.integers(0, 1 << 16, (n, 4))
    stats[5] = stats[9]  # a copy: differs in no bit
    stats[11, STATS.index("phash3")] = float(int(stats[12, STATS.index("phash3")]) ^ 1)  # one bit apart
    stats[11, STATS.index("phash0"):STATS.index("phash2") + 1] = stats[12, STATS.index("phash0"):STATS.index("phash2") + 1]
    stats[[3, 30]] = np.nan  # unknown hashes
    candidates = rng.integers(-1, n, (n, 12))
    known = np.flatnonzero(~np.isnan(stats).any(axis=1))
    pos = np.full(n, -1, np.int64)
    pos[known] = np.arange(len(known))
    words = hash_words(stats[known])
    assert words.dtype == np.uint64 and int(words[pos[5]]) == int(words[pos[9]])
    sims, idx = stage._hash_rerank(words, candidates, known, pos, 6)
    cand = candidates[known]
    expected = rerank(unit_rows(hash_bits(stats[known])), np.where(cand >= 0, pos[np.maximum(cand, 0)], -1), 6)
    np.testing.assert_array_equal(idx, expected[1])
    np.testing.assert_array_equal(sims, expected[0])
