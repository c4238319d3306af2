"""Benchmark: rules for automatic k on mixed folders built from the three shared data sets.

A user's folder is rarely one clean data set. This builds mixed folders as vector sets from the
EfficientNet-Lite0 vectors of the shared sets (dogs-vs-cats-1000, imagenette-val-3000,
cifar10-test-5000; labels are qualified by their source, so CIFAR's cats and the dogs-vs-cats cats are
two groups): different mixtures, 1,000 to 9,000 vectors (all three sets together), photos with and
without the 32-px CIFAR thumbnails, one dominant class, single sources. For each folder it runs ONE
spectral sweep over k = 2..60 (the default method, seed 0), then applies every rule to it (a rule sees
the k of ``--k-range``, by default 2-30 as ``run --ks``) and prints the chosen k, the NMI at that k, the best NMI over
k = 2..60 and their ratio. Goal for the default rule: ratio >= 0.90 on every folder, >= 0.95 on
average, dogs vs cats k = 2, Imagenette 8-12.

    python bench/choose_k.py                    # every folder (a few minutes; sweeps cached in --sweeps)
    python bench/choose_k.py --only photos-4000 # one folder
    python bench/choose_k.py --sweeps ''        # recompute every sweep

Vectors: ``--vectors DIR`` with ``<dataset>.npz`` files (arrays X float32, labels str) such as the
session's ``/work/vectors``; else each data set is loaded through the embedding cache (extracted once
when absent). Skips with a message when a data set is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from _datasets import DATASETS

REPO = Path(__file__).resolve().parents[1]
SETS = ("dogs-vs-cats-1000", "imagenette-val-3000", "cifar10-test-5000")
SHORT = {"dogs-vs-cats-1000": "dvc", "imagenette-val-3000": "inet", "cifar10-test-5000": "cifar"}
SWEEP_KS = range(2, 61)


@dataclass(frozen=True)
class Folder:
    """A mixed folder: per source set, which classes and how many vectors of each (None: all)."""

    name: str
    parts: tuple[tuple[str, tuple[str, ...] | None, int | None], ...]
    note: str
    in_goal: bool = True  # counted in the goal (cifar-5000 is shown, but no rule here can serve it)


FOLDERS = (
    Folder("dvc-1000", (("dogs-vs-cats-1000", None, None),), "single source, 2 classes (want k=2)"),
    Folder("imagenette-3000", (("imagenette-val-3000", None, None),), "single source, 10 classes (want 8-12)"),
    Folder("mixed-small-1000", (("imagenette-val-3000", ("tench", "church", "parachute", "golf_ball", "chain_saw"), 100),
                                ("cifar10-test-5000", ("airplane", "frog", "horse", "ship", "truck"), 100)),
           "5 photo classes + 5 thumbnail classes, 100 each"),
    Folder("dominant-1600", (("dogs-vs-cats-1000", ("cat",), None),
                             ("imagenette-val-3000", None, 60),
                             ("cifar10-test-5000", ("automobile", "bird", "deer", "ship"), 125)),
           "one dominant class (500 cats, 31%) + 10 photo classes of 60 + 4 thumbnail classes of 125"),
    Folder("photos-4000", (("dogs-vs-cats-1000", None, None), ("imagenette-val-3000", None, None)),
           "photos only: 12 classes"),
    Folder("dvc+cifar-6000", (("dogs-vs-cats-1000", None, None), ("cifar10-test-5000", None, None)),
           "2 photo classes + 10 thumbnail classes (cats and dogs in both)"),
    Folder("inet+cifar-8000", (("imagenette-val-3000", None, None), ("cifar10-test-5000", None, None)),
           "10 photo classes + 10 thumbnail classes"),
    Folder("all-9000", tuple((s, None, None) for s in SETS), "everything: 22 classes"),
    Folder("cifar-5000", (("cifar10-test-5000", None, None),),
           "single source of thumbnails, 10 classes (the embedding barely separates them; not in the goal)",
           in_goal=False),
)


def load_set(name: str, vectors: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    if vectors is not None and (vectors / f"{name}.npz").is_file():
        d = np.load(vectors / f"{name}.npz")
        return d["X"].astype(np.float32), d["labels"].astype(str)
    if not (DATASETS / name).is_dir():
        return None
    from imgclust.config import RunConfig
    from imgclust.pipeline import load_features

    cache = os.environ.get("IMGCLUST_CACHE") or True
    feats = load_features(DATASETS / name, RunConfig(features="efficientnet-lite0"), cache=cache)
    return feats.X, np.asarray(feats.labels_true, dtype=str)


def build(folder: Folder, sets: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The folder's vectors and source-qualified labels (a seeded draw per class where a count is given)."""
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for source, classes, per_class in folder.parts:
        X, y = sets[source]
        for c in sorted(set(y.tolist())) if classes is None else classes:
            idx = np.flatnonzero(y == c)
            if len(idx) == 0:
                raise SystemExit(f"{folder.name}: no class '{c}' in {source}")
            if per_class is not None:
                idx = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
            Xs.append(X[idx])
            ys.append(np.array([f"{SHORT[source]}/{c}"] * len(idx)))
    return np.concatenate(Xs), np.concatenate(ys)


