"""The embedding store at scale: the store alone, and a large folder end to end (first run, cached rerun).

Three measurements, each printed with its time and peak RSS (resident memory, high-water mark):

``store``: put ``--vectors`` vectors of ``--dim`` float32 values (default 1,000,000 x 1280, 5.1 GB on
    disk) in batches of ``--batch``, then read ``--reads`` random keys (one ``get_many``) in a fresh
    process, as a run would.
``keys``: the key count: index ``--keys`` keys (default 10,000,000) of tiny vectors (dim 8), then
    look up 100,000 random ones in a fresh process.
``folder``: draw ``--n`` small image files (default 200,000) in a temporary folder, then
    ``imgclust run DIR --features pixels --size S --k auto`` (the default method, or ``--method M``)
    twice with a fresh ``--cache``: the first run (every file decoded, every result computed), and
    the cached rerun (every vector from the store, the results of the same vectors and settings from
    the results cache). Printed side by side: wall time of each (process start to exit), their ratio
    (goal: rerun at most 10% of the first), each run's peak RSS (goal at most 3 GB), stage timings
    and what the rerun took from the results cache.

Everything is written under a temporary folder in /tmp (``--tmp`` to choose) and deleted at the end.

Run from the repository root (each part alone with --part):
    PYTHONPATH=src python bench/store.py --part store
    PYTHONPATH=src python bench/store.py --part keys
    PYTHONPATH=src python bench/store.py --part folder --n 200000
    PYTHONPATH=src python bench/store.py --vectors 100000 --keys 1000000 --n 20000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Run a child process; (wall seconds, its own peak RSS in GB, its stdout). Exits on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = next((int(line.split()[1]) / 2**20 for line in proc.stdout.splitlines()[::-1]
                 if line.startswith("PEAK_RSS_KB ")), float("nan"))
    return seconds, peak, proc.stdout


# The children print their own peak RSS (ru_maxrss of RUSAGE_SELF, KB on Linux) as their last line.
PEAK = "import resource; print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"

WRITE = textwrap.dedent("""
    import hashlib, sys, time
    import numpy as np
    from imgclust.store import VectorStore
    def key(i):  # random-looking, like the real keys (digests): no insertion in key order
        return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest()
    folder, n, dim, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = VectorStore(folder, dim)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        m = min(batch, n - s)
        store.put_many([key(i) for i in range(s, s + m)], rng.random((m, dim), dtype=np.float32))
    print("SECONDS", time.perf_counter() - t0)
""")

READ = textwrap.dedent("""
    import hashlib, sys, time
    import numpy as np
    from imgclust.store import VectorStore
    def key(i):
        return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest()
    folder, n, dim, reads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    idx = np.random.default_rng(1).choice(n, size=min(reads, n), replace=False)
    keys = [key(int(i)) for i in idx]
    t0 = time.perf_counter()
    store = VectorStore(folder, dim)
    X = store.get_many(keys)
    seconds = time.perf_counter() - t0
    assert X.shape == (len(keys), dim) and X.dtype == np.float32 and np.isfinite(X).all()
    print("SECONDS", seconds)
