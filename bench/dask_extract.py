"""Extraction throughput on this machine: local, and Dask LocalClusters of 1 and 2 workers, in one run.

Also measures what the 10-million-image estimate in docs/cluster.md rests on: the time one worker
takes to assign one k-means chunk (32,768 x 1,280 float32 vectors) and the bytes per stored vector.

    PYTHONPATH=src python bench/dask_extract.py [--n 300] [--features efficientnet-lite0] [--workers 1,2]

Each configuration embeds the same images into its own empty vector store (nothing is cached
between them). Startup (starting the workers and loading the network on each) is timed apart from
the extraction itself, which is what "throughput" means below.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _datasets import DATASETS
from imgclust.backends.dask import CHUNK_ROWS, DaskBackend, worker_extractor
from imgclust.backends.local import LocalBackend
from imgclust.cache import EmbeddingCache
from imgclust.cluster.kmeans import ArrayAssigner
from imgclust.config import RunConfig
from imgclust.features import get_extractor
from imgclust.io.discover import attach_labels, discover

DATASET = DATASETS / "dogs-vs-cats-1000"


def pick(dataset: Path, n: int) -> list:
    """n images, the same number from each class folder, in a fixed order."""
    records, _ = attach_labels(discover(dataset), "folder")
    by_label: dict[str, list] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    per = n // len(by_label)
    return [r for label in sorted(by_label) for r in by_label[label][:per]]


def load_network(features: str, options: dict, cache_id: str) -> None:
    """Runs on each worker: build the extractor and run the network once, so startup is not timed as work."""
    extractor = worker_extractor(features, options, cache_id)
    extractor.embed(extractor.prepare(Image.new("RGB", (64, 64)))[None])


def timed_extract(backend, records, extractor, config) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="imgclust-bench-store-") as store:
        cache = EmbeddingCache(store, extractor.cache_id(), extractor.dim, extractor.name)
        t0 = time.perf_counter()
        ex = backend.extract(records, extractor, config, cache=cache)
        seconds = time.perf_counter() - t0
    return seconds, ex.n_computed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=DATASET, help="a labelled folder (default: %(default)s)")
    ap.add_argument("--n", type=int, default=300, help="images (half cats, half dogs)")
    ap.add_argument("--features", default="efficientnet-lite0")
    ap.add_argument("--workers", default="1,2", help="Dask worker counts to try")
    ap.add_argument("--k", type=int, default=100, help="clusters for the k-means chunk timing")
    args = ap.parse_args()
    if not args.dataset.is_dir():
        print(f"SKIP: {args.dataset} not found (see shared/datasets/MANIFEST.md; or pass --dataset)")
        return 0
    records = pick(args.dataset, args.n)
    config = RunConfig(features=args.features, batch_size=32)
    extractor = get_extractor(config.features, **config.feature_options)
    cache_id = extractor.cache_id()
    print(f"{len(records)} images of {args.dataset.name}, {args.features} ({extractor.dim}-d)")

    rows = []
    # This process's own extractor, its network loaded before the clock starts, like the workers'.
    load_network(config.features, config.feature_options, cache_id)
    warm = worker_extractor(config.features, config.feature_options, cache_id)
    seconds, n = timed_extract(LocalBackend(), records, warm, config)
    rows.append(("local (no Dask)", 0.0, seconds, n))
    for w in [int(x) for x in args.workers.split(",")]:
        t0 = time.perf_counter()
        with DaskBackend(workers=w) as backend:
            backend.client.run(load_network, config.features, config.feature_options, cache_id)
            startup = time.perf_counter() - t0
            seconds, n = timed_extract(backend, records, extractor, config)
        rows.append((f"dask, {w} worker{'s' if w > 1 else ''}", startup, seconds, n))

    print(f"{'where':<18} {'startup s':>10} {'extract s':>10} {'images/s':>10}")
    for name, startup, seconds, n in rows:
        print(f"{name:<18} {startup:>10.1f} {seconds:>10.1f} {n / seconds:>10.2f}")
    dask_rows = {name: n / s for name, _, s, n in rows if name.startswith("dask")}
    if "dask, 1 worker" in dask_rows and "dask, 2 workers" in dask_rows:
        print(f"2 workers / 1 worker throughput: {dask_rows['dask, 2 workers'] / dask_rows['dask, 1 worker']:.2f}x")

    # The numbers behind the 10-million-image estimate.
    rng = np.random.default_rng(0)
    chunk = rng.normal(size=(CHUNK_ROWS, extractor.dim)).astype(np.float32)
    centers = chunk[rng.choice(CHUNK_ROWS, args.k, replace=False)]
    assigner = ArrayAssigner(chunk, chunk_size=CHUNK_ROWS)
    assigner.assign(centers)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        assigner.assign(centers)
        times.append(time.perf_counter() - t0)
    print(f"k-means: assign one chunk of {CHUNK_ROWS} x {extractor.dim} vectors to k={args.k} centres: "
          f"{min(times):.3f} s (best of 3)")
    print(f"store: {extractor.dim * 4} bytes per vector (float32) + key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
