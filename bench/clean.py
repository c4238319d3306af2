"""Benchmark of the clean checks on a folder with planted near-duplicates and quality problems.

Builds a folder in /tmp from the shared datasets (dogs-vs-cats-1000 and imagenette-val-3000):
distinct base photos, plus

- near-duplicates of some of them: resized (50-90%), re-encoded at JPEG quality 30-90, cropped by
  5-15%, brightness changed by up to 20% (each copy gets one of these, or all of them at once);
- quality problems, each made from a base photo that is then left out of the folder: blurred,
  darkened, brightened, flat colour, tiny, grayscale, odd aspect ratio.

Runs ``imgclust.run`` on it (EfficientNet-Lite0, a fresh cache in /tmp, so the run decodes and
embeds every image), prints precision and recall of every check, the time the checks add to the
run, and the same for cleanvision and imagededup when a Python with them is given (``--peers
/tmp/peers/bin/python``; they are never installed into imgclust's environment). The folder is
deleted afterwards.

Usage:
    python bench/clean.py [--n-base 600] [--peers /tmp/peers/bin/python] [--thresholds]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

DATASETS = Path(__file__).resolve().parents[1].parent.parent / "shared" / "datasets"
SOURCES = ("dogs-vs-cats-1000", "imagenette-val-3000")
DUP_KINDS = ("resize", "jpeg", "crop", "brightness", "all")
PROBLEMS = ("blurry", "dark", "bright", "low_information", "small", "grayscale", "odd_aspect")


def _datasets_dir() -> Path:
    for cand in (DATASETS, Path("/work/shared/datasets")):
        if cand.is_dir():
            return cand
    sys.exit("The shared datasets (dogs-vs-cats-1000, imagenette-val-3000) are not here; nothing to measure.")


def base_images(n: int, rng: random.Random) -> list[Path]:
    """``n`` photos, half from each source, at least 100 px on each side (smaller ones would be 'small')."""
    root = _datasets_dir()
    picked: list[Path] = []
    for name in SOURCES:
        files = sorted((root / name).rglob("*.jpg"))
        rng.shuffle(files)
        taken = 0
        for f in files:
            if taken >= n // len(SOURCES):
                break
            with Image.open(f) as im:
                if min(im.size) < 100 or im.mode != "RGB":
                    continue
                # A black-and-white photo is grayscale by nature, not a planted problem: left out of the bases.
                arr = np.asarray(im.reduce(4), dtype=np.int16)
                if np.abs(np.diff(arr, axis=2)).mean() < 1.0:
                    continue
            picked.append(f)
            taken += 1
    return picked


def near_copy(img: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int]:
    """A near-duplicate of ``img`` and the JPEG quality to save it at."""
    quality = 95
    out = img
    if kind in ("resize", "all"):
        s = rng.uniform(0.5, 0.9)
        out = out.resize((max(8, round(out.width * s)), max(8, round(out.height * s))), Image.Resampling.BILINEAR)
    if kind in ("crop", "all"):
        f = rng.uniform(0.05, 0.15)  # this fraction of each dimension is cut, split between the sides
        dx, dy = round(out.width * f), round(out.height * f)
        lx, ly = rng.randint(0, dx), rng.randint(0, dy)
        out = out.crop((lx, ly, out.width - (dx - lx), out.height - (dy - ly)))
    if kind in ("brightness", "all"):
        out = ImageEnhance.Brightness(out).enhance(rng.choice([-1, 1]) * rng.uniform(0.05, 0.2) + 1)
    if kind in ("jpeg", "all"):
        quality = rng.randint(30, 90)
    return out, quality


def with_problem(img: Image.Image, problem: str, rng: random.Random) -> Image.Image:
    if problem == "blurry":
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.012, 0.025) * min(img.size)))
    if problem == "dark":
        return ImageEnhance.Brightness(img).enhance(rng.uniform(0.1, 0.3))
    if problem == "bright":
        arr = np.asarray(img, dtype=np.float32)
        a = rng.uniform(0.2, 0.35)
        return Image.fromarray(np.clip(255 - (255 - arr) * a, 0, 255).astype(np.uint8))
    if problem == "low_information":
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        arr = np.full((img.height, img.width, 3), colour, dtype=np.float32)
        arr += np.random.default_rng(rng.randint(0, 2**31)).normal(0, 1.5, arr.shape)  # sensor noise
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if problem == "small":
        side = rng.randint(20, 56)
        s = side / max(img.size)
        return img.resize((max(4, round(img.width * s)), max(4, round(img.height * s))), Image.Resampling.BILINEAR)
    if problem == "grayscale":
        return img.convert("L").convert("RGB")
    if problem == "odd_aspect":
        h = max(16, round(img.width / rng.uniform(3.3, 5.0)))
        top = rng.randint(0, max(0, img.height - h))
        return img.crop((0, top, img.width, top + h))
    raise ValueError(problem)


def build(folder: Path, n_base: int, n_dups: int, n_problem: int, seed: int = 0) -> dict[str, object]:
    """Write the benchmark folder; return the truth: duplicate pairs and each problem's files."""
    rng = random.Random(seed)
    bases = base_images(n_base + len(PROBLEMS) * n_problem, rng)
    clean_bases, problem_bases = bases[:n_base], bases[n_base:]
    folder.mkdir(parents=True)
    pairs: list[tuple[str, str, str]] = []
    for i, src in enumerate(clean_bases):
        name = f"base/{i:04d}.jpg"
        (folder / "base").mkdir(exist_ok=True)
        shutil.copyfile(src, folder / name)
    for j in range(n_dups):
        i = j * (n_base // n_dups)
        kind = DUP_KINDS[j % len(DUP_KINDS)]
        with Image.open(clean_bases[i]) as im:
            copy, q = near_copy(im.convert("RGB"), kind, rng)
        (folder / "copies").mkdir(exist_ok=True)
        name = f"copies/{i:04d}-{kind}.jpg"
        copy.save(folder / name, quality=q)
        pairs.append((f"base/{i:04d}.jpg", name, kind))
    problems: dict[str, list[str]] = defaultdict(list)
    for p, problem in enumerate(PROBLEMS):
        (folder / "problems").mkdir(exist_ok=True)
        for src in problem_bases[p * n_problem:(p + 1) * n_problem]:
            with Image.open(src) as im:
                bad = with_problem(im.convert("RGB"), problem, rng)
            name = f"problems/{problem}-{src.stem}.jpg"
            bad.save(folder / name, quality=90)
            problems[problem].append(name)
    return {"pairs": pairs, "problems": dict(problems)}


def pair_set(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}


def pr(found: set, truth: set) -> tuple[float, float, int, int]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0), len(found), len(truth)


