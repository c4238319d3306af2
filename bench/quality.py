"""Clustering quality of every registered method on every labelled dataset (features cached).

For each dataset folder under --datasets (default ../shared/datasets next to the repository) and
each registered clusterer, clusters the cached vectors with k = number of labels and prints one
row: one-to-one (Hungarian) and many-to-one (majority) accuracy, NMI, ARI and the seconds the
clustering step took. The same rows are written as CSV to --out.

Beyond the datasets themselves (so that a default is not tuned to them):

- ``--subsets N`` adds N random class subsets of every dataset (seeded: 3 to C-1 of its C classes,
  or all classes when C <= 3, each class keeping a random 30-100 % of its images, so the groups are
  also unbalanced), and prints per method the mean accuracy and the subsets where it is below
  plain k-means.
- ``--junk N`` adds N junk images (uniform noise, flat colours and a grey ramp, embedded by the same
  extractor) to every dataset and scores the real images only: how a method copes with a few
  unusable pictures in a folder.

    PYTHONPATH=src python bench/quality.py --cache /tmp/ic-cache --out quality.csv
    PYTHONPATH=src python bench/quality.py --cache /tmp/ic-cache --subsets 16 --junk 21 --out robust.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np

import imgclust
from _datasets import DATASETS
from imgclust._fs import atomic_write_text
from imgclust.cluster import list_clusterers
from imgclust.features import get_extractor
from imgclust.pipeline import with_features

REPO = Path(__file__).resolve().parents[1]
FIELDS = ["features", "precision", "dataset", "variant", "n", "k", "method", "accuracy_hungarian", "accuracy_majority", "nmi", "ari", "seconds"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=Path, default=DATASETS,
                    help="folder whose subfolders are labelled datasets (<dataset>/<class>/<image>)")
    ap.add_argument("--features", default="",
                    help="feature extractor, or several separated by commas (one table block each); default: the "
                         "default features")
    ap.add_argument("--precision", default=None,
                    help="fp32, int8 or fp32,int8 for EfficientNet-Lite features (default: the extractor's default)")
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache folder (default: the usual one)")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subsets", type=int, default=0, help="random class subsets per dataset (default 0)")
    ap.add_argument("--junk", type=int, default=0, help="junk images added to every dataset (default 0)")
    ap.add_argument("--out", type=Path, default=Path("quality.csv"), help="CSV written here")
    args = ap.parse_args(argv)

    if not args.datasets.is_dir():
        print(f"No datasets folder at {args.datasets}; pass --datasets.", file=sys.stderr)
        return 2
    methods = args.methods.split(",") if args.methods else [s.name for s in list_clusterers()]
    precisions: list[str | None] = args.precision.split(",") if args.precision else [None]
    rows: list[dict] = []
    for features in args.features.split(","):
        for precision in precisions:
            config = with_features(imgclust.RunConfig(features=features, labels="folder",
                                                      feature_options={"precision": precision} if precision else {}))
            rows += quality_rows(args, config, methods, config.feature_options.get("precision") or "default")
    if args.subsets:
        print_subset_summary(rows, methods)
    if len(args.features.split(",")) * len(precisions) > 1:
        print_variant_table(rows, methods)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out, buf.getvalue())
    print(f"wrote {args.out}")
    return 0


def quality_rows(args: argparse.Namespace, config: imgclust.RunConfig, methods: list[str], precision: str) -> list[dict]:
    """The rows of one extractor configuration (features x precision) on every dataset and its variants."""
    rows = []
    print(f"\n{config.features} ({precision})")
    header = (f"{'dataset':24s} {'variant':12s} {'n':>5s} {'k':>3s} {'method':10s} {'acc 1:1':>8s} {'acc n:1':>8s} "
              f"{'NMI':>6s} {'ARI':>6s} {'s':>7s}")
    print(header)
    rng = np.random.default_rng(args.seed)
    junk = junk_vectors(config, args.junk) if args.junk else None
    for ds in sorted(p for p in args.datasets.iterdir() if p.is_dir()):
        feats = imgclust.load_features(ds, config, cache=args.cache if args.cache else True)
        if feats.labels_true is None:
            continue
        X, y = feats.X, np.asarray(feats.labels_true)
        variants = [("full", X, y)]
        if junk is not None:
            variants.append((f"+{len(junk)} junk", np.concatenate([X, junk.astype(X.dtype)]), y))
        variants += [(f"subset {i}", X[idx], y[idx]) for i, idx in enumerate(class_subsets(y, args.subsets, rng))]
        for variant, Xv, yv in variants:
            k = len(set(yv))
            for method in methods:
                t0 = time.perf_counter()
                result = imgclust.cluster(Xv, k, method=method, seed=args.seed)
                seconds = time.perf_counter() - t0
                m = imgclust.evaluate(yv, result.labels[:len(yv)])  # junk rows (appended) are not scored
                row = {"features": config.features, "precision": precision, "dataset": ds.name, "variant": variant,
                       "n": len(Xv), "k": k, "method": method,
                       **{key: round(m[key], 4) for key in ("accuracy_hungarian", "accuracy_majority", "nmi", "ari")},
                       "seconds": round(seconds, 2)}
                rows.append(row)
                print(f"{ds.name:24s} {variant:12s} {row['n']:5d} {k:3d} {method:10s} {row['accuracy_hungarian']:8.4f} "
                      f"{row['accuracy_majority']:8.4f} {row['nmi']:6.4f} {row['ari']:6.4f} {row['seconds']:7.2f}",
                      flush=True)
    return rows


def print_variant_table(rows: list[dict], methods: list[str]) -> None:
    """One line per features x precision x method: one-to-one accuracy on each full dataset (and the subsets' mean)."""
    datasets = sorted({r["dataset"] for r in rows})
    print("\none-to-one accuracy per features x precision (full datasets; subsets: mean over the random subsets)")
    print(f"{'features':22s} {'precision':9s} {'method':10s} " + " ".join(f"{d[:20]:>20s}" for d in datasets)
          + f" {'subsets':>8s}")
    configs = dict.fromkeys((r["features"], r["precision"], r["method"]) for r in rows)
    for features, precision, method in configs:
        mine = [r for r in rows if (r["features"], r["precision"], r["method"]) == (features, precision, method)]
        full = {r["dataset"]: r["accuracy_hungarian"] for r in mine if r["variant"] == "full"}
        subsets = [r["accuracy_hungarian"] for r in mine if r["variant"].startswith("subset")]
        cells = " ".join(f"{full[d]:20.4f}" if d in full else f"{'-':>20s}" for d in datasets)
        print(f"{features:22s} {precision:9s} {method:10s} {cells} "
              + (f"{np.mean(subsets):8.4f}" if subsets else f"{'-':>8s}"))


def class_subsets(y: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random subsets of the rows: 3 to C-1 classes (all when C <= 3), 30-100 % of each class."""
    classes = np.unique(y)
    out = []
    for _ in range(count):
        n_classes = len(classes) if len(classes) <= 3 else int(rng.integers(3, len(classes)))
        picked = rng.choice(classes, size=n_classes, replace=False)
        out.append(np.sort(np.concatenate([
            rng.choice(np.flatnonzero(y == c), size=max(1, int(np.sum(y == c) * rng.uniform(0.3, 1.0))), replace=False)
            for c in picked])))
    return out


def junk_vectors(config: imgclust.RunConfig, count: int) -> np.ndarray:
    """Vectors of ``count`` unusable pictures: half uniform noise, the rest flat colours, one grey ramp."""
    from PIL import Image

    rng = np.random.default_rng(12345)
    n_noise = count // 2
    images = [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(n_noise)]
    images += [Image.new("RGB", (300, 200), tuple(int(c) for c in rng.integers(0, 256, 3)))
               for _ in range(max(0, count - n_noise - 1))]
    if count > n_noise:
        ramp = np.repeat(np.linspace(0, 255, 224, dtype=np.float32)[None, :, None], 3, axis=2)
        images.append(Image.fromarray(np.repeat(ramp, 224, axis=0).astype(np.uint8)))
    extractor = get_extractor(config.features, **config.feature_options)
    return np.asarray(extractor.embed(np.stack([extractor.prepare(im) for im in images])))


def print_subset_summary(rows: list[dict], methods: list[str]) -> None:
    """Mean one-to-one accuracy over the subsets per method, and where each is below plain k-means."""
    subsets = [r for r in rows if r["variant"].startswith("subset")]
    by_case: dict[tuple[str, ...], dict[str, float]] = {}
    for r in subsets:
        by_case.setdefault((r["features"], r["precision"], r["dataset"], r["variant"]), {})[r["method"]] = \
            r["accuracy_hungarian"]
    print(f"\nover {len(by_case)} random class subsets (one-to-one accuracy):")
    for method in methods:
        acc = np.array([case[method] for case in by_case.values()])
        line = f"  {method:10s} mean {acc.mean():.4f}"
        if "kmeans" in methods and method != "kmeans":
            base = np.array([case["kmeans"] for case in by_case.values()])
            line += (f"; below kmeans on {int(np.sum(acc < base))} (by more than 0.02 on "
                     f"{int(np.sum(acc < base - 0.02))}), above on {int(np.sum(acc > base))}")
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
