"""int8 EfficientNet-Lite: its own cache id, the fp32 fallback, saved models that record the precision."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFilter

import imgclust
from imgclust.cli import main
from imgclust.cluster import cluster
from imgclust.config import RunConfig
from imgclust.errors import InputError, ParameterError
from imgclust.features import default, efficientnet, get_extractor, quantize
from imgclust.features.quantize import calibration_images, int8_unavailable_reason
from imgclust.io.decode import decode
from imgclust.model import save_model
from imgclust.pipeline import with_features


@pytest.fixture()
def int8_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the CPU has int8 dot-product instructions (the tests do not depend on the machine's)."""
    monkeypatch.setattr(efficientnet, "int8_unavailable_reason", lambda: None)
    monkeypatch.setattr(quantize, "int8_unavailable_reason", lambda: None)


@pytest.fixture()
def no_int8_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(efficientnet, "int8_unavailable_reason", lambda: "this CPU has no int8 dot-product (test)")
    monkeypatch.setattr(quantize, "int8_unavailable_reason", lambda: "this CPU has no int8 dot-product (test)")
    monkeypatch.setattr(efficientnet, "_WARNED", set())
    monkeypatch.setattr(default, "_WARNED", set())


def test_the_default_features_are_lite2_int8(int8_here: None) -> None:
    assert RunConfig().features == ""  # settled by the run, on the machine that runs it
    config = with_features(RunConfig(k=3))
    assert (config.features, config.feature_options, config.k) == ("efficientnet-lite2", {"precision": "int8"}, 3)
    # A precision given without features applies to the default network as asked.
    assert with_features(RunConfig(feature_options={"precision": "fp32"})).features == "efficientnet-lite2"
    # Features that are named are never replaced.
    named = RunConfig(features="efficientnet-lite0")
    assert with_features(named) is named


def test_without_int8_the_default_is_lite0_fp32_not_lite2_fp32(no_int8_here: None,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imgclust"):
        first, second = with_features(RunConfig()), with_features(RunConfig(seed=1))
    assert (first.features, first.feature_options) == (second.features, second.feature_options) == (
        "efficientnet-lite0", {})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["int8 is not available here (this CPU has no int8 dot-product (test)); the default features "
                     "are efficientnet-lite0 in fp32 (efficientnet-lite2 would run in fp32 at about half the "
                     "speed)."], lines
    # An explicit request keeps its network: Lite2 at int8 falls back to Lite2 at fp32.
    explicit = with_features(RunConfig(feature_options={"precision": "int8"}))
    assert explicit.features == "efficientnet-lite2"
    assert get_extractor(explicit.features, **explicit.feature_options).precision == "fp32"


def test_a_default_run_records_what_ran_where_int8_falls_back(image_folder: Path, tmp_path: Path,
                                                               no_int8_here: None) -> None:
    r = CliRunner().invoke(main, ["run", str(image_folder), "--out", str(tmp_path / "o"), "--k", "3", "-q"])
    assert r.exit_code == 0, r.output
    assert "with efficientnet-lite0 + spectral" in " ".join(r.output.split())
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    model = json.loads((tmp_path / "o" / "model" / "model.json").read_text())
    assert summary["features"] == summary["config"]["features"] == model["features"] == "efficientnet-lite0"
    assert summary["extractor"]["precision"] == model["extractor"]["precision"] == "fp32"
    assert model["feature_options"] == {}
    # The saved model is a plain Lite0 fp32 model: assign uses it where int8 is missing, and elsewhere.
    assigned = imgclust.assign(tmp_path / "o", image_folder, tmp_path / "a")
    assert assigned.summary["features"] == "efficientnet-lite0"


def drawn_scenes() -> list[Image.Image]:
    """Photo-like drawings: colour gradients, overlapping shapes, blur and sensor-like noise, at photo and
    thumbnail sizes (drawn here, nothing read from disk)."""
    out = []
    for seed in range(8):
        for w, h in ((320, 240), (48, 48)):
            rng = np.random.default_rng(seed)
            yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
            c0, c1, c2 = (rng.uniform(0, 255, 3) for _ in range(3))
            base = c0 + np.multiply.outer(xx, c1 - c0) + np.multiply.outer(yy, c2 - c0) * 0.5
            img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(3, 8))):
                x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
                box = (x0, y0, x0 + rng.uniform(w * 0.1, w * 0.5), y0 + rng.uniform(h * 0.1, h * 0.5))
                shape = draw.rectangle if rng.integers(0, 2) else draw.ellipse
                shape(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5))).astype(np.float64) + rng.normal(0, 8, (h, w, 3))
            out.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return out


