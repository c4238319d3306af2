"""Saved models (OUT_DIR/model) and `imgclust assign`."""

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import imgclust
from conftest import CLASSES, draw_image, shared_dataset
from imgclust.cli import main
from imgclust.cluster import ClusterResult, cluster
from imgclust.config import RunConfig
from imgclust.errors import InputError, OutputError, ParameterError
from imgclust.features import get_extractor
from imgclust.model import apply_transform, fit_thresholds, load_model, save_model


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def fitted(image_folder: Path, tmp_path: Path) -> imgclust.RunResult:
    return imgclust.run(image_folder, tmp_path / "run", features="pixels", k=3, method="kmeans", seed=0, cache=False)


def test_every_run_writes_a_model_of_plain_data(fitted: imgclust.RunResult):
    model_dir = fitted.out_dir / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["centers.npz", "model.json"]
    doc = json.loads((model_dir / "model.json").read_text())
    assert doc["features"] == "pixels" and doc["k"] == 3 and doc["method"] == "kmeans"
    assert doc["imgclust_version"] == imgclust.__version__
    assert doc["extractor"] == get_extractor("pixels").describe()
    assert doc["extractor"]["preprocessing"]["size"] == 32
    assert [c["size"] for c in doc["clusters"]] == fitted.summary["cluster_sizes"]
    # No pickle: every member of the .npz is a plain numeric .npy that loads with allow_pickle=False.
    with np.load(model_dir / "centers.npz", allow_pickle=False) as npz:
        assert npz.files == ["centers"]
        assert npz["centers"].dtype == np.float32 and npz["centers"].shape == (3, 3072)
        np.testing.assert_array_equal(npz["centers"], fitted.clustering.centers)
    with zipfile.ZipFile(model_dir / "centers.npz") as zf:
        assert all(name.endswith(".npy") for name in zf.namelist())
    expected = fit_thresholds(fitted.labels, fitted.clustering.distances, 3)
    np.testing.assert_allclose([c["distance_p95"] for c in doc["clusters"]], expected, rtol=1e-6)


def test_assigning_the_fitted_images_gives_the_fitted_clusters(fitted: imgclust.RunResult, image_folder: Path,
                                                               tmp_path: Path):
    (image_folder / "red" / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "assigned"
    a = imgclust.assign(fitted.out_dir / "model", image_folder, out, cache=False)
    np.testing.assert_array_equal(a.labels, fitted.labels)
    np.testing.assert_allclose(a.assignment.distances, fitted.clustering.distances, rtol=1e-6)
    rows = read_rows(out / "assignments.csv")
    assert list(rows[0]) == ["path", "cluster", "distance", "status", "error", "duplicate_of", "outlier", "label"]
    ok = [r for r in rows if r["status"] == "ok"]
    broken = next(r for r in rows if r["path"] == "red/broken.jpg")
    assert broken["cluster"] == "" and broken["outlier"] == "" and broken["status"] == "not_an_image"
    # The fit-time 95th percentile flags at most the farthest member of each 6-image cluster.
    assert 1 <= sum(r["outlier"] == "True" for r in ok) <= 3
    s = json.loads((out / "summary.json").read_text())
    assert (s["n_images"], s["n_ok"], s["n_failed"], s["k"]) == (19, 18, 1, 3)
    assert s["n_outliers"] == sum(r["outlier"] == "True" for r in ok) and s["metrics"]["accuracy_hungarian"] == 1.0
    assert (out / "confusion.csv").exists()


def test_new_images_go_to_their_class_cluster_and_odd_ones_are_outliers(fitted: imgclust.RunResult, tmp_path: Path):
    new = tmp_path / "new"
    for c, (name, (color, shape)) in enumerate(CLASSES.items()):
        draw_image(new / f"{name}_new.png", color=color, shape=shape, seed=100 + c, size=(70, 50))
    draw_image(new / "odd.png", color=(255, 255, 0), shape="circle", seed=7, size=(70, 50))
    a = imgclust.assign(fitted.out_dir, new, tmp_path / "o", labels="none", cache=False)  # a run folder works too
    by_path = {r["path"]: r for r in read_rows(tmp_path / "o" / "assignments.csv")}
    fitted_cluster = {p.split("/")[0]: c for p, c in zip((r.relpath for r in fitted.features.usable),
                                                         fitted.labels, strict=True)}
    for name in CLASSES:
        assert int(by_path[f"{name}_new.png"]["cluster"]) == fitted_cluster[name]
    assert by_path["odd.png"]["outlier"] == "True"
    assert "metrics" not in a.summary


def test_transform_recorded_by_a_clusterer_is_saved_and_replayed(tmp_path: Path):
    rng = np.random.default_rng(0)
    # 12 features: the vectors of the extractor saved with the model (pixels, size 2), as a loaded model checks
    X = np.r_[rng.normal(0, 1, (20, 12)), rng.normal(4, 1, (20, 12))].astype(np.float32)
    steps = [{"op": "l2_normalize"}, {"op": "subtract", "vector": rng.normal(size=12).tolist()},
             {"op": "scale", "vector": np.full(12, 2.0)}, {"op": "project", "matrix": rng.normal(size=(12, 3))}]
    fit = cluster(apply_transform(X, steps), 2, method="kmeans", seed=0)
    result = ClusterResult(fit.labels, fit.centers, fit.distances, fit.inertia, 2, 0, "kmeans",
                           info={"transform": steps})
    save_model(tmp_path / "m", get_extractor("pixels", size=2), RunConfig(features="pixels"), result,
               {"cluster_names": {"0": "left", "1": "right"}})
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert [s["op"] for s in doc["transform"]] == ["l2_normalize", "subtract", "scale", "project"]
    assert doc["transform"][3]["matrix"] == {"npz": "transform_3_matrix", "shape": [12, 3]}
    assert doc["clusters"][0]["name"] == "left"
    model = load_model(tmp_path / "m")
    assert model.cluster_names == {"0": "left", "1": "right"}
    np.testing.assert_array_equal(model.assign_vectors(X).labels, fit.labels)


def test_unknown_transform_step_is_refused_at_save(tmp_path: Path):
    fit = cluster(np.eye(4, dtype=np.float32), 2, method="kmeans", seed=0)
    result = ClusterResult(fit.labels, fit.centers, fit.distances, fit.inertia, 2, 0, "other",
                           info={"transform": [{"op": "umap"}]})
    with pytest.raises(ValueError, match="'umap' that saved models cannot replay"):
        save_model(tmp_path / "m", get_extractor("pixels", size=2), RunConfig(), result, {})


def test_model_from_different_preprocessing_is_refused(fitted: imgclust.RunResult, image_folder: Path,
                                                       tmp_path: Path):
    path = fitted.out_dir / "model" / "model.json"
    doc = json.loads(path.read_text())
    doc["extractor"]["preprocessing"]["filter"] = "bicubic"
    doc["extractor"]["cache_id"] = "pixels-0000000000000000"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"filter: 'bicubic' vs 'bilinear'.*fit a new model here with imgclust run"):
        imgclust.assign(fitted.out_dir / "model", image_folder, tmp_path / "o", cache=False)
    assert not (tmp_path / "o").exists()


