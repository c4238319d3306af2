"""k-means at scale: imgclust's engine against scikit-learn's KMeans, side by side in one run.

Default: 100,000 x 1280 float32 synthetic vectors with cluster structure (seeded), k = 100, the same
number of Lloyd iterations for every engine (tol = 0). Prints fit time and inertia (on all rows) of
  - scikit-learn KMeans(n_init=1, max_iter=ITERS, tol=0)
  - imgclust fit_kmeans(n_init=1, max_iter=ITERS, tol=0) with max_points_per_centroid=256
    (what "auto" picks at this size: iterate on 256 sampled rows per centre, then assign every row)
  - imgclust with max_points_per_centroid=None (every row, every iteration)
  - faiss.Kmeans (same iterations, its default 256 points per centre), for reference
and the ratios sklearn time / ours (goal >= 5) and our inertia / sklearn's (goal within 1%).

--full: 1,000,000 x 1280 float32 (5 GB) written to a temporary .npy, memory-mapped, clustered by
imgclust alone; prints the time and the peak resident memory (goal < 8 GB).

Run from the repository root:
    PYTHONPATH=src python bench/kmeans.py            # 100,000 x 1280
    PYTHONPATH=src python bench/kmeans.py --n 20000  # quick
    PYTHONPATH=src python bench/kmeans.py --full     # 1,000,000 x 1280 from disk
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from imgclust.cluster.kmeans import ArrayAssigner, fit_kmeans


def blobs(n: int, d: int, n_centers: int, seed: int, chunk: int = 50_000) -> Iterator[np.ndarray]:
    """Chunks of a seeded mixture of Gaussians: unequal cluster sizes and spreads, centres that overlap."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, d), dtype=np.float32) * 0.6
    weights = rng.dirichlet(np.full(n_centers, 2.0))
    spread = rng.uniform(0.6, 1.2, n_centers).astype(np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        lab = rng.choice(n_centers, size=m, p=weights)
        yield centers[lab] + rng.standard_normal((m, d), dtype=np.float32) * spread[lab, None]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def inertia_of(X: np.ndarray, centers: np.ndarray) -> float:
    return float(ArrayAssigner(X).assign(np.asarray(centers, np.float32))[1].sum(dtype=np.float64))


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compare(n: int, d: int, k: int, iters: int, seed: int) -> None:
    import faiss
    from sklearn.cluster import KMeans

    X = np.concatenate(list(blobs(n, d, k, seed)))
    print(f"{n:,} x {d} float32, k = {k}, {iters} iterations each (tol = 0), seed {seed}")
    sk, t_sk = timed(lambda: KMeans(n_clusters=k, n_init=1, max_iter=iters, tol=0.0, random_state=seed,
                                    algorithm="lloyd").fit(X))
    ours, t_ours = timed(lambda: fit_kmeans(X, k, seed=seed, n_init=1, max_iter=iters, tol=0.0,
                                            max_points_per_centroid=256))
    exact, t_exact = timed(lambda: fit_kmeans(X, k, seed=seed, n_init=1, max_iter=iters, tol=0.0,
                                              max_points_per_centroid=None))

    def run_faiss() -> np.ndarray:
        km = faiss.Kmeans(d, k, niter=iters, seed=seed, max_points_per_centroid=256)
        km.train(X)
        return km.centroids

    fc, t_faiss = timed(run_faiss)
    rows = [("scikit-learn KMeans(n_init=1)", t_sk, float(sk.inertia_), sk.n_iter_),
            ("imgclust kmeans, 256 rows/centre", t_ours, ours.inertia, ours.n_iter),
            ("imgclust kmeans, every row", t_exact, exact.inertia, exact.n_iter),
            ("faiss.Kmeans (reference)", t_faiss, inertia_of(X, fc), iters)]
    for name, t, inertia, it in rows:
        print(f"  {name:34s} {t:8.2f} s  inertia {inertia:.6g}  iterations {it}")
    print(f"speed-up sklearn / ours (256 rows/centre) = {t_sk / t_ours:.2f}  (goal >= 5)")
    print(f"speed-up sklearn / ours (every row)       = {t_sk / t_exact:.2f}")
    print(f"inertia ours / sklearn = {ours.inertia / sk.inertia_:.4f}  (goal within 1%: 0.99 - 1.01)")
    print(f"peak RSS {peak_rss_gb():.2f} GB")


def full(n: int, d: int, k: int, iters: int, seed: int, folder: Path) -> None:
    path = folder / "vectors.npy"
    t0 = time.perf_counter()
    with open(path, "wb") as fh:  # written chunk by chunk with file writes: never all in memory
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for chunk in blobs(n, d, k, seed):
            fh.write(chunk.tobytes())
    print(f"wrote {n:,} x {d} float32 ({path.stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - t0:.0f} s; "
          f"peak RSS so far {peak_rss_gb():.2f} GB")
    X = np.load(path, mmap_mode="r", allow_pickle=False)
    result, t = timed(lambda: fit_kmeans(X, k, seed=seed, n_init=1, max_iter=iters, tol=0.0))
    print(f"imgclust kmeans (memory-mapped, max_points_per_centroid={result.info['max_points_per_centroid']}): "
          f"{t:.1f} s, inertia {result.inertia:.6g}, {result.n_iter} iterations, sizes {result.sizes.min()}-"
          f"{result.sizes.max()}")
    print(f"peak RSS {peak_rss_gb():.2f} GB  (goal < 8 GB; the data is {path.stat().st_size / 1024**3:.2f} GiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=1280)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="1,000,000 rows from a memory-mapped file (5 GB on disk)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the --full data file (default: system temp)")
    args = ap.parse_args()
    if args.full:
        with tempfile.TemporaryDirectory(prefix="imgclust-bench-kmeans-", dir=args.tmp) as tmp:
            full(1_000_000 if args.n == 100_000 else args.n, args.d, args.k, args.iters, args.seed, Path(tmp))
    else:
        compare(args.n, args.d, args.k, args.iters, args.seed)


if __name__ == "__main__":
    main()
