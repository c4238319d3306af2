"""Extraction throughput, side by side in one run: ours against the original loop and the hardware limit.

Prints images/s for
  (a) ours end to end: file path -> vector through ``imgclust.features.extract.extract`` (no cache):
      batched ONNX Runtime, decoding and resizing in threads overlapped with the network, draft() JPEGs;
  (b) the original method's loop: decode the full image, resize, one eager PyTorch forward per image;
  (c) the network alone on pre-decoded 224x224 batches (uint8 pixels) with the fastest runtime (the limit);
  (d) decoding + resizing alone, one thread (to show how much work (a) overlaps with the network);
and the ratios a/c (goal >= 0.8) and a/b (goal >= 3). Then (a) again on a folder of large photos
(4000x3000 JPEGs made in a temporary folder by upscaling real ones).

Run from the repository root:
    PYTHONPATH=src python bench/extract.py                 # all 1000 images, 100 large photos
    PYTHONPATH=src python bench/extract.py --n 200 --large 20   # quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgclust.features import get_extractor
from imgclust.features.extract import default_threads, extract
from imgclust.io.discover import discover

REPO = Path(__file__).resolve().parents[1]
# The checkout sits next to shared/ (or one level deeper, in a worktree folder).
DEFAULT_DATASET = next((p / "shared" / "datasets" / "dogs-vs-cats-1000" for p in (REPO.parent, REPO.parent.parent)
                        if (p / "shared" / "datasets").is_dir()), REPO.parent / "shared" / "datasets" / "dogs-vs-cats-1000")


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_ours(records: list, extractor, batch_size: int, decode_threads: int | None) -> float:
    t0 = time.perf_counter()
    ex = extract(records, extractor, cache=None, batch_size=batch_size, decode_threads=decode_threads)
    seconds = time.perf_counter() - t0
    if ex.n_computed != len(records):
        raise SystemExit(f"only {ex.n_computed} of {len(records)} images were embedded")
    return rate(len(records), seconds)


def predecode(records: list, extractor, batch_size: int) -> tuple[list[np.ndarray], float]:
    """(pre-decoded 224x224 input batches, decode+resize images/s on one thread)."""
    from imgclust.io.decode import decode

    t0 = time.perf_counter()
    inputs = [extractor.prepare(decode(r.path, draft_size=extractor.draft_size).image) for r in records]
    decode_rate = rate(len(records), time.perf_counter() - t0)
    return [np.stack(inputs[s:s + batch_size]) for s in range(0, len(inputs), batch_size)], decode_rate


def bench_network(batches: list[np.ndarray], extractor) -> float:
    t0 = time.perf_counter()
    for b in batches:
        extractor.embed(b)
    return rate(sum(len(b) for b in batches), time.perf_counter() - t0)


def bench_original(records: list, extractor) -> float:
    """The original method: full decode, resize, scale in NumPy, one eager PyTorch forward per image."""
    import torch

    from imgclust.features.efficientnet import MEAN, STD, build_reference_network

    torch.set_num_threads(default_threads())
    net = build_reference_network(extractor.name)
    with torch.inference_mode():
        net.extract_features(torch.zeros(1, 3, extractor.image_size, extractor.image_size))  # warm-up
        t0 = time.perf_counter()
        for r in records:
            with Image.open(r.path) as img:
                pixels = extractor.prepare(img.convert("RGB"))
            x = ((pixels.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)[None]
            net.extract_features(torch.from_numpy(np.ascontiguousarray(x))).mean(dim=(2, 3))
    return rate(len(records), time.perf_counter() - t0)


def make_large_photos(records: list, n: int, folder: Path, size: tuple[int, int] = (4000, 3000)) -> None:
    for i, r in enumerate(records[:n]):
        with Image.open(r.path) as img:
            img.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(folder / f"large_{i:04d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--n", type=int, default=1000, help="images for (a), (c), (d) (default 1000)")
    ap.add_argument("--n-original", type=int, default=200, help="images for the slow loop (b) (default 200)")
    ap.add_argument("--large", type=int, default=100, help="4000x3000 photos for the large-photo run (0: skip)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--decode-threads", type=int, default=None, help="default: one per core")
    ap.add_argument("--features", default="efficientnet-lite0")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of (c) then (a), interleaved; the best of each is kept (default 3)")
    args = ap.parse_args()
    if not args.dataset.is_dir():
        raise SystemExit(f"dataset not found: {args.dataset} (see shared/datasets/MANIFEST.md)")

    records = [r for r in discover(args.dataset) if r.ok][: args.n]
    with tempfile.TemporaryDirectory(prefix="imgclust-bench-models-") as models:
        extractor = get_extractor(args.features, model_dir=models)
        print(f"{args.features} on {args.dataset.name}: {len(records)} images, batch {args.batch_size}, "
              f"runtime {extractor.runtime}, {default_threads()} cores, load average {os.getloadavg()[0]:.1f}, "
              f"best of {max(1, args.repeat)} for (a) and (c)")
        extractor.embed(extractor.prepare(Image.new("RGB", (64, 64)))[None])  # build + warm
        batches, d = predecode(records, extractor, args.batch_size)
        a = c = 0.0
        for _ in range(max(1, args.repeat)):  # interleaved, so a changing machine load hits both alike
            c = max(c, bench_network(batches, extractor))
            a = max(a, bench_ours(records, extractor, args.batch_size, args.decode_threads))
        b = bench_original(records[: args.n_original], extractor)
        print(f"(a) ours, end to end          {a:8.1f} images/s")
        print(f"(b) original loop (per image) {b:8.1f} images/s  ({min(args.n_original, len(records))} images)")
        print(f"(c) network alone (the limit) {c:8.1f} images/s")
        print(f"(d) decode+resize, 1 thread   {d:8.1f} images/s  (serial a would be {1 / (1 / c + 1 / d):.1f})")
        print(f"a/c = {a / c:.2f}  (goal >= 0.8)")
        print(f"a/b = {a / b:.2f}  (goal >= 3)")
        if args.large > 0:
            with tempfile.TemporaryDirectory(prefix="imgclust-bench-large-") as tmp:
                make_large_photos(records, args.large, Path(tmp))
                large = [r for r in discover(tmp) if r.ok]
                a_large = bench_ours(large, extractor, args.batch_size, args.decode_threads)
                print(f"(a) ours on {len(large)} 4000x3000 JPEGs  {a_large:8.1f} images/s  "
                      f"({a_large / c:.2f} of the limit)")


if __name__ == "__main__":
    main()
