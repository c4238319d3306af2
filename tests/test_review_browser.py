"""`imgclust review` driven in headless Chromium: every edit made on the real page, then reload, export and assign."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import draw_classes, draw_image, run_cli
from imgclust import edits
from imgclust.outputs.tables import read_assignments
from imgclust.pipeline import run
from imgclust.review.server import ReviewServer
from test_report_browser import open_chromium

pytestmark = pytest.mark.browser

HOSTILE_FILE = "<img src=x onerror=alert(1)>.png"
HOSTILE_NAME = "<img src=x onerror=alert(2)> & </script>"


@pytest.fixture()
def review(tmp_path: Path) -> Iterator[tuple[ReviewServer, Any]]:
    images = tmp_path / "images"
    draw_classes(images, 6)
    draw_image(images / "red" / HOSTILE_FILE, color=(220, 30, 30), seed=99)
    run(images, tmp_path / "out", features="pixels", k=3, cache=False, method="kmeans")
    srv = ReviewServer(tmp_path / "out", cache=False)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    driver = open_chromium(tmp_path / "chromium-profile")
    try:
        yield srv, driver
    finally:
        driver.quit()
        srv.shutdown()
        srv.close()
        thread.join(5)


def wait(driver: Any, script: str, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    wait(driver, "return document.body.dataset.ready === '1' && document.querySelectorAll('figure.thumb').length > 0")


def page_state(driver: Any) -> dict[str, Any]:
    return driver.execute_script("""
        return {version: Number(document.body.dataset.version),
                clusters: Array.from(document.querySelectorAll('section.cluster')).map(s => ({
                    id: Number(s.dataset.id), name: s.querySelector('.cname').textContent,
                    size: s.querySelector('.size').textContent})),
                edits: document.getElementById('edit-count').textContent,
                injected: document.querySelectorAll('img[src="x"], script:not([src])').length};""")


def act(driver: Any, script: str, *args: Any) -> dict[str, Any]:
    """Run ``script`` (it clicks something), then wait until the page shows the next state."""
    before = page_state(driver)["version"]
    driver.execute_script(script, *args)
    wait(driver, f"return Number(document.body.dataset.version) > {before} && !document.body.dataset.busy")
    wait(driver, "return document.querySelectorAll('section.cluster:not([data-loaded])').length === 0 || true")
    return page_state(driver)


def section_of(path: str) -> str:
    return f"document.querySelector('figure.thumb[data-path=\"{path}\"]').closest('section.cluster')"


def test_review_in_headless_chromium(review: tuple[ReviewServer, Any], tmp_path: Path, cli_env: dict) -> None:
    srv, driver = review
    out = srv.app.out_dir
    run_clusters = {r["path"]: int(r["cluster"]) for r in read_assignments(out)}
    red, green, blue = (run_clusters[f"{n}/{n}_0.png"] for n in ("red", "green", "blue"))
    assert len({red, green, blue}) == 3

    open_page(driver, srv.url)
    first = page_state(driver)
    assert len(first["clusters"]) == 3 and first["injected"] == 0
    captions = driver.execute_script("return Array.from(document.querySelectorAll('figcaption')).map(f => f.textContent);")
    assert HOSTILE_FILE in captions  # the hostile file name is shown as text
    assert driver.execute_script("return document.querySelectorAll('figure.thumb.outlier').length") >= 1

    # Hover on the map shows the image.
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "map")
    def client_xy(i: int) -> tuple[float, float]:  # offset of point i from the canvas centre, in CSS pixels
        return tuple(driver.execute_script("""
            const i = arguments[0], c = document.getElementById('map'), r = c.getBoundingClientRect();
            const [x, y] = canvasXY(i, c.width, c.height);
            return [x * r.width / c.width - r.width / 2, y * r.height / c.height - r.height / 2];""", i))
    point = srv.app.index["green/green_2.png"]
    x, y = client_xy(point)
    ActionChains(driver).move_to_element_with_offset(canvas, round(x), round(y)).perform()
    wait(driver, "const h = document.getElementById('hover'); const im = document.getElementById('hover-img');"
                 "return !h.hidden && im.complete && im.naturalWidth > 0;")

    # Rename red's cluster to a hostile name.
    state = act(driver, f"""const s = {section_of('red/red_0.png')};
        s.querySelector('.rename-name').value = arguments[0]; s.querySelector('.do-rename').click();""", HOSTILE_NAME)
    assert {c["name"] for c in state["clusters"] if c["id"] == red} == {HOSTILE_NAME} and state["injected"] == 0

    # Select two blue thumbnails on the page and move them to red's cluster.
    driver.execute_script("document.querySelector('figure.thumb[data-path=\"blue/blue_1.png\"]').click();"
                          "document.querySelector('figure.thumb[data-path=\"blue/blue_2.png\"]').click();")
    assert driver.find_element("id", "selection-count").text == "2 images selected"
    state = act(driver, "document.getElementById('move-to').value = arguments[0]; document.getElementById('move').click();",
                str(red))
    assert edits.load(out).state.labels[srv.app.index["blue/blue_1.png"]] == red

    # Lasso: a triangle drawn around one image selects it.
    point = srv.app.index["blue/blue_4.png"]
    x, y = client_xy(point)
    driver.execute_script("document.querySelector('input[name=tool][value=lasso]').click();")
    ActionChains(driver).move_to_element_with_offset(canvas, round(x) - 3, round(y) - 3).click_and_hold() \
        .move_by_offset(7, 0).move_by_offset(-3, 7).move_by_offset(-4, -7).release().perform()
    lassoed = driver.execute_script("return Array.from(app.selected);")
    assert point in lassoed and len(lassoed) < 5
    driver.execute_script("document.getElementById('clear-selection').click();"
                          "document.querySelector('input[name=tool][value=box]').click();")
    assert driver.find_element("id", "selection-count").text == "0 images selected"

    # Box-select one image on the map and move it to a new cluster.
    point = srv.app.index["green/green_3.png"]
    x, y = client_xy(point)
    ActionChains(driver).move_to_element_with_offset(canvas, round(x) - 2, round(y) - 2).click_and_hold() \
        .move_by_offset(4, 4).move_by_offset(1, 1).release().perform()
    chosen = driver.execute_script("return Array.from(app.selected);")
    assert point in chosen and len(chosen) < 5  # that image (and any drawn on the same pixels)
    boxed = {srv.app.paths[i] for i in chosen}
    state = act(driver, "document.getElementById('move-to').value = 'new'; document.getElementById('move').click();")
    assert len(state["clusters"]) == 4

    # Merge green's cluster into blue's; split red's (now 9 images) in two.
    state = act(driver, f"""const s = {section_of('blue/blue_0.png')};
        s.querySelector('.merge-from').value = arguments[0]; s.querySelector('.do-merge').click();""", str(green))
    assert green not in [c["id"] for c in state["clusters"]]
    state = act(driver, f"""const s = {section_of('red/red_0.png')};
        s.querySelector('.split-n').value = '2'; s.querySelector('.do-split').click();""")
    assert len(state["clusters"]) == 4

    # Exclude one image, then undo that.
    driver.execute_script("document.querySelector('figure.thumb[data-path=\"green/green_0.png\"]').click();")
    state = act(driver, "document.getElementById('exclude').click();")
    assert "1 excluded" in state["edits"]
    state = act(driver, "document.getElementById('undo').click();")
    assert "excluded" not in state["edits"]
    before_reload = edits.load(out)
    assert before_reload.n_edits == 5

    # Reload: the same state.
    open_page(driver, srv.url)
    again = page_state(driver)
    assert [(c["id"], c["name"], c["size"]) for c in again["clusters"]] == \
           [(c["id"], c["name"], c["size"]) for c in state["clusters"]]
    assert again["edits"] == state["edits"] == "5 edits"
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []
    if os.environ.get("IMGCLUST_SCREENSHOT_DIR"):
        driver.save_screenshot(str(Path(os.environ["IMGCLUST_SCREENSHOT_DIR"]) / "review-test.png"))

    # Export gives the edited folders; assign follows the edits.
    got = run_cli(["export", str(out), "--to", str(tmp_path / "sorted")], cli_env)
    assert got.returncode == 0, got.stderr
    folders = {p.name: sorted(f.name for f in p.iterdir()) for p in (tmp_path / "sorted").iterdir() if p.is_dir()}
    edited = edits.load(out)
    expected: dict[int, list[str]] = {}
    for path, c in zip(edited.state.paths, edited.state.labels.tolist(), strict=True):
        expected.setdefault(c, []).append(path.rsplit("/", 1)[-1])
    from imgclust.outputs.export import safe_folder_name

    named = safe_folder_name(HOSTILE_NAME, "x")
    assert named in folders and sorted(folders) == sorted(
        named if c in edited.given_names else f"cluster_{c:02d}" for c in expected)
    for c, files in expected.items():
        assert folders[named if c in edited.given_names else f"cluster_{c:02d}"] == sorted(files)
    assert folders[f"cluster_{blue:02d}"] == sorted(f"{n}_{i}.png" for n in ("blue", "green") for i in range(6)
                                                   if f"{n}/{n}_{i}.png" not in {"blue/blue_1.png", "blue/blue_2.png", *boxed})

    got = run_cli(["assign", str(out / "model"), str(srv.app.images_dir), "--out", str(tmp_path / "assigned"),
                   "--no-cache", "-q"], cli_env)
    assert got.returncode == 0, got.stderr
    assigned = {r["path"]: int(r["cluster"]) for r in read_assignments(tmp_path / "assigned")}
    # Green's cluster was merged away: no image goes there; the images left in blue's cluster stay there.
    assert green not in assigned.values() and set(assigned.values()) <= set(edited.clusters)
    # Each image goes to the nearest centre of the edited clusters (k-means: no transform), computed here directly.
    import numpy as np

    from imgclust.pipeline import run_vectors

    X = run_vectors(out, cache=False)
    ids = np.array(edited.clusters)
    centres = np.stack([X[edited.state.labels == c].mean(axis=0) for c in ids])
    nearest = ids[np.argmin(((X[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)]
    assert [assigned[p] for p in edited.state.paths] == nearest.tolist()
    import json

    summary = json.loads((tmp_path / "assigned" / "summary.json").read_text())
    assert summary["n_edits"] == 5 and summary["cluster_names"][str(red)] == HOSTILE_NAME
