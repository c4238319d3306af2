"""Any timm model as a feature extractor: ``--features timm:MODEL`` (optional extra ``imgclust[timm]``).

The vector is the model's pooled output with the classifier removed (``num_classes=0``), e.g.
2048 values for ``timm:resnet50`` (the original method's network), 384 for
``timm:vit_small_patch14_dinov2.lvd142m``, 768 for ``timm:convnext_tiny``.

Preprocessing is exactly timm's evaluation transform for the model's pretrained config
(``resolve_data_config`` + ``create_transform``: input size, interpolation, mean/std, crop_pct,
crop mode), and it is declared in :meth:`TimmExtractor.preprocessing`, so the cache id changes
with it.

Weights come from the Hugging Face Hub (timm's own download, kept in the Hugging Face cache) or
from a local checkpoint (``weights=FILE``): a ``.safetensors`` file or a PyTorch state dict, read
with ``torch.load(weights_only=True)`` so a checkpoint can never run code. A local checkpoint is
identified by the SHA-256 of its bytes, so moving or renaming it keeps its cached vectors valid.
Weights are loaded on the first batch: a run whose vectors are all cached needs neither the
network nor the checkpoint.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, MissingDependencyError, ParameterError, missing_dependency
from .base import Extractor, register_family

log = logging.getLogger(__name__)

PREFIX = "timm"
INSTALL_HINT = 'Install it with: pip install "imgclust[timm]"'
# Keys under which training scripts commonly nest the weights in a checkpoint.
_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def _import_timm() -> Any:
    """``timm``, or an error naming the install command (also when timm is installed but broken)."""
    if importlib.util.find_spec("timm") is None:
        raise missing_dependency("timm", extra="timm", purpose="timm:MODEL features")
    try:
        import timm
    except Exception as exc:  # e.g. a torchvision that does not match torch: timm fails inside its import
        raise MissingDependencyError(
            f"timm is installed but cannot be imported ({type(exc).__name__}: {exc}). timm needs a torchvision "
            f"built for the installed torch; reinstall them together: {INSTALL_HINT}") from exc
    return timm


def timm_available() -> bool:
    """Whether ``timm`` can be imported here (installed and working)."""
    try:
        _import_timm()
    except ImportError:
        return False
    return True


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a local checkpoint, read without unpickling arbitrary objects.

    Accepts ``.safetensors`` files and PyTorch files holding a state dict (possibly nested under
    ``state_dict``/``model``, possibly with DataParallel's ``module.`` prefix).

    Raises:
        InputError: the file is not a plain checkpoint.
    """
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file (pickle, zip, header)
        raise InputError(f"Cannot read the weights file {path} as a checkpoint ({type(exc).__name__}: {exc}). "
                         "Give a .safetensors file or a PyTorch state dict saved with torch.save(model.state_dict()); "
                         "files that hold pickled Python objects are refused for safety.") from exc
    if isinstance(state, dict):
        for key in _NESTED_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"The weights file {path} does not hold a state dict (a mapping of names to tensors).")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


