"""The default method at scale, against k-means, side by side in one run.

Two kinds of data, built from the real EfficientNet-Lite0 vectors of the shared Imagenette set
(``/work/vectors/imagenette-val-3000.npz`` or ``--vectors``: arrays ``X`` float32 and ``labels``):

- ``copies``: each of the 3,000 vectors repeated to n rows with small random noise (per row a
  Gaussian of norm ``--noise`` (default 0.05) times the vector's norm: cosine about 0.999 to the
  original), as a photo library with bursts, re-saves and copies is. Labels are the originals'.
- ``draws``: no copies: the 3,000 real vectors, then Gaussian draws around each class mean with the
  class's own per-dimension spread (clipped at 0, as the network's pooled features are). Labels are
  the classes.

At every n of ``--sizes`` (default 10,000, 100,000 and 1,000,000) the rows are written in chunks to
a memory-mapped ``.npy`` under ``--tmp`` (deleted at the end) and every method clusters it in its
own child process (so the peak RSS is that fit's alone), at k = ``--k`` (default: the 10 classes),
or with ``--auto`` chooses k over 2-30. Printed per row: seconds, peak RSS, the vectors' size,
the child's CPU seconds (user + system, whole process:
the figure to read on a busy machine, where wall time counts other people's work), one-to-one
(Hungarian) accuracy, NMI, the k, and the default method's graph sample and collapsed
near-duplicate groups. Methods: ``spectral`` (the default method), ``kmeans``, and
``spectral-exact`` (the method before this benchmark: every row a node of an exact graph, no
near-duplicate groups; quadratic, so only at n <= 50,000).

Goals (2 cores): 1M x 1280 at k = 100 in <= 10 min with peak RSS <= 2x the vectors' size; automatic
k at 1M <= 15 min; the near-duplicate 50,000 set >= 0.95 one-to-one.

Run from the repository root:
    PYTHONPATH=src python bench/scale.py --sizes 10000,50000 --data copies
    PYTHONPATH=src python bench/scale.py --sizes 1000000 --k 100 --methods spectral,kmeans
    PYTHONPATH=src python bench/scale.py --sizes 1000000 --data draws --k 100 --methods spectral,spectral:auto
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DEFAULT_VECTORS = "/work/vectors/imagenette-val-3000.npz"
CHUNK = 50_000
EXACT_UP_TO = 50_000


def copies(X: np.ndarray, y: np.ndarray, n: int, noise: float, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of n rows: every original repeated (shuffled), plus relative Gaussian noise."""
    rng = np.random.default_rng(seed)
    item = rng.permutation(np.resize(np.arange(len(X)), n))
    norms = np.linalg.norm(X, axis=1)
    for start in range(0, n, CHUNK):
        it = item[start:start + CHUNK]
        scale = (noise * norms[it] / np.sqrt(X.shape[1]))[:, None].astype(np.float32)
        yield X[it] + rng.standard_normal((len(it), X.shape[1]), dtype=np.float32) * scale, y[it]