def test_model_with_unknown_extractor_is_refused_by_the_cli(fitted: imgclust.RunResult, image_folder: Path,
                                                            tmp_path: Path):
    path = fitted.out_dir / "model" / "model.json"
    doc = json.loads(path.read_text())
    doc["features"] = "sift"
    path.write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["assign", str(fitted.out_dir / "model"), str(image_folder), "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 2
    assert ("This model needs the features 'sift', which cannot be built here: Unknown features 'sift'"
            in " ".join(r.output.split()))


def test_cli_assign_round_trip(fitted: imgclust.RunResult, image_folder: Path, tmp_path: Path):
    r = CliRunner().invoke(main, ["assign", str(fitted.out_dir / "model"), str(image_folder), "--out",
                                  str(tmp_path / "o"), "--no-cache", "-q"])
    assert r.exit_code == 0, r.output
    assert "18 of 18 images assigned to the 3 clusters" in " ".join(r.output.split())
    rows = read_rows(tmp_path / "o" / "assignments.csv")
    fitted_rows = {row["path"]: row["cluster"] for row in read_rows(fitted.out_dir / "assignments.csv")}
    assert {row["path"]: row["cluster"] for row in rows} == fitted_rows


def test_assign_refuses_to_write_over_the_run_that_made_the_model(fitted: imgclust.RunResult, image_folder: Path):
    before = (fitted.out_dir / "assignments.csv").read_bytes()
    with pytest.raises(OutputError, match="holds the model"):
        imgclust.assign(fitted.out_dir / "model", image_folder, fitted.out_dir, cache=False)
    assert (fitted.out_dir / "assignments.csv").read_bytes() == before


def test_a_folder_without_a_model_is_refused(tmp_path: Path, image_folder: Path):
    with pytest.raises(InputError, match="holds no model.json"):
        imgclust.assign(tmp_path, image_folder, tmp_path / "o")


@pytest.mark.slow
def test_round_trip_on_a_real_dataset(tmp_path: Path):
    images = shared_dataset("dogs-vs-cats-1000")
    fitted = imgclust.run(images, tmp_path / "run", features="efficientnet-lite0", k=2, method="kmeans", seed=0,
                          cache=tmp_path / "cache")
    a = imgclust.assign(tmp_path / "run" / "model", images, tmp_path / "assigned", cache=tmp_path / "cache")
    np.testing.assert_array_equal(a.labels, fitted.labels)
    assert a.summary["n_vectors_cached"] == 1000 and a.metrics == fitted.metrics
    assert 0.03 <= a.assignment.outlier.mean() <= 0.07  # the 95th percentile flags about 5% of the fitted images


def test_weights_for_a_model_without_a_checkpoint_is_refused(fitted: imgclust.RunResult, image_folder: Path,
                                                             tmp_path: Path):
    with pytest.raises(ParameterError, match="uses 'pixels', which needs none"):
        imgclust.assign(fitted.out_dir, image_folder, tmp_path / "o", weights=tmp_path / "w.pth", cache=False)


def test_the_same_run_writes_the_same_model_bytes(fitted: imgclust.RunResult, image_folder: Path, tmp_path: Path):
    again = imgclust.run(image_folder, tmp_path / "again", features="pixels", k=3, method="kmeans", seed=0, cache=False)
    for name in ("centers.npz", "model.json"):
        assert (again.out_dir / "model" / name).read_bytes() == (fitted.out_dir / "model" / name).read_bytes(), name
