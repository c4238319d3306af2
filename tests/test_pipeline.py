import csv
import json
from pathlib import Path

import numpy as np
import pytest

import imgclust
from conftest import draw_image
from imgclust.errors import InputError, OutputError


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "assignments.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("features", ["pixels", "efficientnet-lite0"])
def test_end_to_end_output_contract(image_folder: Path, tmp_path: Path, features: str):
    (image_folder / "red" / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "out"
    r = imgclust.run(image_folder, out, features=features, k=3, seed=0, cache=tmp_path / "cache")
    rows = read_rows(out)
    assert list(rows[0].keys()) == ["path", "cluster", "distance", "status", "error", "duplicate_of",
                                    "near_duplicate_group", "outlier_score", "outlier", "quality", "label"]
    assert len(rows) == 19
    broken = next(row for row in rows if row["path"] == "red/broken.jpg")
    assert broken["cluster"] == "" and broken["status"] == "not_an_image" and broken["error"]
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(ok) == 18 and all(0 <= int(row["cluster"]) < 3 and float(row["distance"]) >= 0 for row in ok)
    s = json.loads((out / "summary.json").read_text())
    for key in ("n_images", "n_ok", "n_failed", "k", "features", "seed", "timings", "metrics"):
        assert key in s
    assert (s["n_images"], s["n_ok"], s["n_failed"], s["k"], s["features"]) == (19, 18, 1, 3, features)
    assert set(s["timings"]) >= {"discover", "extract", "cluster", "evaluate", "write"}
    assert s["metrics"]["accuracy_hungarian"] == 1.0 and s["metrics"]["accuracy_majority"] == 1.0
    assert set(s["metrics"]) == {"accuracy_hungarian", "accuracy_majority", "nmi", "ari"}
    conf = (out / "confusion.csv").read_text().splitlines()
    assert conf[0] == "cluster,blue,green,red,matched_label" and len(conf) == 4
    assert r.clustering.k == 3 and r.features.X.shape[0] == 18


def test_second_run_reads_the_cache(image_folder: Path, tmp_path: Path):
    first = imgclust.run(image_folder, tmp_path / "o1", features="pixels", k=3, cache=tmp_path / "c")
    second = imgclust.run(image_folder, tmp_path / "o2", features="pixels", k=3, cache=tmp_path / "c")
    assert first.summary["n_vectors_computed"] == 18 and first.summary["n_vectors_cached"] == 0
    assert second.summary["n_vectors_computed"] == 0 and second.summary["n_vectors_cached"] == 18
    np.testing.assert_array_equal(first.labels, second.labels)


def test_labels_never_influence_the_clustering(image_folder: Path, tmp_path: Path):
    a = imgclust.run(image_folder, tmp_path / "a", features="pixels", k=3, labels="folder", cache=False)
    b = imgclust.run(image_folder, tmp_path / "b", features="pixels", k=3, labels="none", cache=False)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert "metrics" not in b.summary and "label" not in read_rows(tmp_path / "b")[0]
    assert not (tmp_path / "b" / "confusion.csv").exists()


def test_output_inside_input_is_refused_and_nothing_written(image_folder: Path):
    with pytest.raises(OutputError, match="inside the images folder"):
        imgclust.run(image_folder, image_folder / "out", features="pixels", k=2)
    assert not (image_folder / "out").exists()


def test_foreign_non_empty_output_folder_is_refused(image_folder: Path, tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    with pytest.raises(OutputError, match="not empty"):
        imgclust.run(image_folder, out, features="pixels", k=2)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]


def test_no_usable_image_is_a_clear_error(tmp_path: Path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_text("nope")
    (tmp_path / "in" / "b.png").write_bytes(b"")
    with pytest.raises(InputError, match="None of the 2 files"):
        imgclust.run(tmp_path / "in", tmp_path / "out", features="pixels", k=1)


def test_empty_folder_is_a_clear_error(tmp_path: Path):
    (tmp_path / "in").mkdir()
    with pytest.raises(InputError, match=r"Found 0 images under .*Supported extensions: \.jpg"):
        imgclust.run(tmp_path / "in", tmp_path / "out", features="pixels", k=2)


def test_stages_as_functions(image_folder: Path):
    recs = imgclust.discover(image_folder)
    ex = imgclust.extract(recs, imgclust.get_extractor("pixels", size=8))
    assert ex.X.shape == (18, 192) and ex.X.dtype == np.float32 and 0 <= ex.X.min() and ex.X.max() <= 1
    res = imgclust.cluster(ex.X, 3, seed=0)
    scores = imgclust.evaluate([r.relpath.split("/")[0] for r in ex.usable], res.labels)
    assert scores["accuracy_hungarian"] == 1.0


def test_prefix_labels_kaggle_style(tmp_path: Path):
    for i in range(4):
        draw_image(tmp_path / "in" / f"cat.{i}.jpg", color=(250, 250, 20), seed=i)
        draw_image(tmp_path / "in" / f"dog.{i}.jpg", color=(20, 20, 250), seed=i, shape="circle")
    r = imgclust.run(tmp_path / "in", tmp_path / "out", features="pixels", k=2, labels="prefix", cache=False)
    assert r.summary["labels_mode"] == "prefix" and r.metrics["accuracy_hungarian"] == 1.0


def test_public_api_is_complete_and_lazy():
    import subprocess
    import sys

    import imgclust.cluster.kmeans  # noqa: F401 - importing a subpackage must not shadow the function
    import imgclust.pipeline  # noqa: F401

    assert set(imgclust.__all__) - {"__version__", "ClusterResult", "cluster", "list_clusterers"} == set(imgclust._API)
    for name in imgclust.__all__:
        assert getattr(imgclust, name) is not None, name
    assert callable(imgclust.cluster) and imgclust.cluster(np.eye(4), 2).k == 2
    # The CLI's start-up does not import scikit-learn or the pipeline until a command needs them.
    code = "import sys, imgclust.cli; print('sklearn' in sys.modules, 'imgclust.pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
