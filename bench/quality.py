"""Clustering quality of every registered method on every labelled dataset (features cached).

For each dataset folder under --datasets (default ../shared/datasets next to the repository) and
each registered clusterer, clusters the cached vectors with k = number of labels and prints one
row: one-to-one (Hungarian) and many-to-one (majority) accuracy, NMI, ARI and the seconds the
clustering step took. The same rows are written as CSV to --out.

    PYTHONPATH=src python bench/quality.py --cache /tmp/ic-cache --out quality.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import imgclust
from imgclust._fs import atomic_write_text
from imgclust.cluster import list_clusterers

REPO = Path(__file__).resolve().parents[1]
FIELDS = ["dataset", "n", "k", "method", "accuracy_hungarian", "accuracy_majority", "nmi", "ari", "seconds"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets",
                    help="folder whose subfolders are labelled datasets (<dataset>/<class>/<image>)")
    ap.add_argument("--features", default=imgclust.RunConfig().features, help="feature extractor")
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache folder (default: the usual one)")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("quality.csv"), help="CSV written here")
    args = ap.parse_args(argv)

    if not args.datasets.is_dir():
        print(f"No datasets folder at {args.datasets}; pass --datasets.", file=sys.stderr)
        return 2
    methods = args.methods.split(",") if args.methods else [s.name for s in list_clusterers()]
    config = imgclust.RunConfig(features=args.features, labels="folder")
    rows = []
    header = f"{'dataset':24s} {'n':>5s} {'k':>3s} {'method':10s} {'acc 1:1':>8s} {'acc n:1':>8s} {'NMI':>6s} {'ARI':>6s} {'s':>7s}"
    print(header)
    for ds in sorted(p for p in args.datasets.iterdir() if p.is_dir()):
        feats = imgclust.load_features(ds, config, cache=args.cache if args.cache else True)
        labels_true = feats.labels_true
        if labels_true is None:
            continue
        k = len(set(labels_true))
        for method in methods:
            t0 = time.perf_counter()
            result = imgclust.cluster(feats.X, k, method=method, seed=args.seed)
            seconds = time.perf_counter() - t0
            m = imgclust.evaluate(labels_true, result.labels)
            row = {"dataset": ds.name, "n": len(feats.X), "k": k, "method": method,
                   **{key: round(m[key], 4) for key in ("accuracy_hungarian", "accuracy_majority", "nmi", "ari")},
                   "seconds": round(seconds, 2)}
            rows.append(row)
            print(f"{ds.name:24s} {row['n']:5d} {k:3d} {method:10s} {row['accuracy_hungarian']:8.4f} "
                  f"{row['accuracy_majority']:8.4f} {row['nmi']:6.4f} {row['ari']:6.4f} {row['seconds']:7.2f}", flush=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out, buf.getvalue())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
