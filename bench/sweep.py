"""Benchmark: the k sweep (``imgclust sweep``) against fitting scikit-learn KMeans(n_init=10) at every k.

Both run in this one process on the same vectors (cifar10-test-5000, efficientnet-lite0: 5000 x 1280),
side by side, so the ratio is fair on a busy machine too. Ours is timed as a whole: the warm-started
k-means at every k *and* all the criteria (silhouette, Calinski-Harabasz, Davies-Bouldin); the baseline
only fits. Targets: ours >= 5x faster, and at every k its inertia within 2% of the baseline's.

    python bench/sweep.py                      # k = 2..30 on the 5000 vectors
    python bench/sweep.py --ks 2-10 --n 2000   # a quicker look
    python bench/sweep.py --spectral           # also: the spectral sweep (one graph and eigensolve for
                                               # every k) against fitting spectral at every k from scratch

The vectors come from the embedding cache ($IMGCLUST_CACHE, else /tmp/ic-cache, else the default
cache) or are extracted once. Skips with a message when the dataset is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _datasets import DATASETS

REPO = Path(__file__).resolve().parents[1]
# ../shared/datasets of the checkout, or of a folder above it (git worktrees live one level deeper).
DATASET = DATASETS / "cifar10-test-5000"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATASET, help="image folder (default: %(default)s)")
    ap.add_argument("--ks", default="2-30", help="k values, e.g. 2-30 or 2,5,10 (default: %(default)s)")
    ap.add_argument("--n", type=int, default=None, help="use only the first N vectors (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spectral", action="store_true", help="also time the spectral sweep, shared vs per k")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"SKIP: dataset not found at {args.data} (see shared/datasets/MANIFEST.md)")
        return 0

    from sklearn.cluster import KMeans

    from imgclust.cluster.choose_k import sweep_k
    from imgclust.config import RunConfig, parse_ks
    from imgclust.pipeline import load_features

    ks = parse_ks(args.ks)
    cache = os.environ.get("IMGCLUST_CACHE") or ("/tmp/ic-cache" if Path("/tmp/ic-cache").is_dir() else True)
    t0 = time.perf_counter()
    X = load_features(args.data, RunConfig(features="efficientnet-lite0"), cache=cache).X
    if args.n:
        X = X[:args.n]
    print(f"vectors: {X.shape[0]} x {X.shape[1]} ({time.perf_counter() - t0:.1f}s to load); k = {ks[0]}..{ks[-1]} "
          f"({len(ks)} values)", flush=True)

    t0 = time.perf_counter()
    sweep = sweep_k(X, ks, seed=args.seed)
    t_ours = time.perf_counter() - t0
    print(f"ours (warm-started k-means + all criteria): {t_ours:.2f}s", flush=True)

    t0 = time.perf_counter()
    base = {}
    for k in ks:
        base[k] = float(KMeans(n_clusters=k, n_init=10, random_state=args.seed).fit(X).inertia_)
    t_base = time.perf_counter() - t0
    print(f"scikit-learn KMeans(n_init=10) at every k, fit only: {t_base:.2f}s", flush=True)

    print(f"\n{'k':>4} {'ours inertia':>14} {'sklearn inertia':>16} {'ratio':>8}")
    ratios = {}
    for row in sweep.rows:
        ratios[row.k] = row.inertia / base[row.k]
        print(f"{row.k:>4} {row.inertia:>14.1f} {base[row.k]:>16.1f} {ratios[row.k]:>8.4f}")
    worst = max(ratios, key=lambda k: ratios[k])
    speedup = t_base / t_ours
    print(f"\nspeed-up: {speedup:.1f}x (target >= 5x): {'PASS' if speedup >= 5 else 'FAIL'}")
    print(f"worst inertia ratio ours/sklearn: {ratios[worst]:.4f} at k={worst} (target <= 1.02): "
          f"{'PASS' if ratios[worst] <= 1.02 else 'FAIL'}")
    if args.spectral:
        spectral_sweep(X, ks, args.seed)
    return 0


def spectral_sweep(X, ks, seed: int) -> None:
    """The spectral sweep as ``imgclust sweep`` and automatic k run it (``fit_many``: one graph and one
    eigensolve shared by every k) against fitting spectral from scratch at every k; same criteria."""
    import dataclasses

    import numpy as np

    from imgclust.cluster import base
    from imgclust.cluster.choose_k import sweep_k

    shared = base.get_clusterer("spectral")
    t0 = time.perf_counter()
    ours = sweep_k(X, ks, seed=seed, method="spectral")
    t_ours = time.perf_counter() - t0
    base._CLUSTERERS["spectral"] = dataclasses.replace(shared, fit_many=None)
    try:
        t0 = time.perf_counter()
        scratch = sweep_k(X, ks, seed=seed, method="spectral")
        t_scratch = time.perf_counter() - t0
    finally:
        base._CLUSTERERS["spectral"] = shared
    same = all(np.allclose(ours.column(c), scratch.column(c), equal_nan=True) for c in ("inertia", "silhouette"))
    print(f"\nspectral sweep, shared graph and eigenvectors: {t_ours:.2f}s; fitted at every k from scratch: "
          f"{t_scratch:.2f}s; ratio {t_scratch / t_ours:.1f}x; same inertia and silhouette at every k: {same}")


if __name__ == "__main__":
    sys.exit(main())