""")


def _seconds(out: str) -> float:
    return next(float(line.split()[1]) for line in out.splitlines() if line.startswith("SECONDS "))


def bench_store(tmp: Path, n: int, dim: int, batch: int, reads: int, label: str) -> None:
    folder = tmp / f"store-{label}"
    wall, peak, out = run_child([sys.executable, "-c", WRITE + PEAK, str(folder), str(n), str(dim), str(batch)])
    put = _seconds(out)
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e9
    index = sum(p.stat().st_size for p in folder.glob("index.sqlite*")) / 1e9
    print(f"  put {n:,} x {dim} in batches of {batch}: {put:.1f} s ({n / put:,.0f} vectors/s; includes drawing "
          f"them), peak RSS {peak:.2f} GB; on disk {size:.2f} GB (index {index:.2f} GB, "
          f"{index * 1e9 / n:.0f} bytes/key)")
    wall, peak, out = run_child([sys.executable, "-c", READ + PEAK, str(folder), str(n), str(dim), str(reads)])
    print(f"  read {min(reads, n):,} random keys in a fresh process: {_seconds(out):.2f} s "
          f"(process {wall:.1f} s), peak RSS {peak:.2f} GB "
          f"(the vectors read: {min(reads, n) * dim * 4 / 1e9:.2f} GB)")
    shutil.rmtree(folder)


DRAW = textwrap.dedent("""
    import sys
    import numpy as np
    from PIL import Image
    root, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import os
    colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40), (160, 40, 200)]
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        c = i % len(colours)
        folder = os.path.join(root, f"d{i // 1000:04d}")
        os.makedirs(folder, exist_ok=True)
        pixels = np.clip(np.array(colours[c], np.int16) + rng.integers(-40, 40, (24, 24, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"img_{i:07d}.png"))
""")


def bench_folder(tmp: Path, n: int, size: int, method: str | None, ks: list[str], images: Path | None = None) -> None:
    if images is None:
        images = tmp / "images"
        t0 = time.perf_counter()
        half = n // 2
        drawers = [subprocess.Popen([sys.executable, "-c", DRAW, str(images), str(a), str(b)], env=ENV)
                   for a, b in ((0, half), (half, n))]
        if any(p.wait() != 0 for p in drawers):
            raise SystemExit("drawing the images failed")
        print(f"  drew {n:,} PNG files of 24x24 pixels in {time.perf_counter() - t0:.0f} s")
    else:
        print(f"  the images of {images} (not drawn, not deleted)")
    for k in ks:
        print(f"  --k {k} (a fresh --cache):")
        args = [sys.executable, "-c", "import sys; from imgclust.cli import main\ntry:\n    main()\nfinally:\n    " + PEAK,
                "run", str(images), "--features", "pixels", "--size", str(size), "--k", k,
                *(["--method", method] if method else []), "--cache", str(tmp / f"cache-{k}"), "-q"]
        results = []
        for name in ("first run", "cached rerun"):
            out_dir = tmp / name.replace(" ", "-")
            wall, peak, out = run_child([*args, "--out", str(out_dir)])
            summary = json.loads((out_dir / "summary.json").read_text())
            results.append((name, wall, peak, summary))
            shutil.rmtree(out_dir)
        for name, wall, peak, s in results:
            stages = ", ".join(f"{stage} {v:.1f}s" for stage, v in s["timings"].items())
            print(f"    {name:12s} {wall:7.1f} s  peak RSS {peak:.2f} GB  k={s['k']}  vectors computed "
                  f"{s['n_vectors_computed']:,}, from cache {s['n_vectors_cached']:,}; results from cache: "
                  f"{', '.join(s.get('results_cached', [])) or 'none'}  ({stages})")
        (_, t1, p1, s1), (_, t2, p2, s2) = results
        print(f"    cached rerun / first run = {t2:.1f} s / {t1:.1f} s = {t2 / t1:.1%} (goal <= 10%); "
              f"peak RSS {max(p1, p2):.2f} GB (goal <= 3 GB); load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["store", "keys", "folder", "all"], default="all")
    ap.add_argument("--vectors", type=int, default=1_000_000, help="vectors put in the store part")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--batch", type=int, default=1024, help="vectors per put_many")
    ap.add_argument("--reads", type=int, default=100_000, help="random keys read back")
    ap.add_argument("--keys", type=int, default=10_000_000, help="keys indexed in the key-count part (dim 8)")
    ap.add_argument("--n", type=int, default=200_000, help="image files drawn for the folder part")
    ap.add_argument("--size", type=int, default=16, help="--size of the pixels features (dim = 3 size^2)")
    ap.add_argument("--method", default=None, help="--method of both runs (default: imgclust's default method)")
    ap.add_argument("--k", default="auto", help="--k of the folder runs; several, comma-separated, run one "
                    "after the other on the same drawn folder (e.g. auto,10)")
    ap.add_argument("--images", type=Path, default=None, help="use this folder for the folder part instead of "
                    "drawing --n files (e.g. one kept from an earlier run); it is not deleted")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imgclust-bench-store-", dir=a.tmp))
    try:
        if a.part in ("store", "all"):
            print(f"store alone: {a.vectors:,} vectors of {a.dim} float32")
            bench_store(tmp, a.vectors, a.dim, a.batch, a.reads, "vectors")
        if a.part in ("keys", "all"):
            print(f"key count: {a.keys:,} keys of dim-8 vectors")
            bench_store(tmp, a.keys, 8, 10_000, 100_000, "keys")
        if a.part in ("folder", "all"):
            print(f"folder end to end: {a.n if a.images is None else 'the'} files, --features pixels --size {a.size} "
                  f"--k {a.k} --method {a.method or 'default'}")
            bench_folder(tmp, a.n, a.size, a.method, a.k.split(","), a.images)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