def draws(X: np.ndarray, y: np.ndarray, n: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of n rows: the real vectors, then Gaussian draws around the class means (no copies)."""
    rng = np.random.default_rng(seed)
    names = np.unique(y)
    means = np.stack([X[y == c].mean(axis=0) for c in names])
    spread = np.stack([X[y == c].std(axis=0) for c in names])
    head = min(n, len(X))
    yield X[:head], y[:head]
    for start in range(head, n, CHUNK):
        m = min(CHUNK, n - start)
        c = rng.integers(len(names), size=m)
        rows = means[c] + rng.standard_normal((m, X.shape[1]), dtype=np.float32) * spread[c]
        yield np.maximum(rows, 0.0).astype(np.float32), names[c]


def write_memmap(path: Path, chunks: Iterator[tuple[np.ndarray, np.ndarray]], n: int, d: int) -> np.ndarray:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    labels = []
    at = 0
    for rows, lab in chunks:
        out[at:at + len(rows)] = rows
        labels.append(lab)
        at += len(rows)
    out.flush()
    del out
    return np.concatenate(labels)


def peak_rss_gb() -> float:
    """This process's peak resident memory: VmHWM of /proc/self/status. Not getrusage's ru_maxrss:
    a child started by subprocess (vfork, then exec) inherits the parent's peak there, and the parent
    has just written the vectors through a memory map."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def child(args: argparse.Namespace) -> None:
    """One fit in this process: print a JSON line with its time, peak RSS and scores."""
    from imgclust.cluster import cluster
    from imgclust.cluster.choose_k import choose_k
    from imgclust.metrics import confusion

    X = np.load(args.data, mmap_mode="r", allow_pickle=False)
    y = np.load(args.labels, allow_pickle=False)
    method, options = args.method, {}
    auto = args.auto or method.endswith(":auto")
    method = method.removesuffix(":auto")
    if method == "spectral-exact":
        method, options = "spectral", {"sample_size": len(X), "duplicate_radius": None}
    t0 = time.perf_counter()
    if auto:
        choice = choose_k(X, (2, 30), method=method, seed=0, **options)
        result, k_sample = choice.result, choice.sample_size
    else:
        result, k_sample = cluster(X, args.k, method=method, seed=0, **options), None
    seconds = time.perf_counter() - t0
    info = result.info
    conf = confusion(y, result.labels)
    print(json.dumps({
        "seconds": seconds, "cpu_seconds": (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_SELF)),
        "peak_rss_gb": peak_rss_gb(),
        "acc": conf.accuracy_hungarian(), "nmi": conf.nmi(), "k": result.k,
        "k_sample": k_sample, "sample": info.get("sample_size"), "nodes": info.get("graph_nodes"),
        "components": info.get("graph_components"),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated n")
    ap.add_argument("--data", default="copies,draws", help="copies, draws or both")
    ap.add_argument("--methods", default="spectral,kmeans",
                    help="spectral, kmeans, spectral-exact; NAME:auto chooses k over 2-30 with that method")
    ap.add_argument("--k", type=int, default=0, help="clusters (default: the number of classes)")
    ap.add_argument("--auto", action="store_true", help="choose k automatically over 2-30")
    ap.add_argument("--noise", type=float, default=0.05, help="relative noise of the copies")
    ap.add_argument("--vectors", default=DEFAULT_VECTORS)
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the memory-mapped vectors")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per fit")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--labels", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not Path(args.vectors).is_file():
        sys.exit(f"skipped: {args.vectors} not found (Lite0 vectors of imagenette-val-3000: arrays X, labels).")
    src = np.load(args.vectors, allow_pickle=False)
    X, y = np.asarray(src["X"], dtype=np.float32), np.asarray(src["labels"]).astype(str)
    k = args.k or len(np.unique(y))
    print(f"source {args.vectors}: {X.shape[0]} x {X.shape[1]}, {len(np.unique(y))} classes; "
          f"{'automatic k (2-30)' if args.auto else f'k = {k}'}; {os.cpu_count()} CPUs")
    print(f"{'data':7} {'n':>8} {'method':15} {'seconds':>8} {'CPU s':>7} {'peak RSS':>9} {'vectors':>8} {'RSS/vec':>7} "
          f"{'acc 1:1':>7} {'NMI':>6} {'k':>4} {'sample':>7} {'nodes':>6} {'comps':>5}")
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="imgclust-scale-") as tmp:
        for kind in args.data.split(","):
            for n in [int(s) for s in args.sizes.split(",")]:
                data, labels = Path(tmp) / "X.npy", Path(tmp) / "y.npy"
                chunks = copies(X, y, n, args.noise, seed=1) if kind == "copies" else draws(X, y, n, seed=1)
                np.save(labels, write_memmap(data, chunks, n, X.shape[1]))
                size_gb = n * X.shape[1] * 4 / 1024**3
                for method in args.methods.split(","):
                    if method == "spectral-exact" and n > EXACT_UP_TO:
                        continue
                    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--labels", str(labels),
                           "--method", method, "--k", str(k)] + (["--auto"] if args.auto else [])
                    try:
                        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True)
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                    except subprocess.TimeoutExpired:
                        print(f"{kind:7} {n:>8} {method:15} timed out after {args.timeout:.0f} s", flush=True)
                        continue
                    except subprocess.CalledProcessError as e:
                        print(f"{kind:7} {n:>8} {method:15} failed: {e.stderr.strip().splitlines()[-1:]}", flush=True)
                        continue
                    print(f"{kind:7} {n:>8} {method:15} {r['seconds']:8.1f} {r['cpu_seconds']:7.1f} {r['peak_rss_gb']:8.2f}G {size_gb:7.2f}G "
                          f"{r['peak_rss_gb'] / size_gb:7.2f} {r['acc']:7.4f} {r['nmi']:6.3f} {r['k']:>4} "
                          f"{r['sample'] or '':>7} {r['nodes'] or '':>6} {r['components'] or '':>5}"
                          + (f"  (k chosen on {r['k_sample']} rows)" if r["k_sample"] else ""), flush=True)
                data.unlink()


if __name__ == "__main__":
    main()
