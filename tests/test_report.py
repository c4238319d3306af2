"""The HTML report: contents, escaping, bounded size, suggested names, rebuild."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import CLASSES, draw_image
from imgclust.cli import main
from imgclust.errors import ParameterError
from imgclust.features import get_extractor
from imgclust.outputs.report import (
    MAX_THUMBS,
    REPORT,
    REPORT_DATA,
    imagenet_class_names,
    map_2d,
    name_clusters,
    pca_2d,
    pick_thumbnails,
    save_report_data,
    suggest_names,
    thumbnails_per_cluster,
    write_report,
)
from imgclust.pipeline import run

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
HOSTILE_LABEL = "<b>bold"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pixels run over three drawn classes, a hostile file name, a hostile label and a broken file."""
    root = tmp_path_factory.mktemp("report") / "images"
    for c, (name, (color, shape)) in enumerate(CLASSES.items()):
        folder = HOSTILE_LABEL if name == "blue" else name
        for i in range(6):
            draw_image(root / folder / f"{name}_{i}.png", color=color, shape=shape, seed=10 * c + i)
    draw_image(root / "red" / HOSTILE, color=CLASSES["red"][0], shape="square", seed=99)
    (root / "red" / "broken.jpg").write_bytes(b"text, not a JPEG")
    out = root.parent / "out"
    run(root, out, features="pixels", k=3, cache=False)
    return out


def _html(out: Path) -> str:
    return (out / REPORT).read_text(encoding="utf-8")


def test_run_writes_a_report_with_one_section_per_cluster(finished_run: Path) -> None:
    html = _html(finished_run)
    assert html.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'<section class="cluster" id="cluster-\d+">', html)) == 3
    assert "Against the labels" in html and "Hungarian" in html
    clusters_part = html.split('<section id="near-duplicates">')[0]
    assert clusters_part.count("data:image/jpeg;base64,") == 19  # every clustered image once (3 small clusters)
    assert "data:image/png;base64," in html  # map, centroid and confusion plots embedded
    assert "broken.jpg" in html and "not_an_image" in html  # failed files listed with the reason
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    summary = json.loads((finished_run / "summary.json").read_text())
    assert "cluster_names" not in summary  # pixels have no ImageNet head: no suggested names
    with np.load(finished_run / REPORT_DATA, allow_pickle=False) as data:
        assert data["coords"].shape == (19, 2)
        assert data["centers"].shape == (3, 32 * 32 * 3)


def test_file_names_and_labels_are_escaped(finished_run: Path) -> None:
    html = _html(finished_run)
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html
    assert "<img src=x" not in html and "onerror=alert" not in html.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "&lt;b&gt;bold" in html and "<b>bold" not in html


def test_thumbnail_picks_nearest_then_farthest() -> None:
    d = np.array([5.0, 0.1, 9.0, 0.3, 7.0, 0.2, 8.0])
    near, far = pick_thumbnails(d, 3, 2)
    assert near.tolist() == [1, 5, 3]
    assert far.tolist() == [2, 6]
    near, far = pick_thumbnails(d[:2], 3, 2)  # small cluster: all shown once, no outliers
    assert sorted(near.tolist()) == [0, 1] and far.tolist() == []


@pytest.mark.parametrize("k", [1, 2, 10, 40, 200, 400])
def test_thumbnails_are_bounded_whatever_k(k: int) -> None:
    near, far = thumbnails_per_cluster(k)
    assert near >= 2 and far >= 1
    assert near + far <= 30
    assert k * (near + far) <= MAX_THUMBS


