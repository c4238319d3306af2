"""The issue's acceptance bars on the real shared datasets (slow: they run the CNN on thousands of images)."""

import pytest

import imgclust
from conftest import shared_dataset

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dataset,features,k,low,high", [
    ("dogs-vs-cats-1000", "pixels", 2, 0.45, 0.60),
    ("dogs-vs-cats-1000", "efficientnet-lite0", 2, 0.97, 1.0),
    ("imagenette-val-3000", "efficientnet-lite0", 10, 0.92, 1.0),
])
def test_accuracy_bars(dataset, features, k, low, high, tmp_path):
    r = imgclust.run(shared_dataset(dataset), tmp_path / "out", features=features, k=k, method="kmeans", seed=0)
    acc = r.metrics["accuracy_hungarian"]
    assert low <= acc <= high, f"{dataset} {features}: accuracy_hungarian {acc:.3f} not in [{low}, {high}]"


@pytest.mark.parametrize("dataset,k,floor", [
    ("dogs-vs-cats-1000", 2, 0.99),
    ("imagenette-val-3000", 10, 0.96),
    ("cifar10-test-5000", 10, 0.60),  # 0.631 (lite0 fp32) and 0.648 (lite2 int8) measured: docs/features.md, "Thumbnails"
])
def test_default_method_beats_plain_kmeans(dataset, k, floor, tmp_path):
    """Issue 6: the default method is at least as accurate as the original k-means on every shared set, on the
    Lite0 vectors it was chosen with (on the default features, Lite2 int8, spectral is 0.006 below k-means on
    CIFAR-10: docs/accuracy.md)."""
    images = shared_dataset(dataset)
    lite0 = {"features": "efficientnet-lite0", "k": k, "seed": 0}
    default = imgclust.run(images, tmp_path / "default", **lite0)
    plain = imgclust.run(images, tmp_path / "kmeans", method="kmeans", **lite0)
    acc, base = default.metrics["accuracy_hungarian"], plain.metrics["accuracy_hungarian"]
    assert default.summary["method"] == "spectral"
    assert acc >= base and acc >= floor, f"{dataset}: default {acc:.4f}, kmeans {base:.4f}, floor {floor}"


@pytest.mark.parametrize("dataset,k,lite0_fp32", [
    ("dogs-vs-cats-1000", 2, 0.9940),
    ("imagenette-val-3000", 10, 0.9707),
    ("cifar10-test-5000", 10, 0.5514),
])
def test_default_features_lose_at_most_0_005_against_lite0_fp32(dataset, k, lite0_fp32, tmp_path):
    """Issue 17's rule for the default features (Lite2 int8 where int8 runs, measured 0.9900 / 0.9807 / 0.5482
    with the default method; Lite0 fp32 elsewhere): no loss above 0.005 against Lite0 fp32 on a shared set."""
    r = imgclust.run(shared_dataset(dataset), tmp_path / "out", k=k, seed=0)
    acc = r.metrics["accuracy_hungarian"]
    assert acc >= lite0_fp32 - 0.005, f"{dataset} ({r.summary['features']}): accuracy_hungarian {acc:.4f}"
