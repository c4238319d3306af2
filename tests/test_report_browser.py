"""The report opened in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import draw_image
from imgclust.pipeline import run

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")


def find_chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) executables, or None when either is missing."""
    browser = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if Path(p).is_file()), None)
    return (browser, driver) if browser and driver else None


def open_chromium(profile: Path) -> Any:
    """A headless Chromium driven by Selenium, with a fresh profile and browser console logs captured."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        pytest.skip("Chromium or chromedriver not found (Debian: apt-get install chromium chromium-driver; "
                    "scripts/test.sh installs them)")
    browser, driver = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))


@pytest.fixture()
def chromium(tmp_path: Path) -> Iterator[Any]:
    drv = open_chromium(tmp_path / "chromium-profile")
    try:
        yield drv
    finally:
        drv.quit()


def page_checks(driver: Any, report: Path) -> dict[str, Any]:
    """Open ``report`` and collect what the assertions need (also used to take the dataset screenshots)."""
    driver.get(report.resolve().as_uri())
    return {
        "errors": [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"],
        "images": driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt.slice(0, 80)]);"),
        "cluster_sections": driver.execute_script("return document.querySelectorAll('section.cluster').length;"),
        "injected": driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length;"),
        "text": driver.execute_script("return document.body.innerText;"),
    }


def test_report_in_headless_chromium(tmp_path: Path, image_folder: Path, chromium: Any) -> None:
    draw_image(image_folder / "red" / HOSTILE, color=(220, 30, 30), seed=7)
    (image_folder / "blue" / "broken.jpg").write_bytes(b"this is text, not a JPEG")
    out = tmp_path / "out"
    result = run(image_folder, out, features="pixels", k=3, cache=False)
    report = out / "report.html"

    got = page_checks(chromium, report)
    shot = tmp_path / "report.png"
    chromium.save_screenshot(str(shot))

    assert got["errors"] == []
    assert len(got["images"]) >= result.summary["n_ok"]  # every image shown once (k=3, 19 images) + plots
    not_loaded = [alt for complete, width, alt in got["images"] if not complete or width == 0]
    assert not_loaded == []
    assert got["cluster_sections"] == result.clustering.k == 3
    assert got["injected"] == 0
    assert HOSTILE in got["text"]  # the hostile name is shown as text
    assert "broken.jpg" in got["text"] and "not_an_image" in got["text"]
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        chromium.switch_to.alert.text  # noqa: B018 - no script ran, so no alert is open
    assert shot.stat().st_size > 10_000
    if os.environ.get("IMGCLUST_SCREENSHOT_DIR"):  # keep the screenshot to look at
        shutil.copy(shot, os.environ["IMGCLUST_SCREENSHOT_DIR"])
