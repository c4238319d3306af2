"""One contract test over every registered extractor and family, plus list-features."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import imgclust
from conftest import shared_dataset
from imgclust.cli import main
from imgclust.features import Extractor, get_extractor, list_extractors, list_features
from imgclust.features.base import family_specs

# Options for the common test. EfficientNet runs on eager PyTorch here so the test does not export three
# ONNX graphs; the ONNX path is covered by test_pipeline and by the parity test below.
TEST_OPTIONS = {"efficientnet-lite0": {"runtime": "torch"}, "efficientnet-lite1": {"runtime": "torch"},
                "efficientnet-lite2": {"runtime": "torch"}}
# One small member of each family, built from a checkpoint the test makes (no network).
FAMILY_EXAMPLES = {"timm": "timm:resnet18"}


def entries() -> list:
    specs = [pytest.param(s.name, id=s.name) for s in list_extractors()]
    return specs + [pytest.param(f"{f.prefix}:", id=f"{f.prefix}:MODEL") for f in family_specs()]


def build(name: str, tmp_path_factory: pytest.TempPathFactory) -> Extractor:
    if name.endswith(":"):
        fam = next(f for f in family_specs() if f"{f.prefix}:" == name)
        if not fam.is_installed():
            pytest.skip(f"{name}MODEL is not installed here ({fam.install_hint})")
        assert fam.prefix in FAMILY_EXAMPLES, f"add an example model for the new family {fam.prefix}"
        return get_extractor(FAMILY_EXAMPLES[fam.prefix], **family_options(fam.prefix, tmp_path_factory))
    spec = next(s for s in list_extractors() if s.name == name)
    if not spec.is_installed() or not spec.weights_offline():
        pytest.skip(f"{name} is not installed here ({spec.install_hint})")
    return get_extractor(name, **TEST_OPTIONS.get(name, {}))


def family_options(prefix: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    assert prefix == "timm"
    import timm
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.getbasetemp() / "resnet18-random.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(path))
    return {"weights": path}


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((64, 48), (31, 90), (300, 200))]


@pytest.mark.parametrize("name", entries())
def test_extractor_contract(name: str, tmp_path_factory: pytest.TempPathFactory):
    ex = build(name, tmp_path_factory)
    batch = np.stack([ex.prepare(img) for img in images()])
    assert batch.dtype in (np.float32, np.uint8)
    X = ex.embed(batch)
    assert X.shape == (3, ex.dim) and X.dtype == np.float32 and np.isfinite(X).all()
    assert not np.allclose(X[0], X[1])  # different images, different vectors
    # Deterministic, and a vector does not depend on its batch-mates (the cache mixes batches).
    np.testing.assert_array_equal(ex.embed(np.stack([ex.prepare(img) for img in images()])), X)
    np.testing.assert_allclose(ex.embed(batch[1:2])[0], X[1], rtol=1e-4, atol=1e-4)
    ex.close()  # frees the network; the next batch loads it again
    np.testing.assert_array_equal(ex.embed(batch), X)
    # The cache id is stable across instances and the description is plain JSON.
    again = build(name, tmp_path_factory)
    assert again.cache_id() == ex.cache_id() and ex.cache_id().startswith(ex.name.replace(":", "_"))
    assert json.loads(json.dumps(ex.describe())) == ex.describe()
    spec = {s.name: s for s in list_extractors()}.get(name)
    if spec is not None and spec.dim is not None and not TEST_OPTIONS.get(name, {}).keys() - {"runtime"}:
        assert ex.dim == spec.dim


def test_cache_id_changes_with_what_changes_the_vectors():
    assert get_extractor("pixels", size=16).cache_id() != get_extractor("pixels", size=32).cache_id()
    ids = {get_extractor(f"efficientnet-lite{i}", runtime="torch").cache_id() for i in range(3)}
    assert len(ids) == 3
    # The runtime does not change the vectors (to 1e-4), so it does not change the id.
    assert (get_extractor("efficientnet-lite1", runtime="torch").cache_id()
            == get_extractor("efficientnet-lite1", runtime="onnx").cache_id())


@pytest.mark.parametrize("variant,size", [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_efficientnet_lite1_and_lite2_declare_their_input_size(variant: str, size: int):
    ex = get_extractor(variant, runtime="torch")
    pre = ex.preprocessing()
    assert pre["input_size"] == size and pre["weights"].startswith(variant)
    assert ex.prepare(Image.new("RGB", (500, 300), "red")).shape == (size, size, 3)
    assert ex.draft_size == (int(np.ceil(size / 0.875)),) * 2


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["efficientnet-lite1", "efficientnet-lite2"])
def test_efficientnet_onnx_and_torch_agree(variant: str, tmp_path):
    onnx = get_extractor(variant, runtime="onnx", model_dir=tmp_path)
    torch = get_extractor(variant, runtime="torch")
    batch = np.stack([onnx.prepare(img) for img in images()])
    np.testing.assert_allclose(onnx.embed(batch), torch.embed(batch), atol=1e-4, rtol=1e-4)


def test_list_features_covers_every_extractor_and_family():
    rows = {f.name: f for f in list_features()}
    assert {s.name for s in list_extractors()} | {f"{f.prefix}:MODEL" for f in family_specs()} <= set(rows)
    assert rows["pixels"].dim == 3072 and rows["pixels"].installed and rows["pixels"].weights_offline
    assert rows["efficientnet-lite2"].dim == 1280
    assert rows["timm:MODEL"].dim is None and rows["timm:MODEL"].weights_offline is None
    assert rows["timm:MODEL"].installed or 'pip install "imgclust[timm]"' in rows["timm:MODEL"].install_hint


def test_list_features_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "200")
    r = CliRunner().invoke(main, ["list-features"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    cells = [[c.strip() for c in line.split("│")[1:5]] for line in lines if "│" in line]
    assert ["pixels", "3072", "yes", "yes"] in cells, r.output
    for f in list_features():
        assert f.name in r.output
    assert re.search(r"Without --features: efficientnet-lite[02] at (int8|fp32) on this machine\.", r.output)


def test_colour_histogram_compares_colour_distributions():
    ex = get_extractor("colour-histogram")
    red, half = Image.new("RGB", (40, 30), (250, 10, 10)), Image.new("RGB", (64, 64), (250, 10, 10))
    half.paste((10, 10, 250), (0, 0, 64, 32))
    v_red, v_half = ex.embed(np.stack([ex.prepare(red), ex.prepare(half)]))
    assert np.count_nonzero(v_red) == 1 and v_red.max() == 1.0  # one bin holds every pixel
    np.testing.assert_allclose(sorted(v_half[v_half > 0]), [np.sqrt(0.5)] * 2, rtol=1e-6)
    assert np.linalg.norm(v_red) == pytest.approx(1.0) and np.linalg.norm(v_half) == pytest.approx(1.0)


def test_hog_without_scikit_image_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    from imgclust.errors import MissingDependencyError
    from imgclust.features import classic

    monkeypatch.setattr(classic, "_skimage_installed", lambda: False)
    with pytest.raises(MissingDependencyError, match=r'pip install "imgclust\[classic\]"'):
        classic.HogExtractor()


@pytest.mark.slow
def test_classic_descriptors_beat_pixels_on_imagenette(tmp_path):
    pytest.importorskip("skimage", reason='hog needs scikit-image (pip install "imgclust[classic]")')
    images = shared_dataset("imagenette-val-3000")
    acc = {f: imgclust.run(images, tmp_path / f, features=f, k=10, method="kmeans", seed=0,
                           cache=tmp_path / "cache").metrics["accuracy_hungarian"]
           for f in ("pixels", "colour-histogram", "hog")}
    assert acc["hog"] > acc["pixels"] + 0.05 and acc["colour-histogram"] > acc["pixels"], acc


def test_efficientnet_keeps_the_whole_frame_of_small_images_and_crops_photos():
    ex = get_extractor("efficientnet-lite0")
    rng = np.random.default_rng(3)
    small = Image.fromarray(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8))  # 80x70: enlarged 3.2x
    whole = small.resize((224, 224), Image.Resampling.BILINEAR, box=(5, 0, 75, 70))
    np.testing.assert_array_equal(ex.prepare(small), np.asarray(whole))
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    crop = 300 * 0.875
    box = ((400 - crop) / 2, (300 - crop) / 2, (400 + crop) / 2, (300 + crop) / 2)
    cropped = photo.resize((224, 224), Image.Resampling.BILINEAR, box=box)  # shrinking: bilinear
    np.testing.assert_array_equal(ex.prepare(photo), np.asarray(cropped))
    # The rule starts at an enlargement of more than 2x: a 112-px image is still cropped, 111 px is not.
    at_112 = Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    c = 112 * 0.875
    np.testing.assert_array_equal(ex.prepare(at_112), np.asarray(at_112.resize(
        (224, 224), Image.Resampling.BICUBIC, box=((112 - c) / 2, (112 - c) / 2, (112 + c) / 2, (112 + c) / 2))))
    at_111 = at_112.crop((0, 0, 111, 111))
    np.testing.assert_array_equal(ex.prepare(at_111), np.asarray(at_111.resize((224, 224), Image.Resampling.BILINEAR)))
    assert "small_images" in ex.preprocessing()


@pytest.mark.parametrize("variant,largest,inner", [("efficientnet-lite0", 37, 166), ("efficientnet-lite2", 43, 192)])
def test_efficientnet_thumbnails_are_enlarged_less_on_a_neutral_border(variant: str, largest: int, inner: int):
    ex = get_extractor(variant, runtime="torch")
    size = ex.image_size
    rng = np.random.default_rng(4)
    thumb = Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))  # 40x32, e.g. a CIFAR picture
    pixels = ex.prepare(thumb)
    assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8  # batches mix thumbnails and photos
    at = (size - inner) // 2  # 74% of the input
    inside = thumb.resize((inner, inner), Image.Resampling.BILINEAR, box=(4, 0, 36, 32))  # whole central square
    np.testing.assert_array_equal(pixels[at:at + inner, at:at + inner], np.asarray(inside))
    border = np.ones((size, size), bool)
    border[at:at + inner, at:at + inner] = False
    assert (pixels[border] == 127).all()  # (127 - 127) / 128: zero input around the picture
    # The border appears only where filling the input would enlarge more than 6x; one pixel more fills it.
    at_largest = Image.fromarray(rng.integers(0, 256, (largest, 300, 3), dtype=np.uint8))
    assert ex.thumbnail_size(largest) == inner and (ex.prepare(at_largest)[0] == 127).all()
    above = Image.fromarray(rng.integers(0, 256, (largest + 1, 300, 3), dtype=np.uint8))
    assert ex.thumbnail_size(largest + 1) is None
    np.testing.assert_array_equal(ex.prepare(above), ex._fill_input(above))
    assert not (ex.prepare(above)[0] == 127).all()
    assert "thumbnails" in ex.preprocessing()


def test_efficientnet_cache_id_names_the_thumbnail_rule(monkeypatch: pytest.MonkeyPatch):
    import imgclust.features.efficientnet as efficientnet

    ex = get_extractor("efficientnet-lite0", runtime="torch")
    before = ex.cache_id()
    monkeypatch.setattr(efficientnet, "THUMBNAIL_ENLARGEMENT", 4.0)
    assert ex.cache_id() != before
    monkeypatch.undo()
    monkeypatch.setattr(efficientnet, "THUMBNAIL_FRACTION", 0.8)
    assert ex.cache_id() != before


def test_int8_calibration_fills_the_input_as_before_the_thumbnail_rule(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """The int8 graph is cached under its recipe: it must not depend on the thumbnail rule."""
    import imgclust.features.efficientnet as efficientnet
    from imgclust.features.quantize import calibration_images

    ex = get_extractor("efficientnet-lite0", runtime="onnx", model_dir=tmp_path)
    seen: list[np.ndarray] = []
    monkeypatch.setattr(ex, "_verified_graph", lambda path: b"fp32")
    monkeypatch.setattr(efficientnet, "quantize_graph", lambda graph, batches: seen.extend(batches) or b"int8")
    assert ex._quantize_onnx(tmp_path / "int8.onnx") == b"int8"
    images = list(calibration_images())
    assert any(ex.thumbnail_size(min(im.size)) for im in images)
    np.testing.assert_array_equal(np.concatenate(seen), np.stack([ex._fill_input(im) for im in images]))


def test_efficientnet_refuses_a_batch_it_was_not_prepared_for():
    ex = get_extractor("efficientnet-lite0")
    with pytest.raises(ValueError, match="uint8 batches of shape"):
        ex.embed(np.zeros((1, 3, 224, 224), np.float32))


def test_efficientnet_runs_a_batch_in_parts_with_the_vectors_of_single_images():
    # embed() splits a batch into one single-threaded run per thread (fewer CPU seconds than one run spread
    # over the cores); each image's vector is the one it gets alone, bit for bit, whatever the split.
    pytest.importorskip("onnxruntime")
    one = get_extractor("efficientnet-lite0", runtime="onnx", threads=1)
    three = get_extractor("efficientnet-lite0", runtime="onnx", threads=3)
    batch = np.stack([one.prepare(img) for img in images() + images()[:2]])  # 5 images: parts of 2, 2 and 1
    alone = np.concatenate([one.embed(batch[i:i + 1]) for i in range(len(batch))])
    np.testing.assert_array_equal(three.embed(batch), alone)
    assert three._pool is not None and one._pool is None  # the parts did run on other threads
    three.close()
    assert three._pool is None
    np.testing.assert_array_equal(three.embed(batch[:2]), alone[:2])