def _synthetic_run(out: Path, images: Path, n: int, k: int, n_files: int, *, with_labels: bool = True) -> None:
    """An OUT_DIR for n images in k clusters, pointing at n_files drawn noise JPEGs (JPEG's worst case)."""
    rng = np.random.default_rng(0)
    for i in range(n_files):
        noise = rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8)
        Image.fromarray(noise).save(images / f"{i}.jpg", quality=95)
    labels = np.arange(n) % k
    out.mkdir()
    with open(out / "assignments.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "cluster", "distance", "status", "error"] + (["label"] if with_labels else []))
        for i in range(n):
            w.writerow([f"{i % n_files}.jpg", labels[i], rng.random(), "ok", ""] + ([f"c{i % 10}"] if with_labels else []))
    summary = {"images_dir": str(images), "n_images": n, "n_ok": n, "n_failed": 0, "statuses": {"ok": n}, "k": k,
               "features": "pixels", "method": "kmeans", "seed": 0, "cluster_sizes": np.bincount(labels).tolist()}
    (out / "summary.json").write_text(json.dumps(summary))
    X = rng.normal(size=(n, 8)).astype(np.float32)
    save_report_data(out, X, labels)


def test_report_for_10000_images_stays_well_under_20_mb(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    _synthetic_run(tmp_path / "out", images, n=10_000, k=40, n_files=100, with_labels=False)
    html = (write_report(tmp_path / "out")).read_text(encoding="utf-8")
    n_thumbs = html.count("data:image/jpeg;base64,")
    assert n_thumbs == 40 * sum(thumbnails_per_cluster(40)) <= MAX_THUMBS
    size_mb = len(html.encode()) / 1e6
    assert size_mb < 12, f"{size_mb:.1f} MB for 10,000 noise images"  # noise is JPEG's worst case


def test_imagenet_class_names_are_the_standard_1000() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[207], names[281], names[285], names[999]) == (
        "tench", "golden retriever", "tabby", "Egyptian cat", "toilet tissue")
    text = (Path(__file__).parents[1] / "src/imgclust/data/imagenet_classes.txt").read_text().splitlines()
    wnids = [line.split()[0] for line in text]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000  # ILSVRC-2012 indices are the sorted WordNet ids
    assert text[281] == "n02123045 tabby, tabby cat"


def test_names_from_logits() -> None:
    names = [f"class{i}" for i in range(6)]
    top1 = [0] * 4 + [1] * 3 + [2, 3, 4] + [5] * 9 + [4]
    labels = np.array([0] * 10 + [1] * 10)
    logits = np.eye(6)[top1] + np.random.default_rng(0).normal(0, 0.01, (20, 6))
    got = name_clusters(logits, labels, 3, names)
    assert got[0].name == "class0 / class1" and got[0].classes == (("class0", 0.4), ("class1", 0.3))
    assert got[0].share == pytest.approx(0.7)
    assert str(got[0]) == "class0 / class1 (70%)"
    assert str(got[1]) == "class5 (90%)"
    assert 2 not in got  # empty cluster: no name
    with pytest.raises(ParameterError):
        name_clusters(logits[:, :5], labels, 2, names)


def test_suggest_names_for_summary() -> None:
    class FakeImagenet:
        def imagenet_logits(self, X: np.ndarray) -> np.ndarray:
            out = np.zeros((len(X), 1000), dtype=np.float32)
            out[:, 281] = X[:, 0]
            out[:, 207] = 1 - X[:, 0]
            return out

    X = np.array([[1.0], [1.0], [0.0], [0.0]], dtype=np.float32)
    got = suggest_names(FakeImagenet(), X, np.array([0, 0, 1, 1]), 2)  # type: ignore[arg-type]
    assert got == {"cluster_names": {"0": "tabby", "1": "golden retriever"},
                   "cluster_name_shares": {"0": 1.0, "1": 1.0}}
    assert suggest_names(get_extractor("pixels", size=4), X, np.array([0, 0, 1, 1]), 2) == {}


def test_map_2d() -> None:
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    assert map_2d(X).shape == (40, 2)
    assert map_2d(X[:2]).shape == (2, 2)  # too few to project: still a map
    with pytest.raises(ParameterError, match="pca, tsne, umap"):
        map_2d(X, "mds")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_map_2d_other_methods(method: str) -> None:
    if method == "umap":
        pytest.importorskip("umap", reason="umap-learn is not installed")
    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    assert map_2d(X, method).shape == (60, 2)


def test_imgclust_report_rebuilds_from_out_dir(finished_run: Path, tmp_path: Path) -> None:
    (finished_run / REPORT).unlink()
    res = CliRunner().invoke(main, ["report", str(finished_run)])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output
    assert len(re.findall(r'<section class="cluster"', _html(finished_run))) == 3

    # Without report-data.npz the vectors are loaded again and the map comes back.
    (finished_run / REPORT_DATA).unlink()
    res = CliRunner().invoke(main, ["report", str(finished_run), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert (finished_run / REPORT_DATA).is_file()
    assert "Map of all images (PCA" in _html(finished_run)

    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert "holds no summary.json" in res.output


def test_missing_image_shows_a_placeholder(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    _synthetic_run(tmp_path / "out", images, n=6, k=2, n_files=3)
    (images / "0.jpg").unlink()
    html = write_report(tmp_path / "out").read_text(encoding="utf-8")
    assert html.count('<div class="missing">not found</div>') == 2  # rows 0 and 3 point at 0.jpg
    assert html.count("data:image/jpeg;base64,") == 4


@pytest.mark.parametrize("shape", [(300, 40), (60, 500), (5, 3), (3, 2)])
def test_pca_map_is_scikit_learns_projection_up_to_sign(shape: tuple[int, int]) -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    n, d = shape
    # Two strong directions with distinct variances, plus noise, off the origin.
    X = (rng.normal(size=(n, 2)) * [5.0, 2.0]) @ rng.normal(size=(2, d)) + rng.normal(size=(n, d)) * 0.3 + 7.0
    ours = pca_2d(X.astype(np.float32), seed=3)
    ref = PCA(n_components=2, svd_solver="full").fit_transform(X)
    for axis in range(2):
        assert abs(np.corrcoef(ours[:, axis], ref[:, axis])[0, 1]) > 0.9999
        np.testing.assert_allclose(np.abs(ours[:, axis]), np.abs(ref[:, axis]), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(pca_2d(X.astype(np.float32), seed=3), ours)  # deterministic


def test_figures_are_drawn_once_per_distinct_input(finished_run: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import imgclust.outputs.plots as plots

    figures = tmp_path / "figures"
    first = write_report(finished_run, figure_cache=figures).read_text(encoding="utf-8")
    pngs = sorted(figures.glob("*.png"))
    assert len(pngs) == 3  # the map, the centres and the confusion heatmap
    for name in ("cluster_map_figure", "centroid_figure", "confusion_figure"):
        monkeypatch.setattr(plots, name, lambda *a, **k: pytest.fail("drew a figure that was in the cache"))
    assert write_report(finished_run, figure_cache=figures).read_text(encoding="utf-8") == first
    monkeypatch.undo()
    pngs[0].write_bytes(b"damaged")  # a damaged file is drawn again and replaced
    assert write_report(finished_run, figure_cache=figures).read_text(encoding="utf-8") == first
    assert pngs[0].read_bytes().startswith(b"\x89PNG")
    assert write_report(finished_run).read_text(encoding="utf-8") == first  # no cache: the same page