def row(name: str, p: float, r: float, nf: int, nt: int, note: str = "") -> str:
    return f"  {name:34s} precision {p:5.3f}  recall {r:5.3f}  (found {nf}, planted {nt}){note}"


def run_imgclust(folder: Path, work: Path, extra: dict[str, object]) -> dict[str, object]:
    import imgclust
    import imgclust.features.extract as fx

    # Time spent measuring quality inside the decode threads (an upper bound of what it adds: the
    # threads run beside the network, so part of it is hidden).
    spent = [0.0]
    measure = fx._quality_stats

    def timed(decoded):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return measure(decoded)
        finally:
            spent[0] += time.perf_counter() - t0

    fx._quality_stats = timed  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        res = imgclust.run(folder, work / "out", features="efficientnet-lite0", k=10, labels="none",
                           cache=work / "cache", **extra)  # type: ignore[arg-type]
        total = time.perf_counter() - t0
    finally:
        fx._quality_stats = measure  # type: ignore[assignment]
    return {"result": res, "total": total, "stats_seconds": spent[0]}


def imgclust_checks(res: object, truth: dict[str, object]) -> dict[str, tuple[set, set]]:
    import csv

    out_dir = res.out_dir  # type: ignore[attr-defined]
    rows = list(csv.DictReader(open(out_dir / "assignments.csv", encoding="utf-8")))
    groups: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["near_duplicate_group"] != "":
            groups[r["near_duplicate_group"]].append(r["path"])
    checks = {"near-duplicates": (pair_set(list(groups.values())), {frozenset(p[:2]) for p in truth["pairs"]})}  # type: ignore[index]
    flagged = {r["path"]: set(filter(None, r["quality"].split(";"))) for r in rows}
    for problem, files in truth["problems"].items():  # type: ignore[attr-defined]
        checks[problem] = ({p for p, f in flagged.items() if problem in f}, set(files))
    return checks