def test_int8_has_its_own_cache_id_and_fp32_keeps_the_old_one(int8_here: None) -> None:
    fp32 = get_extractor("efficientnet-lite0")
    int8 = get_extractor("efficientnet-lite0", precision="int8")
    assert int8.precision == "int8" and fp32.precision == "fp32"
    assert int8.cache_id() != fp32.cache_id()
    # fp32 ids do not change with this feature, so vectors cached before it stay valid.
    assert get_extractor("efficientnet-lite0", precision="fp32").cache_id() == fp32.cache_id()
    assert "precision" not in fp32.preprocessing()
    assert int8.describe()["precision"] == "int8" and fp32.describe()["precision"] == "fp32"
    # Each variant's int8 graph is its own file next to the fp32 one.
    assert int8._graph_path() != fp32._graph_path() and int8._graph_path().parent == fp32._graph_path().parent
    assert get_extractor("efficientnet-lite2", precision="int8").cache_id() != int8.cache_id()


def test_a_missing_int8_kernel_falls_back_to_fp32_with_one_log_line(no_int8_here: None,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imgclust.features.efficientnet"):
        ex = get_extractor("efficientnet-lite0", precision="int8")
        again = get_extractor("efficientnet-lite0", precision="int8")
    assert ex.precision == again.precision == "fp32"
    assert ex.cache_id() == get_extractor("efficientnet-lite0").cache_id()
    assert ex._graph_path() == ex._onnx_path()
    assert ex.precision_note is not None and "no int8 dot-product" in ex.precision_note
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "runs in fp32" in lines[0], lines


def test_precision_is_checked() -> None:
    with pytest.raises(ParameterError, match="precision must be one of fp32, int8; got 'int4'"):
        get_extractor("efficientnet-lite0", precision="int4")
    with pytest.raises(ParameterError, match="int8 runs on ONNX Runtime"):
        get_extractor("efficientnet-lite0", precision="int8", runtime="torch")


def test_the_check_names_what_is_missing() -> None:
    reason = int8_unavailable_reason()
    assert reason is None or "int8" in reason or "not installed" in reason


def test_cli_precision_is_for_efficientnet_only(image_folder: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["run", str(image_folder), "--out", str(tmp_path / "o"), "--features", "pixels",
                                  "--precision", "int8", "-q"])
    assert r.exit_code == 2
    assert "--precision is for the efficientnet-lite features; 'pixels' runs in fp32 only." in r.output


def test_calibration_images_are_seeded_crops_of_the_shipped_photos() -> None:
    a = [np.asarray(im) for im in calibration_images(6)]
    b = [np.asarray(im) for im in calibration_images(6)]
    assert len(a) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(min(x.shape[:2]) <= 64 for x in a[1::2])  # every second one is thumbnail-sized


def save_lite0_model(folder: Path, precision: str = "fp32") -> Path:
    """A model saved as a run saves it, for Lite0 vectors of ``precision`` (random centres: no network runs)."""
    options = {"precision": precision} if precision != "fp32" else {}
    extractor = get_extractor("efficientnet-lite0", **options)
    X = np.random.default_rng(0).normal(size=(18, 1280)).astype(np.float32)
    result = cluster(X, 3, method="kmeans", seed=0)
    return save_model(folder, extractor, RunConfig(features="efficientnet-lite0", feature_options=options), result,
                      {})


def test_saved_model_records_precision_and_assign_refuses_another(image_folder: Path, tmp_path: Path,
                                                                  int8_here: None) -> None:
    fp32_model = save_lite0_model(tmp_path / "fp32")
    int8_model = save_lite0_model(tmp_path / "int8", "int8")
    assert json.loads((fp32_model / "model.json").read_text())["extractor"]["precision"] == "fp32"
    doc = json.loads((int8_model / "model.json").read_text())
    assert doc["extractor"]["precision"] == "int8" and doc["feature_options"] == {"precision": "int8"}
    for model, asked, fitted in ((fp32_model, "int8", "fp32"), (int8_model, "fp32", "int8")):
        r = CliRunner().invoke(main, ["assign", str(model), str(image_folder), "--out", str(tmp_path / "a"),
                                      "--precision", asked, "-q"])
        assert r.exit_code == 2, r.output
        assert (f"This model was fitted on {fitted} vectors; --precision {asked} makes {asked} vectors, which its "
                f"centres do not fit. Leave out --precision (assign uses the model's {fitted})") in " ".join(r.output.split())
        assert not (tmp_path / "a").exists()


def test_assign_refuses_an_int8_model_where_int8_falls_back(image_folder: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # An int8 model taken to a machine without int8 kernels: the vectors there would be fp32.
    monkeypatch.setattr(efficientnet, "int8_unavailable_reason", lambda: None)
    model = save_lite0_model(tmp_path / "int8", "int8")
    monkeypatch.setattr(efficientnet, "int8_unavailable_reason", lambda: "this CPU has no int8 dot-product (test)")
    with pytest.raises(InputError, match="fitted on int8 vectors, but int8 is not available here"):
        imgclust.assign(model, image_folder, tmp_path / "a", cache=False)


@pytest.mark.slow
@pytest.mark.parametrize("variant,lowest", [
    ("efficientnet-lite2", 0.97),  # the default features' network: issue 17's bound, for every drawn image
    ("efficientnet-lite0", 0.90),  # measured 0.928 on the flat shapes (not the default at int8; docs/features.md)
])
def test_int8_vectors_of_drawn_images_are_close_to_fp32(variant: str, lowest: float, image_folder: Path) -> None:
    """Issue 17: int8 against fp32 vectors on drawn images, cosine at least 0.97 (exports and quantises the
    variant: tens of seconds on a busy 2-core machine)."""
    if int8_unavailable_reason() is not None:
        pytest.skip(f"int8 is not available here: {int8_unavailable_reason()}")
    fp32 = get_extractor(variant)
    int8 = get_extractor(variant, precision="int8")
    # The suite's flat shapes on a plain background (the hard case), and the photo-like drawings.
    drawn = [decode(p).image for p in sorted(image_folder.rglob("*")) if p.is_file()] + drawn_scenes()
    assert len(drawn) == 18 + 16 and all(im is not None for im in drawn)
    batch = np.stack([fp32.prepare(im) for im in drawn])
    a, b = fp32.embed(batch), int8.embed(batch)
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # Measured, lowest: 0.981 (Lite2), 0.928 (Lite0); means 0.99 and 0.97.
    assert cos.min() >= lowest and cos.mean() >= 0.97, np.round(np.sort(cos)[:5], 3)
    assert not np.array_equal(a, b)


@pytest.mark.slow
def test_int8_models_round_trip(image_folder: Path, tmp_path: Path) -> None:
    """Exports and quantises Lite0 (tens of seconds on a busy 2-core machine)."""
    if int8_unavailable_reason() is not None:
        pytest.skip(f"int8 is not available here: {int8_unavailable_reason()}")
    models = tmp_path / "models"
    fp32 = get_extractor("efficientnet-lite0", model_dir=models)
    int8 = get_extractor("efficientnet-lite0", model_dir=models, precision="int8")
    batch = np.stack([fp32.prepare(im) for im in drawn_scenes()])
    b = int8.embed(batch)
    assert sorted(p.name for p in models.glob("*.onnx")) == sorted([fp32._onnx_path().name, int8._int8_path().name])
    # A run at int8 records it; assign uses it by default and refuses fp32.
    run = imgclust.run(image_folder, tmp_path / "run", features="efficientnet-lite0", k=3, method="kmeans", seed=0,
                       cache=tmp_path / "cache", feature_options={"precision": "int8", "model_dir": str(models)})
    doc = json.loads((run.out_dir / "model" / "model.json").read_text())
    assert doc["extractor"]["precision"] == "int8" and doc["feature_options"]["precision"] == "int8"
    assigned = imgclust.assign(run.out_dir / "model", image_folder, tmp_path / "a", cache=tmp_path / "cache")
    np.testing.assert_array_equal(assigned.labels, run.labels)
    with pytest.raises(InputError, match="fitted on int8 vectors; --precision fp32"):
        imgclust.assign(run.out_dir / "model", image_folder, tmp_path / "b", precision="fp32")
    # The int8 graph is kept with its SHA-256 like the fp32 one: a replaced graph is quantised again.
    int8_graph = int8._int8_path()
    good = int8_graph.read_bytes()
    int8_graph.write_bytes(b"not an onnx graph")
    again = get_extractor("efficientnet-lite0", model_dir=models, precision="int8")
    np.testing.assert_allclose(again.embed(batch), b, rtol=1e-5, atol=1e-5)
    assert int8_graph.read_bytes() == good
