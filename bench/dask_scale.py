"""The client's memory on Dask with many cached vectors: ``imgclust run`` with the default settings.

Puts ``--n`` vectors (default 500,000 of 1,200 values, 20 clusters drawn around random centres)
straight into an embedding cache through the store API, one per file of a folder of tiny files
(one sub-folder per drawn cluster, so the run is scored), with their quality measurements, so that
the runs find everything cached. Then runs, one after the other:

    imgclust run DIR --out OUT --features pixels --size 20 --cache CACHE -q                       (local)
    imgclust run DIR --out OUT --features pixels --size 20 --cache CACHE -q --backend dask --workers 2

and prints each run's wall time, the peak resident memory of the process that ran the command
(``ru_maxrss`` of that process alone: on Dask the client, not its workers), as a share of the
vectors' size and per image, the largest sum of the workers' resident memory seen (sampled every
0.2 s), and whether the two runs found the same k and the same clusters (adjusted Rand index of the
two assignments.csv). Every run computes every stage: the results cache is emptied before each.

    PYTHONPATH=src python bench/dask_scale.py [--n 500000] [--dim-side 20] [--skip-local] [--keep DIR]

``--blocks`` instead times, in this process, what a worker does per block of 16,384 rows of
1,280 values (Lite0's width) in each pass over all rows of a default run (the search of the
20,000-row sample by the rows outside it, the cluster sums, the distances to the centres, the
map's projection; the clean checks' sum, projection, and search of an index over ``--index-rows``
projected rows with the ranking of the candidates): what docs/cluster.md's 10-million-image
estimate rests on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from imgclust.cache import EmbeddingCache, stat_key
from imgclust.clean.quality import N_STATS
from imgclust.clean.stage import open_stats_cache
from imgclust.features import get_extractor
from imgclust.io.discover import discover
from imgclust.io.duplicates import find_duplicates
from imgclust.metrics import evaluate
from imgclust.store import FileDigests

CLUSTERS = 20
BATCH = 20_000

# Runs the CLI in this process and writes this process's own peak RSS (KiB) to the file named by argv[1].
RUNNER = """
import resource, sys
out = sys.argv.pop(1)
sys.argv[0] = "imgclust"
from imgclust.cli import main
try:
    main()
finally:
    with open(out, "w") as fh:
        fh.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def make_folder(root: Path, n: int) -> None:
    """n tiny files (never decoded: every vector and measurement is cached), one folder per cluster."""
    for c in range(CLUSTERS):
        (root / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"c{i % CLUSTERS:02d}" / f"{i:07d}.png").write_bytes(b"%d\n" % i)


def fill_cache(images: Path, cache: Path, side: int, seed: int) -> int:
    """Store every file's vector and quality measurements; returns the vectors' size in bytes."""
    extractor = get_extractor("pixels", size=side)
    store = EmbeddingCache(cache, extractor.cache_id(), extractor.dim, extractor.name)
    stats_store = open_stats_cache(cache, extractor.draft_size)
    assert stats_store is not None
    records = discover(images)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.8, (CLUSTERS, extractor.dim)).astype(np.float32)
    for s in range(0, len(records), BATCH):
        part = records[s:s + BATCH]
        keys = [stat_key(r) for r in part]
        cluster = np.array([int(r.path.parent.name[1:]) for r in part])
        X = centres[cluster] + rng.normal(0, 0.08, (len(part), extractor.dim)).astype(np.float32)
        store.put_many(keys, X)
        S = np.empty((len(part), N_STATS), np.float32)
        S[:, :9] = [256, 256, 120, 20, 230, 50, 7, 1, 10]  # an ordinary photo: no quality flag
        S[:, 9:13] = rng.integers(0, 1 << 16, (len(part), 4))  # perceptual hash words: all different
        S[:, 13:] = rng.uniform(0, 255, (len(part), N_STATS - 13))
        stats_store.put_many(keys, S)
    find_duplicates(records, digests=FileDigests(cache))  # the files' digests, as a first run remembers them
    return len(records) * extractor.dim * 4


def tree_rss(pid: int) -> tuple[int, int]:
    """(this process's RSS, the sum of its descendants' RSS), bytes."""
    import psutil

    try:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        children = sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0, 0
    return own, children


