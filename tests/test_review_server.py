"""The review server without a browser: the token, the path checks, the edit routes, the bind address, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import draw_classes, draw_image
from imgclust import edits
from imgclust.outputs.tables import read_assignments
from imgclust.pipeline import run
from imgclust.review.server import ReviewServer

HOSTILE = "<img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review")
    draw_classes(root / "images", 5)
    draw_image(root / "images" / "red" / HOSTILE, color=(220, 30, 30), seed=99)
    draw_image(root / "images" / "red" / "100%25 red #1.png", color=(220, 30, 30), seed=98)
    run(root / "images", root / "out", features="pixels", k=3, cache=False, method="kmeans")
    (root / "secret.txt").write_text("not for the browser")
    return root / "out"


@pytest.fixture()
def server(base_run: Path, tmp_path: Path) -> Iterator[ReviewServer]:
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    srv = ReviewServer(out, cache=False)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.close()
        thread.join(5)


def get(srv: ReviewServer, path: str, *, token: bool = True, headers: dict[str, str] | None = None,
        data: Any = None) -> tuple[int, bytes, Any]:
    host, port = srv.server_address[:2]
    sep = "&" if "?" in path else "?"
    url = f"http://{host}:{port}{path}" + (f"{sep}token={srv.token}" if token else "")
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def test_binds_loopback_on_a_free_port(server: ReviewServer) -> None:
    assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0
    assert server.url.startswith(f"http://127.0.0.1:{server.server_address[1]}/?token=") and len(server.token) >= 30


@pytest.mark.parametrize("path", ["/", "/api/state", "/api/map", "/static/app.js", "/thumb/red/red_0.png",
                                  "/image/red/red_0.png"])
def test_no_token_is_refused(server: ReviewServer, path: str) -> None:
    status, body, _ = get(server, path, token=False)
    assert status == 403 and b"token" in body
    status, _, _ = get(server, path + "?token=wrong", token=False)
    assert status == 403
    status, _, _ = get(server, path, token=False, headers={"Cookie": "imgclust_review=wrong"})
    assert status == 403


def test_token_then_cookie(server: ReviewServer) -> None:
    status, body, headers = get(server, "/")
    assert status == 200 and b"imgclust review" in body
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, _, _ = get(server, "/api/state", token=False, headers={"Cookie": cookie.split(";")[0]})
    assert status == 200


def test_changes_need_the_header(server: ReviewServer) -> None:
    edit = {"edits": [{"op": "rename", "cluster": 0, "name": "x"}]}
    status, _, _ = get(server, "/api/edit", data=edit)  # token in the address only: a forged form could do that
    assert status == 403
    status, body, _ = get(server, "/api/edit", data=edit, headers={"X-Imgclust-Token": server.token})
    assert status == 200 and json.loads(body)["n_edits"] == 1
    assert not (server.app.out_dir / "edits.jsonl").read_text().count("\n") == 0


def test_serves_listed_images_with_odd_names(server: ReviewServer) -> None:
    from urllib.parse import quote

    for name in (HOSTILE, "100%25 red #1.png"):
        status, body, headers = get(server, "/thumb/red/" + quote(name, safe=""))
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8", name
    status, body, headers = get(server, "/image/red/red_0.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert list((server.app.out_dir / ".thumbs").glob("*.jpg"))  # thumbnails are kept on disk


@pytest.mark.parametrize("kind", ["image", "thumb", "preview"])
@pytest.mark.parametrize("path", [
    "../secret.txt", "..%2Fsecret.txt", "%2e%2e/secret.txt", "%2e%2e%2fsecret.txt", "%252e%252e%252fsecret.txt",
    "red/../../secret.txt", "red/..%2F..%2Fsecret.txt", "red%2F..%2F..%2Fsecret.txt", "..\\secret.txt",
    "%2Fetc%2Fpasswd", "/etc/passwd", "//etc/passwd", "%2F%2Fetc%2Fpasswd", "red/./red_0.png", "./red/red_0.png",
    "red//red_0.png", "red/red_0.png%00", "red%5Cred_0.png", "RED/red_0.png", "red/unlisted.png", "%ff%fe",
])
def test_paths_outside_the_list_are_404(server: ReviewServer, path: str, kind: str) -> None:
    (server.app.images_dir / "red" / "unlisted.png").write_bytes((server.app.images_dir / "red" / "red_1.png").read_bytes())
    status, body, _ = get(server, f"/{kind}/{path}")
    assert status == 404, (path, body[:80])
    (server.app.images_dir / "red" / "unlisted.png").unlink()


def test_absolute_path_of_a_listed_image_is_404(server: ReviewServer) -> None:
    from urllib.parse import quote

    full = str(server.app.images_dir / "red" / "red_0.png")
    for raw in (quote(full, safe=""), quote(full, safe="/")):
        status, _, _ = get(server, "/image/" + raw)
        assert status == 404


def test_symlink_leading_outside_is_404(server: ReviewServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    draw_image(outside, color=(1, 2, 3))
    listed = server.app.images_dir / "blue" / "blue_4.png"
    assert "blue/blue_4.png" in {r["path"] for r in read_assignments(server.app.out_dir)}
    saved = listed.read_bytes()
    listed.unlink()
    listed.symlink_to(outside)
    try:
        for kind in ("image", "thumb"):
            status, _, _ = get(server, f"/{kind}/blue/blue_4.png")
            assert status == 404
        inside = server.app.images_dir / "blue" / "blue_3.png"  # a link that stays inside is fine
        listed.unlink()
        listed.symlink_to(inside)
        status, _, _ = get(server, "/image/blue/blue_4.png")
        assert status == 200
    finally:
        listed.unlink()
        listed.write_bytes(saved)


def test_edit_routes_and_errors(server: ReviewServer) -> None:
    h = {"X-Imgclust-Token": server.token}
    state = json.loads(get(server, "/api/state")[1])
    ids = [c["id"] for c in state["clusters"]]
    status, body, _ = get(server, "/api/edit", data={"edits": [{"op": "merge", "clusters": [ids[0], 99]}]}, headers=h)
    assert status == 400 and "Unknown cluster 99" in json.loads(body)["error"]
    status, body, _ = get(server, "/api/edit", data={"edits": [{"op": "move", "rows": [0, 1], "to": "new"}]}, headers=h)
    assert status == 200 and len(json.loads(body)["clusters"]) == 4
    status, body, _ = get(server, "/api/split", data={"cluster": ids[1], "n": 2}, headers=h)
    assert status == 200, body
    status, body, _ = get(server, "/api/undo", data={}, headers=h)
    assert status == 200 and json.loads(body)["n_edits"] == 1 and json.loads(body)["can_redo"]
    page = json.loads(get(server, f"/api/cluster?id={ids[2]}&page=0&per=3")[1])
    assert len(page["items"]) == 3 and page["total"] >= 3
    dists = [it["distance"] for it in page["items"]]
    assert dists == sorted(dists)  # nearest the centre first
    assert edits.load(server.app.out_dir).n_edits == 1  # what the page did is on disk
    summary = json.loads((server.app.out_dir / "summary.json").read_text())
    assert summary["edits"]["n_edits"] == 1


def _start_cli(out: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    # Ctrl-C's signal as a terminal sends it: a test suite started in the background by a shell without job
    # control inherits SIGINT ignored, and Python then leaves it ignored in the child too.
    return subprocess.Popen([sys.executable, "-m", "imgclust", "review", str(out), "--no-browser", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "?token=" in line:
            return line.split(" at ", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no address printed; stderr: {proc.stderr.read() if proc.stderr else ''}")


def test_cli_loopback_by_default_and_ctrl_c_stops_cleanly(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    proc = _start_cli(out)
    try:
        url = _wait_for_url(proc)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Stopped. 0 edits" in stdout and "Traceback" not in stderr and "Warning" not in stderr


def test_cli_other_interface_only_with_host_and_a_warning(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    proc = _start_cli(out, "--host", "0.0.0.0")
    try:
        url = _wait_for_url(proc)
        assert url.startswith("http://0.0.0.0:")
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert "Warning:" in stderr and "other machines" in stderr