def sweep_of(folder: Folder, X: np.ndarray, y: np.ndarray, cache_dir: Path | None,  # type: ignore[no-untyped-def]
             seed: int = 0):
    """One spectral sweep over k = 2..60 with the labels, kept in ``cache_dir`` between runs."""
    from imgclust.cluster.choose_k import Sweep, SweepRow, sweep_k

    path = None if cache_dir is None else cache_dir / f"{folder.name}{'' if seed == 0 else f'-seed{seed}'}.npz"
    if path is not None and path.is_file():
        d = np.load(path, allow_pickle=False)
        rows = [SweepRow(**{c: (None if np.isnan(v) else float(v)) if c not in ("k",) else int(v)
                            for c, v in zip(d["columns"], r, strict=True)}) for r in d["rows"]]
        rows = [replace(r, silhouette=float("nan") if r.silhouette is None else r.silhouette,
                        silhouette_se=float("nan") if r.silhouette_se is None else r.silhouette_se) for r in rows]
        return Sweep(rows=rows, n_samples=int(d["n"]), silhouette_sample=int(d["sil"]), seed=seed, engine=str(d["engine"]),
                     seconds=float(d["seconds"]), labels={int(k): d["labels"][i] for i, k in enumerate(d["ks"])},
                     eigenvalues=tuple(float(v) for v in d["eigenvalues"]),
                     eigengaps={int(k): float(g) for k, g in zip(d["gap_ks"], d["gaps"], strict=True)}
                     if "gaps" in d.files else {})
    s = sweep_k(X, SWEEP_KS, labels_true=y, method="spectral", seed=seed)
    if path is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        cols = ["k", "inertia", "silhouette", "silhouette_se", "calinski_harabasz", "davies_bouldin",
                "accuracy_majority", "accuracy_hungarian", "nmi", "ari"]
        table = np.array([[np.nan if getattr(r, c) is None else getattr(r, c) for c in cols] for r in s.rows], dtype=float)
        np.savez(path, columns=np.array(cols), rows=table, n=s.n_samples, sil=s.silhouette_sample, engine=s.engine,
                 seconds=s.seconds, ks=np.array(s.ks), labels=np.stack([s.labels[k] for k in s.ks]),
                 eigenvalues=np.array(s.eigenvalues), gap_ks=np.array(sorted(s.eigengaps)),
                 gaps=np.array([s.eigengaps[k] for k in sorted(s.eigengaps)]))
    return s


def within(sweep, lo: int, hi: int):  # type: ignore[no-untyped-def]
    """The part of a sweep with lo <= k <= hi: what a sweep over lo..hi gives (the spectral eigenvectors for
    k <= hi are the same; the gap after hi needs the fit at hi + 1, which that sweep does not have)."""
    rows = [r for r in sweep.rows if lo <= r.k <= hi]
    return replace(sweep, rows=rows, labels={k: v for k, v in sweep.labels.items() if lo <= k <= hi},
                   eigenvalues=sweep.eigenvalues[:hi], eigengaps={k: g for k, g in sweep.eigengaps.items() if lo <= k < hi})


