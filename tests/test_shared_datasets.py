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