def timed_run(args: list[str]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".rss", delete=False) as fh:
        rss_file = fh.name
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, rss_file, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak_workers = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak_workers
        while not done.is_set():
            peak_workers = max(peak_workers, tree_rss(proc.pid)[1])
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    if proc.returncode != 0:
        sys.exit(f"imgclust {' '.join(args)} exited {proc.returncode}:\n{err[-3000:]}")
    peak = int(Path(rss_file).read_text()) * 1024
    os.unlink(rss_file)
    return {"seconds": seconds, "peak_rss": peak, "workers_rss": peak_workers}


def clusters(out: Path) -> np.ndarray:
    with open(out / "assignments.csv", encoding="utf-8", newline="") as fh:
        return np.array([int(r["cluster"]) for r in csv.DictReader(fh) if r["cluster"] != ""])


def block_costs(seed: int = 0, k: int = 20, repeat: int = 3, index_rows: int = 1_000_000) -> None:
    """Seconds per block of BLOCK_ROWS x 1,280 rows for each pass a worker runs (best of ``repeat``).

    The clean checks' search runs against an index over ``index_rows`` projected rows (its cost per
    query grows with the rows in the lists it visits, about sqrt(n)), and ranks each row's candidates
    reading their vectors from an array here (on a cluster: from the store; counted and printed).
    """
    from imgclust.clean import stage
    from imgclust.cluster import rows as rows_module
    from imgclust.cluster.spectral import SAMPLE_SIZE, SampleSearch, _search_block
    from imgclust.neighbors import PROJECT_DIMS, IVFBuilder, ivf_sample_rows, leading_directions, unit_rows
    from imgclust.outputs.report import _project_block

    rng = np.random.default_rng(seed)
    d, b = 1280, rows_module.BLOCK_ROWS
    centres = rng.normal(0, 1, (k, d)).astype(np.float32)
    sample = centres[rng.integers(0, k, SAMPLE_SIZE)] + rng.normal(0, 0.7, (SAMPLE_SIZE, d)).astype(np.float32)
    block = centres[rng.integers(0, k, b)] + rng.normal(0, 0.7, (b, d)).astype(np.float32)
    t0 = time.perf_counter()
    search = SampleSearch(unit_rows(sample), None, seed, 10)
    build = time.perf_counter() - t0
    labels = rng.integers(0, k, b)
    centers = centres.copy()
    mean, axes = sample.mean(axis=0, dtype=np.float64), rng.normal(0, 1, (2, d))
    outside = np.ones(b, dtype=bool)
    # The clean checks' index: index_rows projected rows drawn like the block's (built here, not timed per block).
    mean32 = mean.astype(np.float32)
    P = leading_directions(stage._centre(sample, mean32)[0], PROJECT_DIMS, seed=seed)
    t0 = time.perf_counter()
    train, queries = ivf_sample_rows(index_rows, seed)

    def projected(n: int) -> np.ndarray:
        rows = centres[rng.integers(0, k, n)] + rng.normal(0, 0.7, (n, d)).astype(np.float32)
        return stage._projected_block(0, rows, mean32, P)[0]

    builder = IVFBuilder(index_rows, projected(index_rows if train is None else len(train)), projected(len(queries)),
                         seed=seed, n_neighbors=40, half_precision=True)
    builder.add(stage._projected_block(0, block, mean32, P)[0])  # the timed block is rows 0.. of the index
    for start in range(b, index_rows, BATCH):
        builder.add(projected(min(BATCH, index_rows - start)))
    index = builder.finish()
    index_build = time.perf_counter() - t0
    reads = [0]

    def read(idx: np.ndarray) -> np.ndarray:  # the candidates' rows (drawn: their cost is the reading)
        reads[0] += len(idx)
        return block[np.asarray(idx) % b]

    passes = {
        "search the sample": lambda: _search_block(0, block, outside, search),
        "cluster sums": lambda: rows_module._sums_block(0, block, labels, k),
        "distances": lambda: rows_module._sq_distances_block(0, block, labels, centers),
        "map projection": lambda: _project_block(0, block, mean, axes),
        "clean: sum (mean)": lambda: stage._sum_block(0, block),
        "clean: projection": lambda: stage._projected_block(0, block, mean32, P),
        "clean: search, rank": lambda: stage._search_block(0, block, mean32, P, index, 40, 20, read),
    }
    print(f"the sample's index (client, once): {build:.2f} s; {search.info()}")
    print(f"the clean checks' index over {index_rows:,} projected rows (client, once; drawing the rows included): "
          f"{index_build:.1f} s, nlist {index.nlist}, nprobe {index.nprobe}, recall {index.recall:.3f}")
    print(f"per block of {b:,} x {d} float32 ({b * d * 4 / 2**20:.0f} MiB), one process:")
    total = 0.0
    for name, fn in passes.items():
        reads[0] = 0
        best = min(_timed(fn) for _ in range(repeat))
        total += best
        extra = f"  (reads the vectors of {reads[0] // repeat:,} candidate rows)" if reads[0] else ""
        print(f"  {name:<22}{best:>8.3f} s{extra}")
    print(f"  {'all passes':<22}{total:>8.3f} s")


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--dim-side", type=int, default=20, help="pixels --size: vectors of 3 x side^2 values")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (reused when it holds the files)")
    ap.add_argument("--blocks", action="store_true", help="time each pass over one block instead (no runs)")
    ap.add_argument("--index-rows", type=int, default=1_000_000,
                    help="--blocks: rows of the clean checks' index the block is searched against")
    args = ap.parse_args()
    if args.blocks:
        block_costs(args.seed, index_rows=args.index_rows)
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="imgclust-dask-scale-"))
    images, cache = work / "images", work / "cache"
    try:
        t0 = time.perf_counter()
        ready = work / "ready.json"
        if ready.is_file() and json.loads(ready.read_text()) == [args.n, args.dim_side, args.seed]:
            vector_bytes = args.n * 3 * args.dim_side ** 2 * 4
        else:
            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            make_folder(images, args.n)
            vector_bytes = fill_cache(images, cache, args.dim_side, args.seed)
            ready.write_text(json.dumps([args.n, args.dim_side, args.seed]))
        print(f"{args.n:,} files, {args.n:,} cached vectors of {3 * args.dim_side ** 2} values: "
              f"{vector_bytes / 2**30:.2f} GiB of vectors (setup {time.perf_counter() - t0:.0f} s)", flush=True)
        base = ["run", str(images), "--features", "pixels", "--size", str(args.dim_side), "--cache", str(cache), "-q"]
        runs = {}
        # Each run computes every stage: the results an earlier run kept (the clustering, the clean checks) are
        # removed first, the vectors and measurements stay cached.
        if not args.skip_local:
            shutil.rmtree(work / "out-local", ignore_errors=True)
            shutil.rmtree(cache / "results", ignore_errors=True)
            runs["local"] = timed_run([*base, "--out", str(work / "out-local")])
        shutil.rmtree(work / "out-dask", ignore_errors=True)
        shutil.rmtree(cache / "results", ignore_errors=True)
        runs["dask, 2 workers"] = timed_run([*base, "--out", str(work / "out-dask"), "--backend", "dask",
                                             "--workers", "2"])
        print(f"{'run':<18}{'wall s':>9}{'peak RSS GiB':>14}{'/ vectors':>11}{'B / image':>11}{'workers GiB':>13}"
              f"{'k':>4}")
        for name, r in runs.items():
            out = work / ("out-local" if name == "local" else "out-dask")
            summary = json.loads((out / "summary.json").read_text())
            workers = f"{r['workers_rss'] / 2**30:.2f}" if r["workers_rss"] else "-"
            print(f"{name:<18}{r['seconds']:>9.1f}{r['peak_rss'] / 2**30:>14.2f}{r['peak_rss'] / vector_bytes:>11.2f}"
                  f"{r['peak_rss'] / args.n:>11.0f}{workers:>13}{summary['k']:>4}")
            print(f"    stages: {summary['timings']}; from the results cache: {summary.get('results_cached')}")
        if "local" in runs:
            ari = evaluate(clusters(work / "out-local"), clusters(work / "out-dask"))["ari"]
            print(f"same clusters as the local run: adjusted Rand index {ari:.6f}")
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