def rules() -> dict[str, Callable]:  # type: ignore[type-arg]
    from imgclust.cluster import choose_k as ck

    def sil_max(s):  # type: ignore[no-untyped-def]
        scored = [r for r in s.rows if np.isfinite(r.silhouette)]
        return max(scored, key=lambda r: (r.silhouette, -r.k)).k

    def elbow(s):  # type: ignore[no-untyped-def]
        return ck.kneedle_elbow(s.ks, [r.inertia for r in s.rows]) or s.ks[0]

    def eigengap(s):  # type: ignore[no-untyped-def]
        vals = np.asarray(s.eigenvalues)
        gaps = {k: vals[k - 1] - vals[k] for k in s.ks if k < len(vals)}
        return max(gaps, key=lambda k: gaps[k]) if gaps else s.ks[0]

    def previous(s):  # type: ignore[no-untyped-def]
        scored = [r for r in s.rows if np.isfinite(r.silhouette)]
        best = max(scored, key=lambda r: (r.silhouette, -r.k))
        return ck._one_standard_error_pick(s, scored, best, ck.kneedle_elbow(s.ks, [r.inertia for r in s.rows])).k

    def elbow_refined(s):  # type: ignore[no-untyped-def]
        e = elbow(s)
        near = [r for r in s.rows if abs(r.k - e) <= ck.ELBOW_WINDOW and np.isfinite(r.silhouette)]
        return max(near, key=lambda r: (r.silhouette, -r.k)).k

    def finest_peak(s):  # type: ignore[no-untyped-def]
        # the finest local silhouette maximum that rises by >= 3 standard errors above the dip before it
        rows = [r for r in s.rows if np.isfinite(r.silhouette)]
        best = max(rows, key=lambda r: (r.silhouette, -r.k)).k
        pick = best
        for i, r in enumerate(rows):
            if r.k <= best or (i + 1 < len(rows) and rows[i + 1].silhouette > r.silhouette) or \
                    rows[i - 1].silhouette > r.silhouette:
                continue
            dip = min(q.silhouette for q in rows if best <= q.k <= r.k)
            if r.silhouette - dip >= 3 * r.silhouette_se:
                pick = r.k
        return pick

    out = {"silhouette max": sil_max, "kneedle elbow": elbow, "eigengap": eigengap, "elbow+silhouette": elbow_refined,
           "finest silhouette peak": finest_peak, "previous rule": previous}
    def pick_with_window(window: int):  # type: ignore[no-untyped-def]
        def pick(s):  # type: ignore[no-untyped-def]
            saved, ck.ELBOW_WINDOW = ck.ELBOW_WINDOW, window
            try:
                return ck.pick_k(s).k
            finally:
                ck.ELBOW_WINDOW = saved
        return pick

    out["agree, else elbow±2"] = pick_with_window(2)
    out["agree, else elbow±1"] = pick_with_window(1)
    out["default (pick_k)"] = lambda s: ck.pick_k(s).k
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=Path, default=Path("/work/vectors"), help="folder of <dataset>.npz (default: %(default)s)")
    ap.add_argument("--sweeps", default="/tmp/imgclust-bench-choose-k", help="where sweeps are kept ('' = none)")
    ap.add_argument("--k-range", default="2-30", help="the k a rule may choose (default: %(default)s)")
    ap.add_argument("--only", default=None, help="comma-separated folder names")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sweeps (default: %(default)s)")
    ap.add_argument("--verbose", action="store_true", help="print each folder's curves")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.k_range.split("-"))

    folders = [f for f in FOLDERS if args.only is None or f.name in args.only.split(",")]
    sets = {}
    for name in sorted({source for f in folders for source, _, _ in f.parts}):
        got = load_set(name, args.vectors if args.vectors.is_dir() else None)
        if got is None:
            print(f"SKIP: {name} not found (neither {args.vectors}/{name}.npz nor {DATASETS / name})")
            return 0
        sets[name] = got
    cache_dir = Path(args.sweeps) if args.sweeps else None
    from imgclust.cluster.choose_k import pick_k as ck_pick
    ratios: dict[str, list[float]] = {}
    table: list[tuple[str, str, int, float, float, float]] = []
    for folder in folders:
        X, y = build(folder, sets)
        t0 = time.perf_counter()
        full = sweep_of(folder, X, y, cache_dir, args.seed)
        nmi = {r.k: r.nmi for r in full.rows}
        best_k = max(nmi, key=lambda k: nmi[k])  # type: ignore[arg-type,return-value]
        print(f"\n{folder.name}: {len(X)} vectors, {len(set(y.tolist()))} labels; {folder.note}. "
              f"Best NMI {nmi[best_k]:.3f} at k={best_k} (sweep {time.perf_counter() - t0:.1f}s)", flush=True)
        if args.verbose:
            for r in full.rows:
                if r.k <= hi + 5:
                    print(f"  k={r.k:2d} sil={r.silhouette:.4f}±{r.silhouette_se:.4f} inertia={r.inertia:.4g} "
                          f"eig={full.eigenvalues[r.k - 1] if r.k - 1 < len(full.eigenvalues) else float('nan'):.4f} "
                          f"nmi={r.nmi:.3f}")
        part = within(full, lo, hi)
        for rule, fn in rules().items():
            k = int(fn(part))
            ratio = float(nmi[k]) / float(nmi[best_k])  # type: ignore[arg-type]
            ratios.setdefault(rule, []).append(ratio)
            table.append((folder.name, rule, k, float(nmi[k]), float(nmi[best_k]), ratio))  # type: ignore[arg-type]
            print(f"  {rule:<22} k={k:<3d} NMI {nmi[k]:.3f}  best {nmi[best_k]:.3f}  ratio {ratio:.3f}")
        # The candidates the rule lists, scored against the classes and against the source set: does the
        # coarse candidate (the clearest split) find the kinds of pictures (photos vs thumbnails)?
        from imgclust.metrics import evaluate

        source = np.array([label.split("/")[0] for label in y])
        listed = []
        for c in ck_pick(part).alternatives:
            by_source = evaluate(source, part.labels[c.k])["nmi"] if len(set(source.tolist())) > 1 else float("nan")
            listed.append(f"k={c.k} ({c.basis}): NMI {nmi[c.k]:.3f}, vs source {by_source:.3f}")
        print("  candidates listed: " + "; ".join(listed))
    goal = [i for i, f in enumerate(folders) if f.in_goal]
    print(f"\nrule                    mean ratio  worst ratio  over the {len(goal)} goal folders "
          f"({', '.join(folders[i].name for i in goal)}); mean, worst over all {len(folders)}")
    for rule, rs in ratios.items():
        g = [rs[i] for i in goal] or [float("nan")]
        print(f"{rule:<22}  {np.mean(g):10.3f}  {np.min(g):11.3f}      {np.mean(rs):.3f}, {np.min(rs):.3f}")
    chosen = {name: k for name, rule, k, *_ in table if rule == "default (pick_k)"}
    default = [ratios["default (pick_k)"][i] for i in goal]
    checks = [("every goal folder >= 0.90", bool(default) and min(default) >= 0.90),
              ("mean >= 0.95", bool(default) and float(np.mean(default)) >= 0.95)]
    if "dvc-1000" in chosen:
        checks.append((f"dogs vs cats k=2 (got {chosen['dvc-1000']})", chosen["dvc-1000"] == 2))
    if "imagenette-3000" in chosen:
        checks.append((f"imagenette k in 8-12 (got {chosen['imagenette-3000']})", 8 <= chosen["imagenette-3000"] <= 12))
    print("goal for the default rule: " + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