class TimmExtractor(Extractor):
    """Pooled embeddings of a timm model.

    Args:
        model: a timm model name, optionally with a pretrained tag (``resnet50``, ``resnet50.a1_in1k``,
            ``vit_small_patch14_dinov2.lvd142m``). ``timm.list_models()`` lists them.
        weights: a local checkpoint of that model (``.safetensors`` or a PyTorch state dict); None to use
            the pretrained weights timm names for it (downloaded once from the Hugging Face Hub).
        threads: threads for PyTorch (default: the cores available).

    Raises:
        MissingDependencyError: timm is not installed.
        ParameterError: unknown model, or a weights file that does not exist.
    """

    def __init__(self, model: str, *, weights: str | os.PathLike[str] | None = None,
                 threads: int | None = None) -> None:
        timm = _import_timm()
        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(f'{PREFIX}:{c}' for c in close)}?" if close else ""
            raise ParameterError(f"timm has no model called '{model}'.{hint} "
                                 "List them with: python -c \"import timm; print(timm.list_models())\"")
        from .efficientnet import default_threads

        self.model_name = model
        self.name = f"{PREFIX}:{model}"
        self.threads = threads or default_threads()
        self.weights_file = Path(weights).expanduser().resolve() if weights is not None else None
        if self.weights_file is not None and not self.weights_file.is_file():
            raise ParameterError(f"The weights file {weights} does not exist.")
        self._weights_sha256 = file_sha256(self.weights_file) if self.weights_file is not None else None
        self._lock = threading.Lock()
        self._net: Any = None
        # The architecture alone (no download) gives the vector size, the pretrained config and the transform.
        from timm.data import create_transform, resolve_data_config

        arch = timm.create_model(model, pretrained=False, num_classes=0)
        self.dim = int(getattr(arch, "head_hidden_size", None) or arch.num_features)
        cfg = dict(arch.pretrained_cfg)
        self._classifier = cfg.get("classifier") or ()
        self._hub_id = cfg.get("hf_hub_id") or cfg.get("url") or ""
        self._tag = f"{cfg.get('architecture', model)}.{cfg['tag']}" if cfg.get("tag") else cfg.get("architecture", model)
        self.data_config = resolve_data_config({}, model=arch)
        self._transform = create_transform(**self.data_config, is_training=False)

    def preprocessing(self) -> dict[str, Any]:
        c = self.data_config
        return {
            "input_size": list(c["input_size"]),
            "interpolation": c["interpolation"],
            "mean": [round(float(v), 6) for v in c["mean"]],
            "std": [round(float(v), 6) for v in c["std"]],
            "crop_pct": float(c["crop_pct"]),
            "crop_mode": c.get("crop_mode", "center"),
            "transform": "timm.data.create_transform(is_training=False)",
            "colour": "RGB",
            "layout": "NCHW",
            "weights": (f"file sha256:{self._weights_sha256}" if self._weights_sha256
                        else f"timm pretrained {self._tag}"),
            "output": "pooled features (num_classes=0)",
        }

    @property
    def draft_size(self) -> tuple[int, int]:
        # The transform first resizes to input_size / crop_pct; decoding JPEGs at that size changes little.
        _, h, w = self.data_config["input_size"]
        crop = float(self.data_config["crop_pct"])
        return (int(w / crop), int(h / crop))

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.ascontiguousarray(self._transform(image).numpy(), dtype=np.float32)

    def _load_weights(self) -> Any:
        with self._lock:
            if self._net is None:
                import torch

                torch.set_num_threads(self.threads)
                net = self._load_local(self.weights_file) if self.weights_file is not None else self._download()
                self._net = net.eval()
            return self._net

    def _load_local(self, path: Path) -> Any:
        state = load_state_dict(path)
        # The classifier is not part of the pooled-features model: drop its weights if the file has them.
        heads = self._classifier
        for head in (heads,) if isinstance(heads, str) else heads:
            state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
        net = _import_timm().create_model(self.model_name, pretrained=False, num_classes=0)
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise InputError(f"The weights file {path} does not fit {self.name}: {exc}") from exc
        if result.missing_keys or result.unexpected_keys:
            raise InputError(
                f"The weights file {path} does not fit {self.name}: {len(result.missing_keys)} weights missing "
                f"(e.g. {', '.join(result.missing_keys[:3]) or '-'}), {len(result.unexpected_keys)} unexpected "
                f"(e.g. {', '.join(result.unexpected_keys[:3]) or '-'}). Pass a checkpoint of this exact model "
                "(timm's state_dict() or its model.safetensors from the Hugging Face Hub).")
        return net

    def _download(self) -> Any:
        timm = _import_timm()
        try:
            return timm.create_model(self.model_name, pretrained=True, num_classes=0)
        except Exception as exc:  # hub, HTTP and cache errors come in many types; all have the same two fixes
            where = f" ({self._hub_id})" if self._hub_id else ""
            raise InputError(
                f"Could not get the pretrained weights of {self.name}{where}: {type(exc).__name__}: "
                f"{str(exc).rstrip('. ')}. "
                "Either go online once (the weights are then kept in the Hugging Face cache and later runs work "
                f"offline), or pass a local checkpoint: --weights FILE (.safetensors or a PyTorch state dict of "
                f"{self.model_name}).") from exc

    def embed(self, batch: np.ndarray) -> np.ndarray:
        import torch

        net = self._load_weights()
        with torch.inference_mode():
            out = net(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return np.asarray(out.numpy(), dtype=np.float32)

    def close(self) -> None:
        self._net = None


def cached_hub_models() -> list[str]:
    """timm models whose Hub weights are in the local Hugging Face cache (usable offline)."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return []
    from huggingface_hub import constants, scan_cache_dir

    try:
        info = scan_cache_dir(constants.HF_HUB_CACHE)  # the Hub cache folder (HF_HUB_CACHE or HF_HOME/hub)
    except Exception:  # no cache folder yet, or one that cannot be read: nothing usable offline
        return []
    return sorted(r.repo_id.split("/", 1)[1] for r in info.repos
                  if r.repo_type == "model" and r.repo_id.startswith("timm/"))


def _suggest(name: str) -> str | None:
    """``resnet50`` -> ``timm:resnet50`` when timm knows the name (used for 'did you mean')."""
    if not timm_available():
        return None
    timm = _import_timm()
    if timm.is_model(name):
        return f"{PREFIX}:{name}"
    close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.8)
    return f"{PREFIX}:{close[0]}" if close else None


register_family(
    PREFIX, TimmExtractor,
    "Any timm model's pooled features, e.g. timm:resnet50, timm:vit_small_patch14_dinov2.lvd142m, "
    "timm:convnext_tiny; weights from the Hugging Face Hub or --weights FILE.",
    is_installed=timm_available, install_hint=INSTALL_HINT, offline_models=cached_hub_models, suggest=_suggest,
)
