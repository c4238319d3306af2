"""timm:MODEL features with checkpoints the tests make themselves (random weights), no network."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import imgclust
from conftest import run_cli
from imgclust.cli import main
from imgclust.errors import InputError, MissingDependencyError, ParameterError
from imgclust.features import get_extractor
from imgclust.features import timm as timm_features

needs_timm = pytest.mark.skipif(not timm_features.timm_available(),
                                reason='timm is not importable here (pip install "imgclust[timm]")')


@pytest.fixture(scope="module")
def resnet18_state() -> dict:
    """A randomly initialised resnet18 with its ImageNet classifier, as a state dict (seeded)."""
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint(resnet18_state: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "resnet18-random.safetensors"
    save_file(resnet18_state, str(path))
    return path


@pytest.fixture()
def offline_env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A subprocess environment with the Hugging Face Hub offline and an empty Hugging Face cache."""
    return {**cli_env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}


@needs_timm
def test_run_and_assign_end_to_end_with_a_local_checkpoint(image_folder: Path, tmp_path: Path, checkpoint: Path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["run", str(image_folder), "--out", str(out), "--features", "timm:resnet18",
                                  "--weights", str(checkpoint), "--k", "3", "--no-cache", "-q"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    pre = s["extractor"]["preprocessing"]
    assert s["extractor"]["dim"] == 512 and s["n_ok"] == 18
    assert (pre["input_size"], pre["interpolation"], pre["crop_pct"]) == ([3, 224, 224], "bicubic", 0.95)
    assert pre["weights"].startswith("file sha256:")
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["features"] == "timm:resnet18" and model["feature_options"] == {"weights": str(checkpoint)}
    a = imgclust.assign(out / "model", image_folder, tmp_path / "assigned", cache=False)
    labels = [int(row.split(",")[1]) for row in (out / "assignments.csv").read_text().splitlines()[1:]]
    np.testing.assert_array_equal(a.labels, labels)


@needs_timm
def test_preprocessing_is_timms_eval_transform(checkpoint: Path):
    import timm
    import torch

    ex = get_extractor("timm:resnet18", weights=checkpoint)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    cfg = timm.data.resolve_data_config({}, model=net)
    transform = timm.data.create_transform(**cfg, is_training=False)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 410, 3), dtype=np.uint8))
    np.testing.assert_array_equal(ex.prepare(img), transform(img).numpy())
    assert ex.preprocessing()["mean"] == [round(v, 6) for v in cfg["mean"]]
    # The vectors are the pooled features of the checkpoint's network.
    net.load_state_dict({k: v for k, v in timm_features.load_state_dict(checkpoint).items()
                         if not k.startswith("fc.")})
    x = ex.prepare(img)[None]
    with torch.inference_mode():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ex.embed(x), expected, rtol=1e-5, atol=1e-5)


@needs_timm
def test_torch_state_dict_checkpoints_load_and_the_cache_id_follows_the_file_content(
        resnet18_state: dict, checkpoint: Path, tmp_path: Path):
    import torch

    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet18_state.items()}, "epoch": 3}, nested)
    a = get_extractor("timm:resnet18", weights=checkpoint)
    b = get_extractor("timm:resnet18", weights=nested)
    x = np.stack([a.prepare(Image.new("RGB", (64, 48), c)) for c in ("red", "navy")])
    np.testing.assert_array_equal(a.embed(x), b.embed(x))
    assert a.cache_id() != b.cache_id()  # different files (bytes), even though the tensors agree
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(checkpoint.read_bytes())
    assert get_extractor("timm:resnet18", weights=moved).cache_id() == a.cache_id()


@needs_timm
def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path):
    import timm
    import torch

    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    ex = get_extractor("timm:resnet18", weights=path)
    with pytest.raises(InputError, match="does not fit timm:resnet18"):
        ex.embed(np.zeros((1, 3, 224, 224), np.float32))


@needs_timm
def test_a_pickled_object_is_never_unpickled(tmp_path: Path):
    import torch

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": Path("x")}, path)  # a Python object inside
    with pytest.raises(InputError, match="refused for safety"):
        timm_features.load_state_dict(path)


@pytest.mark.slow  # a subprocess that imports torch and timm; the fast in-process variant follows
@needs_timm
def test_offline_without_weights_names_both_fixes(image_folder: Path, tmp_path: Path, offline_env: dict[str, str]):
    r = run_cli(["run", str(image_folder), "--out", str(tmp_path / "o"), "--features", "timm:resnet18", "--k", "3",
                 "--no-cache", "-q"], offline_env)
    text = " ".join(r.stderr.split())
    assert r.returncode == 2, r.stderr
    assert "Could not get the pretrained weights of timm:resnet18 (timm/resnet18.a1_in1k)" in text
    assert "go online once" in text and "--weights FILE" in text
    assert not (tmp_path / "o" / "assignments.csv").exists()


@needs_timm
def test_failed_download_names_both_fixes(monkeypatch: pytest.MonkeyPatch):
    import timm

    real = timm.create_model

    def no_network(name: str, pretrained: bool = False, **kw: object):
        if pretrained:
            raise OSError("Network is unreachable")
        return real(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", no_network)
    ex = get_extractor("timm:resnet18")
    assert ex.preprocessing()["weights"] == "timm pretrained resnet18.a1_in1k"
    with pytest.raises(InputError, match=r"OSError: Network is unreachable\. Either go online once .* --weights FILE"):
        ex.embed(np.zeros((1, 3, 224, 224), np.float32))


@needs_timm
def test_unknown_timm_model_and_bare_names_get_suggestions():
    with pytest.raises(ParameterError, match=r"timm has no model called 'resnet5O'\. Did you mean timm:resnet50"):
        get_extractor("timm:resnet5O")
    with pytest.raises(ParameterError, match=r"Unknown features 'resnet50'\. Did you mean 'timm:resnet50'\?"):
        get_extractor("resnet50")
    with pytest.raises(ParameterError, match="weights file .* does not exist"):
        get_extractor("timm:resnet18", weights="/nonexistent/w.safetensors")


def test_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r'pip install "imgclust\[timm\]"'):
        get_extractor("timm:resnet50")


def test_weights_option_is_only_for_timm(image_folder: Path, tmp_path: Path):
    w = tmp_path / "w.pth"
    w.write_bytes(b"")
    r = CliRunner().invoke(main, ["run", str(image_folder), "--out", str(tmp_path / "o"), "--features", "pixels",
                                  "--weights", str(w), "--k", "2", "-q"])
    assert r.exit_code == 2
    assert "--weights is for timm:MODEL features; 'pixels' brings its own weights." in " ".join(r.output.split())



@needs_timm
def test_models_in_the_hugging_face_cache_are_listed_as_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants

    snap = tmp_path / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    (tmp_path / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert timm_features.cached_hub_models() == ["resnet18.a1_in1k"]
    rows = {f.name: f for f in imgclust.list_features()}
    assert rows["timm:resnet18.a1_in1k"].weights_offline and rows["timm:MODEL"].installed
