"""The embedding cache: a second `imgclust run` on the same folder against the first, side by side.

Runs the real command line twice on dogs-vs-cats-1000 with a fresh temporary --cache folder and
prints the wall time of each run (process start to exit), the ratio (goal >= 10), the stage
timings from summary.json and how many vectors each run computed and read from the cache.
The ONNX graph is exported before the first run, so the first run measures extraction, not the
one-time export.

Run from the repository root:
    PYTHONPATH=src python bench/cache.py
    PYTHONPATH=src python bench/cache.py --k auto     # include choosing k (clustering then dominates)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from _datasets import DATASETS
from imgclust.features import get_extractor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = DATASETS / "dogs-vs-cats-1000"


def run_once(args: list[str], out: Path) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "imgclust", *args, "--out", str(out)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"imgclust run failed ({proc.returncode}):\n{proc.stderr}")
    return seconds, json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--k", default="2", help="k for both runs (default 2; 'auto' adds the k search)")
    ap.add_argument("--features", default="efficientnet-lite0")
    a = ap.parse_args()
    if not a.dataset.is_dir():
        raise SystemExit(f"dataset not found: {a.dataset} (see shared/datasets/MANIFEST.md)")
    extractor = get_extractor(a.features)
    extractor.embed(extractor.prepare(Image.new("RGB", (64, 64)))[None])  # export once
    with tempfile.TemporaryDirectory(prefix="imgclust-bench-cache-") as tmp:
        args = ["run", str(a.dataset), "--features", a.features, "--k", a.k, "--cache", str(Path(tmp) / "cache"), "-q"]
        t1, s1 = run_once(args, Path(tmp) / "out1")
        t2, s2 = run_once(args, Path(tmp) / "out2")
    print(f"imgclust run {a.dataset.name} --features {a.features} --k {a.k}, fresh --cache")
    for name, t, s in (("first run ", t1, s1), ("second run", t2, s2)):
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in s["timings"].items())
        print(f"  {name} {t:7.2f} s  (computed {s['n_vectors_computed']}, from cache {s['n_vectors_cached']}; {stages})")
    print(f"first / second = {t1 / t2:.1f}  (goal >= 10)")
    same = s1["cluster_sizes"] == s2["cluster_sizes"] and s1.get("metrics") == s2.get("metrics")
    print(f"same clustering both times: {same}")


if __name__ == "__main__":
    main()
