"""Benchmark of the clean checks on a folder with planted near-duplicates and quality problems.

Builds a folder in /tmp from the shared datasets (dogs-vs-cats-1000 and imagenette-val-3000):
distinct base photos, plus

- near-duplicates of some of them: resized (50-90%), re-encoded at JPEG quality 30-90, cropped by
  5-15%, brightness changed by up to 20% (each copy gets one of these, or all of them at once);
- quality problems, each made from a base photo that is then left out of the folder: blurred,
  darkened, brightened, flat colour, tiny, grayscale, odd aspect ratio;
- off-topic pictures (text, a bar chart, noise, a checkerboard, lines, stripes, rings, colour bars;
  one of each, in colour) as outliers.

Runs ``imgclust.run`` on it (EfficientNet-Lite0, a fresh cache in /tmp, so the run decodes and
embeds every image), prints precision and recall of every check, the time the checks add to the
run, and the same for cleanvision and imagededup when a Python with them is given (``--peers
/tmp/peers/bin/python``; they are never installed into imgclust's environment). The folder is
deleted afterwards.

``--scale N`` measures the cost instead, on N synthetic rows (no images): ``noise`` (768 values,
five colours plus noise, like the pixels of bench/store.py's drawn folder; near-duplicates by
perceptual hash) or ``clustered`` (1280 values, a mixture of many groups whose nearest-neighbour
cosines are spread like EfficientNet vectors'; near-duplicates by embedding, so the pixel check
runs), with 1% of the rows planted as near-copies of others; it prints the time of the clean checks
and of their neighbour search, and the precision and recall of the planted copies.

Usage:
    python bench/clean.py [--n-base 600] [--seed 1] [--peers /tmp/peers/bin/python] [--thresholds] [--phash]
    python bench/clean.py --scale 200000 [--kind noise|clustered]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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

from _datasets import DATASETS

SOURCES = ("dogs-vs-cats-1000", "imagenette-val-3000")
DUP_KINDS = ("resize", "jpeg", "crop", "brightness", "all")
PROBLEMS = ("blurry", "dark", "bright", "low_information", "small", "grayscale", "odd_aspect")
OUTLIER_KINDS = ("text", "chart", "noise", "checkerboard", "lines", "stripes", "rings", "colour-bars")


def _datasets_dir() -> Path:
    if DATASETS.is_dir():
        return DATASETS
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


def off_topic(kind: str, rng: random.Random) -> Image.Image:
    """A picture unlike any photo of the sets (a planted outlier)."""
    from PIL import ImageDraw

    w, h = 320, 240
    nprng = np.random.default_rng(rng.randint(0, 2**31))
    def colour() -> tuple[int, int, int]:
        return tuple(rng.randint(0, 255) for _ in range(3))  # type: ignore[return-value]

    if kind == "noise":
        return Image.fromarray(nprng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    # A mid-tone, slightly noisy paper: the pictures are off-topic, not also bright or flat (one truth each).
    paper = np.array([rng.randint(90, 170) for _ in range(3)], dtype=np.float32)
    img = Image.fromarray(np.clip(paper + nprng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if kind == "text":
        ink = colour()
        for line in range(14):
            d.text((10, 8 + 16 * line), " ".join("".join(chr(rng.randint(97, 122)) for _ in range(rng.randint(2, 8)))
                                                  for _ in range(6)), fill=ink)
    elif kind == "chart":
        for b in range(8):
            top = rng.randint(30, 220)
            d.rectangle((20 + 36 * b, top, 44 + 36 * b, 230), fill=colour())
        d.line((15, 230, 310, 230), fill=(0, 0, 0), width=2)
    elif kind == "checkerboard":
        cell, ink = rng.randint(12, 30), colour()
        for y in range(0, h, cell):
            for x in range(0, w, cell):
                if (x // cell + y // cell) % 2:
                    d.rectangle((x, y, x + cell - 1, y + cell - 1), fill=ink)
    elif kind == "stripes":
        width, ink = rng.randint(6, 20), colour()
        for x in range(-h, w, 2 * width):
            d.polygon([(x, 0), (x + width, 0), (x + width + h, h), (x + h, h)], fill=ink)
    elif kind == "rings":
        for r in range(160, 0, -12):
            d.ellipse((w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r), fill=colour())
    elif kind == "colour-bars":
        for b in range(7):
            d.rectangle((b * w // 7, 0, (b + 1) * w // 7, h), fill=colour())
    else:  # lines
        for _ in range(30):
            d.line((rng.randint(0, w), rng.randint(0, h), rng.randint(0, w), rng.randint(0, h)),
                   fill=colour(), width=rng.randint(1, 4))
    return img


def build(folder: Path, n_base: int, n_dups: int, n_problem: int, seed: int = 1,
          n_outliers_per_kind: int = 1) -> dict[str, object]:
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
    outliers = []
    (folder / "other").mkdir()
    for kind in OUTLIER_KINDS:
        for j in range(n_outliers_per_kind):
            name = f"other/{kind}-{j}.png"
            off_topic(kind, rng).save(folder / name)
            outliers.append(name)
    return {"pairs": pairs, "problems": dict(problems), "outliers": outliers}


def pair_set(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}


def pr(found: set, truth: set) -> tuple[float, float, int, int]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0), len(found), len(truth)


def row(name: str, p: float, r: float, nf: int, nt: int, note: str = "") -> str:
    return f"  {name:34s} precision {p:5.3f}  recall {r:5.3f}  (found {nf}, planted {nt}){note}"


def run_imgclust(folder: Path, work: Path, extra: dict[str, object], *, features: str = "efficientnet-lite0",
                 precision: str | None = None, cache: Path | None = None) -> dict[str, object]:
    import imgclust
    import imgclust.features.extract as fx

    # Time spent measuring quality inside the decode threads (an upper bound of what it adds: the
    # threads run beside the network, so part of it is hidden).
    spent = [0.0, 0.0]
    measure = fx._quality_stats

    def timed(decoded):  # type: ignore[no-untyped-def]
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return measure(decoded)
        finally:
            spent[0] += time.perf_counter() - t0
            spent[1] += time.thread_time() - c0

    fx._quality_stats = timed  # type: ignore[assignment]
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        options = {"precision": precision} if precision else {}
        # A shared cache is keyed by content: the base photos' vectors are then reused across seeds.
        res = imgclust.run(folder, work / "out", features=features, feature_options=options, k=10, labels="none",
                           cache=cache or work / "cache", identity="content" if cache else "stat",
                           **extra)  # type: ignore[arg-type]
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        fx._quality_stats = measure  # type: ignore[assignment]
    return {"result": res, "total": total, "cpu": cpu, "stats_seconds": spent[0], "stats_cpu": spent[1]}


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
    checks["outliers (off-topic pictures)"] = ({r["path"] for r in rows if r["outlier"] == "1"},
                                               set(truth["outliers"]))  # type: ignore[call-overload]
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


def print_errors(res: object, truth: dict[str, object], found: set[frozenset[str]], cache: Path) -> None:
    """The wrong and the missed near-duplicate pairs, with their cosine and pixel similarity."""
    from imgclust.clean.neardup import pixel_similarity
    from imgclust.clean.stage import measure, open_stats_cache
    from imgclust.neighbors import unit_rows

    feats = res.features  # type: ignore[attr-defined]
    index = {r.relpath: i for i, r in enumerate(feats.usable)}
    Z = unit_rows(feats.X)
    draft = feats.extractor.draft_size
    T = measure(feats.usable, feats.stats, draft_size=draft, cache=open_stats_cache(cache, draft))[0].thumbs
    planted = {frozenset(p[:2]): p[2] for p in truth["pairs"]}  # type: ignore[index]
    for title, pairs in (("found, not planted", found - set(planted)), ("planted, missed", set(planted) - found)):
        print(f"    near-duplicate pairs {title}: {len(pairs)}")
        for pair in sorted(pairs, key=sorted):
            a, b = sorted(pair)
            i, j = index[a], index[b]
            print(f"      {a}  {b}  cos {float(Z[i] @ Z[j]):.3f}  pixels {float(pixel_similarity(T[[i]], T[[j]])[0]):.3f}"
                  f"{'  (' + planted[pair] + ')' if pair in planted else ''}")


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


def synthetic(n: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """``n`` rows of vectors and quality measurements, 1% of them near-copies of other rows."""
    from imgclust.clean.quality import N_STATS, STATS, THUMB_SIDE

    rng = np.random.default_rng(seed)
    dim = 768 if kind == "noise" else 1280
    X = np.empty((n, dim), np.float32)
    if kind == "noise":
        colours = np.array([(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40), (160, 40, 200)], np.float32)
    else:
        basis = rng.normal(size=(256, dim)).astype(np.float32)
        centres = rng.normal(size=(n // 50, 256)).astype(np.float32)
    for lo in range(0, n, 10_000):
        hi = min(n, lo + 10_000)
        if kind == "noise":
            c = np.arange(lo, hi) % len(colours)
            X[lo:hi] = (np.repeat(colours[c], dim // 3, axis=1) + rng.uniform(-28, 28, (hi - lo, dim))) / 255
        else:  # positive, like pooled activations; a group's members share most of their direction
            Y = centres[rng.integers(0, len(centres), hi - lo)] + 0.75 * rng.normal(size=(hi - lo, 256))
            X[lo:hi] = np.maximum(Y @ basis / 16 + 0.6, 0)
    S = np.zeros((n, N_STATS), np.float32)
    S[:, :9] = (160, 120, 120, 40, 200, 40, 7, 1, 40)  # an ordinary photo: no quality flag
    S[:, 9:13] = rng.integers(0, 1 << 16, (n, 4))
    thumbs = rng.uniform(0, 255, (n, THUMB_SIDE, THUMB_SIDE)).astype(np.float32)
    for _ in range(2):  # smooth, so the thumbnails have edges like photos'
        thumbs = (thumbs + np.roll(thumbs, 1, 1) + np.roll(thumbs, 1, 2)) / 3
    S[:, len(STATS):] = thumbs.reshape(n, -1)
    copies = rng.choice(n, size=2 * (n // 100), replace=False)
    pairs = list(zip(copies[::2].tolist(), copies[1::2].tolist(), strict=True))
    for a, b in pairs:  # b becomes a near-copy of a: its vector, its hash (2 bits off), its thumbnail (noisier)
        X[b] = X[a] + rng.normal(0, 0.1 * float(X[a].std()), dim)
        S[b, 9:13] = S[a, 9:13]
        S[b, 9] = int(S[b, 9]) ^ 0b101
        S[b, len(STATS):] = S[a, len(STATS):] + rng.normal(0, 4, THUMB_SIDE * THUMB_SIDE)
    return X, S, pairs


def bench_scale(n: int, kind: str) -> None:
    from imgclust.clean.stage import centred_neighbours, run_checks

    X, S, planted = synthetic(n, kind)
    features = "pixels" if kind == "noise" else "efficientnet-lite0"
    print(f"{n:,} synthetic rows ({kind}, {X.shape[1]} values, features {features}), {len(planted):,} planted near-copies")
    t0 = time.perf_counter()
    searched = centred_neighbours(X, 10)
    t_search = time.perf_counter() - t0
    from imgclust.clean.neardup import MIN_COSINE, PIXEL_CHECKS

    cos, idx = searched.raw_cosines(10)
    close = (cos >= MIN_COSINE) & (np.arange(10) < PIXEL_CHECKS)[None, :] & (idx >= 0)
    rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)[close]
    compared = len(np.unique(np.stack([np.minimum(rows, idx[close]), np.maximum(rows, idx[close])]), axis=1).T)
    t0 = time.perf_counter()
    res = run_checks(X, S, {}, features=features)
    total = time.perf_counter() - t0
    groups = res.near.groups
    found = {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}
    pixel = f"{compared:,} pairs compared pixel by pixel" if features != "pixels" else "near-duplicates by hash"
    print(f"  clean checks: {total:.1f} s, of which the neighbour search {t_search:.1f} s (measured alone); {pixel}")
    print(row("  planted near-copies", *pr(found, {frozenset(p) for p in planted})))
    print(f"  outliers: {res.outliers.n_outliers:,}; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-base", type=int, default=600)
    ap.add_argument("--n-dups", type=int, default=100)
    ap.add_argument("--n-problem", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1, help="Draws of the folder (see docs/clean.md for the seeds each default was chosen on).")
    ap.add_argument("--peers", default=None, help="A Python with cleanvision and imagededup installed.")
    ap.add_argument("--thresholds", action="store_true", help="Print the cosines the default threshold was chosen on.")
    ap.add_argument("--keep", action="store_true", help="Keep the folder and the run (for a look); say where.")
    ap.add_argument("--phash", action="store_true", help="Also rerun with --near-duplicates phash (cached vectors).")
    ap.add_argument("--features", default="efficientnet-lite0",
                    help="The run's features (default efficientnet-lite0; '' for the default features).")
    ap.add_argument("--precision", choices=("fp32", "int8"), default=None, help="Network precision (efficientnet-lite).")
    ap.add_argument("--cache", type=Path, default=None,
                    help="An embedding cache to reuse (keyed by content, so the base photos' vectors serve every "
                         "seed); the run's time then does not include the extraction. Default: a fresh one.")
    ap.add_argument("--errors", action="store_true", help="List the near-duplicate pairs found wrongly or missed.")
    ap.add_argument("--scale", type=int, default=None, help="Measure the cost on this many synthetic rows instead.")
    ap.add_argument("--kind", choices=("noise", "clustered"), default="noise", help="The synthetic rows of --scale.")
    args = ap.parse_args()
    if args.scale:
        bench_scale(args.scale, args.kind)
        return
    work = Path(tempfile.mkdtemp(prefix="imgclust-bench-clean-"))
    truth: dict[str, object] = {}
    try:
        folder = work / "images"
        truth = build(folder, args.n_base, args.n_dups, args.n_problem, seed=args.seed)
        n_files = sum(1 for p in folder.rglob("*") if p.is_file())
        print(f"Folder: {n_files} images ({args.n_base} base photos, {args.n_dups} planted near-duplicates, "
              f"{args.n_problem} of each of {len(PROBLEMS)} planted problems, {len(truth['outliers'])} off-topic "
              f"pictures); seed {args.seed}")
        net = {"features": args.features, "precision": args.precision, "cache": args.cache}
        print(f"Features: {args.features}{' ' + args.precision if args.precision else ''}"
              f"{f', cache {args.cache} (the extraction time is not a fresh one)' if args.cache else ''}")
        r = run_imgclust(folder, work, {}, **net)  # type: ignore[arg-type]
        res = r["result"]
        t = res.summary["timings"]  # type: ignore[attr-defined]
        clean_s = t["clean"]
        print(f"imgclust run: {r['total']:.1f} s in all, {r['cpu']:.1f} s of CPU "
              f"({', '.join(f'{k} {v:.1f}' for k, v in t.items())})")
        print(f"  the checks add: clean stage {clean_s:.2f} s + quality measurements in the decode threads "
              f"{r['stats_cpu']:.2f} s of CPU ({r['stats_seconds']:.2f} s of wall time summed over the threads)")
        print(f"  = {100 * (clean_s + r['stats_cpu']) / r['cpu']:.1f}% of the run's CPU time, "
              f"{100 * (clean_s + r['stats_cpu']) / r['total']:.1f}% of its wall time "
              f"(upper bound counting the threads' wall time: {100 * (clean_s + r['stats_seconds']) / r['total']:.1f}%)")
        print("imgclust (near-duplicates by embedding, cosine "
              f"{res.summary['near_duplicates']['threshold']}):")  # type: ignore[attr-defined]
        checks = imgclust_checks(res, truth)
        for name, (found, planted) in checks.items():
            print(row(name, *pr(found, planted)))
        flagged, planted_out = checks["outliers (off-topic pictures)"]
        others = flagged - planted_out
        print(f"    other images flagged as outliers: {sum(p.startswith('problems/') for p in others)} planted problem "
              f"images, {sum(not p.startswith('problems/') for p in others)} photos")
        found_pairs = checks["near-duplicates"][0]
        for kind in DUP_KINDS:
            kind_pairs = {frozenset(p[:2]) for p in truth["pairs"] if p[2] == kind}  # type: ignore[index]
            print(f"    recall of copies made by {kind}: {len(kind_pairs & found_pairs) / len(kind_pairs):.3f}")
        if args.errors:
            print_errors(res, truth, found_pairs, args.cache or work / "cache")
        if args.thresholds:
            threshold_table(res, truth)
        if args.phash:
            shutil.rmtree(work / "out")
            r2 = run_imgclust(folder, work, {"clean_options": {"near_duplicates": "phash"}}, **net)  # type: ignore[arg-type]
            found2 = imgclust_checks(r2["result"], truth)["near-duplicates"]
            print(row("imgclust near-duplicates by phash", *pr(*found2)))
            for kind in DUP_KINDS:
                kind_pairs = {frozenset(p[:2]) for p in truth["pairs"] if p[2] == kind}  # type: ignore[index]
                print(f"    recall of copies made by {kind}: {len(kind_pairs & found2[0]) / len(kind_pairs):.3f}")
        if args.peers:
            run_peers(args.peers, folder, truth)
    finally:
        if args.keep:
            (work / "truth.json").write_text(json.dumps(truth))
            print(f"Kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