PEER_SCRIPT = r'''
import json, sys, time, warnings
warnings.simplefilter("ignore")
folder = sys.argv[1]
out = {}
try:
    from cleanvision import Imagelab
    t0 = time.perf_counter()
    lab = Imagelab(data_path=folder)
    lab.find_issues()
    issues = lab.issues
    sets = lab.info["near_duplicates"]["sets"]
    out["cleanvision"] = {"seconds": time.perf_counter() - t0, "near_sets": [list(s) for s in sets],
                          "flags": {c[3:-6]: [p for p, v in issues[c].items() if v] for c in issues.columns
                                    if c.startswith("is_") and c.endswith("_issue")}}
except Exception as exc:
    out["cleanvision"] = {"error": f"{type(exc).__name__}: {exc}"}
for method in ("PHash", "CNN"):
    try:
        import imagededup.methods as m
        t0 = time.perf_counter()
        hasher = getattr(m, method)()
        dups = hasher.find_duplicates(image_dir=folder, scores=False, recursive=True)
        out["imagededup " + method] = {"seconds": time.perf_counter() - t0, "duplicates": dups}
    except Exception as exc:
        out["imagededup " + method] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
print(json.dumps(out))
'''


def run_peers(python: str, folder: Path, truth: dict[str, object]) -> None:
    proc = subprocess.run([python, "-c", PEER_SCRIPT, str(folder)], capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0 or not proc.stdout.strip():
        print(f"peers: {python} failed: {proc.stderr.strip()[-500:]}")
        return
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    true_pairs = {frozenset(p[:2]) for p in truth["pairs"]}  # type: ignore[index]
    for name, res in results.items():
        if "error" in res:
            print(f"{name}: did not run: {res['error']}")
            continue
        print(f"{name} ({res['seconds']:.1f} s):")
        if "near_sets" in res:
            sets = [[str(Path(p).resolve().relative_to(folder.resolve())) for p in s] for s in res["near_sets"]]
            print(row("near-duplicates", *pr(pair_set(sets), true_pairs)))
            names = {"blurry": "blurry", "dark": "dark", "light": "bright", "low_information": "low_information",
                     "grayscale": "grayscale", "odd_size": "small", "odd_aspect_ratio": "odd_aspect"}
            for theirs, ours in names.items():
                found = {str(Path(p).resolve().relative_to(folder.resolve())) for p in res["flags"].get(theirs, [])}
                print(row(f"{ours} (their {theirs})", *pr(found, set(truth["problems"][ours]))))  # type: ignore[index]
        else:
            groups = [[k, *v] for k, v in res["duplicates"].items() if v]
            print(row("near-duplicates", *pr(pair_set(groups), true_pairs)))


def threshold_table(res: object, truth: dict[str, object]) -> None:
    """Cosines of the planted pairs against each image's nearest non-duplicate: where a threshold can go."""
    from imgclust.neighbors import knn, unit_rows

    feats = res.features  # type: ignore[attr-defined]
    paths = [r.relpath for r in feats.usable]
    index = {p: i for i, p in enumerate(paths)}
    for centred in (False, True):
        X = feats.X - feats.X.mean(axis=0) if centred else feats.X
        Z = unit_rows(X)
        dup_cos = {p[2]: [] for p in truth["pairs"]}  # type: ignore[index]
        for a, b, kind in truth["pairs"]:  # type: ignore[index]
            dup_cos[kind].append(float(Z[index[a]] @ Z[index[b]]))
        partner = {index[a]: index[b] for a, b, _ in truth["pairs"]} | {index[b]: index[a] for a, b, _ in truth["pairs"]}  # type: ignore[index]
        bases = [i for i, p in enumerate(paths) if p.startswith("base/")]
        sims, idx = knn(Z[bases], 1)
        partner = {bases.index(i) for i in partner if i in bases}
        other = [float(sims[i, 0]) for i in range(len(bases)) if i not in partner]
        print(f"{'centred' if centred else 'raw'} cosines: planted pairs min/5%/median by kind: " +
              ", ".join(f"{k} {np.min(v):.3f}/{np.percentile(v, 5):.3f}/{np.median(v):.3f}" for k, v in dup_cos.items()))
        print(f"  nearest other base photo of a base photo without a copy: median {np.median(other):.3f}, "
              f"99% {np.percentile(other, 99):.3f}, 99.9% {np.percentile(other, 99.9):.3f}, max {np.max(other):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-base", type=int, default=600)
    ap.add_argument("--n-dups", type=int, default=100)
    ap.add_argument("--n-problem", type=int, default=30)
    ap.add_argument("--peers", default=None, help="A Python with cleanvision and imagededup installed.")
    ap.add_argument("--thresholds", action="store_true", help="Print the cosines the default threshold was chosen on.")
    ap.add_argument("--phash", action="store_true", help="Also rerun with --near-duplicates phash (cached vectors).")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgclust-bench-clean-"))
    try:
        folder = work / "images"
        truth = build(folder, args.n_base, args.n_dups, args.n_problem)
        n_files = sum(1 for p in folder.rglob("*") if p.is_file())
        print(f"Folder: {n_files} images ({args.n_base} base photos, {args.n_dups} planted near-duplicates, "
              f"{args.n_problem} of each of {len(PROBLEMS)} planted problems)")
        r = run_imgclust(folder, work, {})
        res = r["result"]
        t = res.summary["timings"]  # type: ignore[attr-defined]
        added = t["clean"] + r["stats_seconds"]
        print(f"imgclust run: {r['total']:.1f} s in all ({', '.join(f'{k} {v:.1f}' for k, v in t.items())})")
        print(f"  the checks add at most {added:.2f} s = {100 * added / r['total']:.1f}% of the run "
              f"(clean stage {t['clean']:.2f} s + quality measurements in the decode threads {r['stats_seconds']:.2f} s)")
        print("imgclust (near-duplicates by embedding, cosine "
              f"{res.summary['near_duplicates']['threshold']}):")  # type: ignore[attr-defined]
        checks = imgclust_checks(res, truth)
        for name, (found, planted) in checks.items():
            print(row(name, *pr(found, planted)))
        found_pairs = checks["near-duplicates"][0]
        for kind in DUP_KINDS:
            kind_pairs = {frozenset(p[:2]) for p in truth["pairs"] if p[2] == kind}  # type: ignore[index]
            print(f"    recall of copies made by {kind}: {len(kind_pairs & found_pairs) / len(kind_pairs):.3f}")
        if args.thresholds:
            threshold_table(res, truth)
        if args.phash:
            shutil.rmtree(work / "out")
            r2 = run_imgclust(folder, work, {"clean_options": {"near_duplicates": "phash"}})
            found2 = imgclust_checks(r2["result"], truth)["near-duplicates"]
            print(row("imgclust near-duplicates by phash", *pr(*found2)))
            for kind in DUP_KINDS:
                kind_pairs = {frozenset(p[:2]) for p in truth["pairs"] if p[2] == kind}  # type: ignore[index]
                print(f"    recall of copies made by {kind}: {len(kind_pairs & found2[0]) / len(kind_pairs):.3f}")
        if args.peers:
            run_peers(args.peers, folder, truth)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
