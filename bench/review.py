"""imgclust review with many images: time until the page is usable, and the server's memory.

Draws N small images (seeded colours and shapes, 24x24 PNG) into a temporary folder, writes the
files of a finished run for them with imgclust's own writers (assignments.csv, summary.json,
report-data.npz with a PCA map of 8-number colour vectors clustered by imgclust's k-means into
k = 50), then starts the review server in this process and opens the page in headless Chromium.
The same is done for a small run (1,000 images) first, and the ratios are printed, since absolute
times depend on what else the machine is doing. Measured:

  - server start: reading the run and the journal (ReviewServer(...))
  - page usable: from driver.get(url) until the page has drawn the map, listed every cluster and
    shown the first cluster's thumbnails (made on first request, so a cold thumbnail cache)
  - page usable again with the thumbnails cached on disk (a reload)
  - the map drawn from scratch (all points into an ImageData, as after an edit), and redrawn as
    during a drag (the cached points, 100 selected images and the outline)
  - a move of 1,000 images and its undo (POST, journal append + fsync, summary.json update)
  - the server's resident memory (this process, RSS) before and after

Run from the repository root (needs Chromium + chromedriver, like the browser tests):
    PYTHONPATH=src python bench/review.py            # 1,000 then 100,000 images
    PYTHONPATH=src python bench/review.py --n 20000  # quicker
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

K = 50


def draw_chunk(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image, ImageDraw

    root, start, stop, seed = args
    rng = np.random.default_rng(seed + start)
    for i in range(start, stop):
        c = i % K
        base = np.array([(c * 53) % 256, (c * 97) % 256, (c * 151) % 256])
        img = Image.new("RGB", (24, 24), tuple(int(v) for v in np.clip(base + rng.integers(-30, 30, 3), 0, 255)))
        d = ImageDraw.Draw(img)
        m = int(rng.integers(3, 8))
        d.ellipse((m, m, 24 - m, 24 - m), fill=tuple(int(v) for v in (255 - base)))
        folder = root / f"group_{c:02d}"
        img.save(folder / f"img_{i:06d}.png")


def make_run(tmp: Path, n: int, seed: int = 0) -> Path:
    from imgclust.cluster import cluster
    from imgclust.outputs.report import save_report_data
    from imgclust.outputs.tables import write_csv, write_summary

    images, out = tmp / "images", tmp / "out"
    for c in range(K):
        (images / f"group_{c:02d}").mkdir(parents=True, exist_ok=True)
    step = max(1000, n // 16)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(draw_chunk, [(images, s, min(s + step, n), seed) for s in range(0, n, step)]))
    rng = np.random.default_rng(seed)
    group = np.arange(n) % K
    centres = rng.standard_normal((K, 8)).astype(np.float32) * 3
    X = centres[group] + rng.standard_normal((n, 8)).astype(np.float32)
    result = cluster(X, K, method="kmeans", seed=seed)
    out.mkdir()
    rows = [{"path": f"group_{g:02d}/img_{i:06d}.png", "cluster": int(lab), "distance": f"{d:.6g}", "status": "ok",
             "error": "", "label": f"group_{g:02d}"}
            for i, (g, lab, d) in enumerate(zip(group, result.labels, result.distances, strict=True))]
    write_csv(out / "assignments.csv", rows)
    write_summary(out / "summary.json", {"images_dir": str(images.resolve()), "k": K, "n_images": n, "n_ok": n,
                                         "features": "drawn colours", "method": "kmeans", "seed": seed,
                                         "cluster_sizes": result.sizes.tolist(),
                                         "config": {"features": "pixels", "method": "kmeans"}})
    save_report_data(out, X, result.labels, centers=result.centers)
    return out


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def measure(n: int, driver: Any) -> dict[str, float]:
    from selenium.webdriver.support.ui import WebDriverWait

    from imgclust.review.server import ReviewServer

    tmp = Path(tempfile.mkdtemp(prefix="imgclust-bench-review-"))
    try:
        t0 = time.perf_counter()
        out = make_run(tmp, n)
        made = time.perf_counter() - t0
        rss0 = rss_mb()
        t0 = time.perf_counter()
        srv = ReviewServer(out, cache=False)
        start = time.perf_counter() - t0
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        usable = "return document.body.dataset.ready === '1' && (() => { const s = document.querySelector(" \
                 "'section.cluster'); const im = s && s.querySelectorAll('figure.thumb img'); return im && " \
                 "im.length > 0 && Array.from(im).every(i => i.complete && i.naturalWidth > 0); })();"
        res = {"n": n, "make_run_s": made, "server_start_s": start}
        for key in ("page_usable_s", "page_usable_cached_s"):
            t0 = time.perf_counter()
            driver.get(srv.url)
            WebDriverWait(driver, 300, poll_frequency=0.05).until(lambda d: d.execute_script(usable))
            res[key] = time.perf_counter() - t0
        res["map_draw_ms"] = driver.execute_script(
            "app.base = null; const t = performance.now(); drawMap(); return performance.now() - t;")
        res["map_redraw_ms"] = driver.execute_script(  # what a drag or a selection costs: 100 images selected
            "for (let i = 0; i < 100; i++) app.selected.add(i); const t = performance.now(); drawMap([[0, 0], [50, 50]]);"
            "const dt = performance.now() - t; app.selected.clear(); return dt;")
        host, port = srv.server_address[:2]

        def post(route: str, body: Any) -> float:
            req = urllib.request.Request(f"http://{host}:{port}{route}", data=json.dumps(body).encode(),
                                         headers={"X-Imgclust-Token": srv.token, "Content-Type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=300) as resp:
                resp.read()
            return time.perf_counter() - t

        res["move_1000_s"] = post("/api/edit", {"edits": [{"op": "move", "rows": list(range(min(1000, n // 4))), "to": "new"}]})
        res["undo_s"] = post("/api/undo", {})
        res["server_rss_mb"] = rss_mb()
        res["server_rss_added_mb"] = res["server_rss_mb"] - rss0
        srv.shutdown()
        srv.close()
        thread.join(5)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="images in the large run (default 100,000)")
    parser.add_argument("--small", type=int, default=1_000, help="images in the small run (default 1,000)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_report_browser import open_chromium

    profile = Path(tempfile.mkdtemp(prefix="imgclust-bench-chromium-"))
    driver = open_chromium(profile)
    try:
        results = [measure(args.small, driver), measure(args.n, driver)]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    small, large = results
    rows = [("images", "n", "{:,.0f}"), ("drawing the images + run files (s)", "make_run_s", "{:.1f}"),
            ("server start (s)", "server_start_s", "{:.2f}"), ("page usable, cold thumbnails (s)", "page_usable_s", "{:.2f}"),
            ("page usable, cached thumbnails (s)", "page_usable_cached_s", "{:.2f}"),
            ("map drawn from scratch (ms)", "map_draw_ms", "{:.0f}"),
            ("map redrawn during a drag (ms)", "map_redraw_ms", "{:.0f}"), ("move 1,000 images (n/4 if fewer) (s)", "move_1000_s", "{:.3f}"),
            ("undo (s)", "undo_s", "{:.3f}"), ("server RSS (MB)", "server_rss_mb", "{:.0f}"),
            ("server RSS added by the review (MB)", "server_rss_added_mb", "{:.0f}")]
    print(f"{'':40s} {'small':>10s} {'large':>10s} {'large/small':>12s}")
    for label, key, fmt in rows:
        a, b = small[key], large[key]
        ratio = f"{b / a:.1f}x" if a else "-"
        print(f"{label:40s} {fmt.format(a):>10s} {fmt.format(b):>10s} {ratio:>12s}")


if __name__ == "__main__":
    main()
