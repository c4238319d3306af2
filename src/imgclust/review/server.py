"""The review app's HTTP server: routes, the token, and the checks on every file it serves.

Standard library only (:class:`http.server.ThreadingHTTPServer`). Rules:

- It listens on 127.0.0.1 unless told otherwise; every request must carry the random token made
  at start: in the address (``?token=``, then kept in a cookie that is ``HttpOnly`` and
  ``SameSite=Strict``) or, for the page's own requests, in the ``X-Imgclust-Token`` header. A
  request that changes anything (POST) must carry the header, so another site cannot forge one.
  Without the token: 403.
- It serves only the images listed (status ok) in the run's assignments.csv, by their exact
  ``path``: anything else, including ``..``, absolute paths, encoded or double-encoded variants,
  and a listed file whose real path (links followed) is outside the images folder, gets 404.
- Thumbnails are made on first request and kept in ``OUT_DIR/.thumbs/`` (JPEG, keyed by the
  image's path, size and modification time).
- Edits go through :class:`imgclust.edits.Journal` (appended and fsync'ed to edits.jsonl at once)
  under one lock; summary.json's ``edits`` entry is updated after each.
- Page and answers are sent with a strict Content-Security-Policy (scripts and images from the
  server only), so a hostile file name could not run a script even if the page failed to escape it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import mimetypes
import os
import secrets
import threading
import urllib.parse
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import edits
from .._fs import atomic_write_bytes
from ..errors import ImgclustError, InputError
from ..outputs.colors import cluster_colors

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "X-Imgclust-Token"
COOKIE = "imgclust_review"
THUMBS = ".thumbs"
THUMB_SIDE = 160
PREVIEW_SIDE = 512
MAX_PER_PAGE = 500
MAX_BODY = 32 * 1024 * 1024
OUTLIER_PERCENTILE = 95.0
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "app.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ReviewApp:
    """The data behind the page: the run, its journal, the map and the thumbnail cache. Thread-safe."""

    def __init__(self, out_dir: str | os.PathLike[str], *, cache: Any = True) -> None:
        from ..outputs.report import load_report_data

        self.out_dir = Path(out_dir)
        self.journal = edits.Journal(self.out_dir)
        self.lock = threading.Lock()
        self.cache = cache
        summary = self.journal.summary
        self.images_dir = Path(summary.get("images_dir", ""))
        self.images_real = os.path.realpath(self.images_dir)
        state = self.journal.edited.state
        self.paths = state.paths
        self.index = state.index
        ok = [r for r in self.journal.rows if r.get("status") == "ok" and r.get("cluster", "") != ""]
        self.distances = np.array([float(r.get("distance") or "nan") for r in ok], dtype=np.float64)
        self.labels_true = state.labels_true
        data = load_report_data(self.out_dir, state.original)
        self.coords = None if data is None else np.asarray(data["coords"], dtype=np.float32)
        self.thumb_dir = self.out_dir / THUMBS
        self._X: np.ndarray | None = None
        run_k = max(int(summary.get("k", 0)), 1)
        self._base_colors = cluster_colors(run_k)
        self.version = 0

    # --- state ----------------------------------------------------------------------------------

    def color(self, c: int) -> str:
        if c < len(self._base_colors):
            return self._base_colors[c]
        import colorsys

        r, g, b = colorsys.hsv_to_rgb((c * 0.618034) % 1.0, 0.75, 0.85)
        return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"

    def state(self) -> dict[str, Any]:
        with self.lock:
            if self.journal.sync():  # edited meanwhile by imgclust edit or another page
                self.version += 1
            ed = self.journal.edited
            mix = edits.label_mix(ed)
            clusters = [{"id": c, "name": ed.names.get(c, ""), "given": c in ed.given_names,
                         "suggested": self.journal.suggested.get(c, ""), "size": n, "color": self.color(c),
                         "labels": mix.get(c, [])} for c, n in ed.sizes.items()]
            scores = edits.edited_metrics(ed) if self.labels_true is not None else None
            return {"version": self.version, "clusters": clusters, "n_edits": ed.n_edits,
                    "can_undo": self.journal.can_undo, "can_redo": self.journal.can_redo,
                    "n_excluded": ed.n_excluded, "n_images": len(self.paths), "has_map": self.coords is not None,
                    "has_labels": self.labels_true is not None, "metrics": scores,
                    "run": {"features": self.journal.summary.get("features", ""),
                            "method": self.journal.summary.get("method", ""), "out_dir": str(self.out_dir)}}

    def map_bytes(self) -> bytes:
        """x, y of every image (float32, interleaved), scaled to [0, 1]."""
        if self.coords is None:
            return b""
        xy = self.coords.astype(np.float64)
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        return ((xy - lo) / span).astype("<f4").tobytes()

    def labels_bytes(self) -> bytes:
        with self.lock:
            return self.journal.edited.state.labels.astype("<i4").tobytes()

    def cluster_page(self, c: int, page: int, per: int) -> dict[str, Any]:
        with self.lock:
            st = self.journal.edited.state
            members = np.flatnonzero(st.labels == c)
            original = st.original
        if len(members) == 0:
            raise KeyError(c)
        d = self.distances[members]
        finite = d[np.isfinite(d)]
        cut = float(np.percentile(finite, OUTLIER_PERCENTILE)) if len(finite) >= 5 else float("inf")
        order = members[np.argsort(np.nan_to_num(d, nan=np.inf), kind="stable")]
        per = max(1, min(per, MAX_PER_PAGE))
        start = max(page, 0) * per
        items = [{"i": int(i), "path": self.paths[i],
                  "label": self.labels_true[i] if self.labels_true is not None else "",
                  "distance": None if not np.isfinite(self.distances[i]) else round(float(self.distances[i]), 4),
                  "outlier": bool(self.distances[i] > cut), "moved": bool(original[i] != c)}
                 for i in order[start:start + per]]
        return {"id": c, "total": int(len(members)), "page": max(page, 0), "per": per, "items": items,
                "outlier_distance": None if cut == float("inf") else round(cut, 4)}

    def point(self, i: int) -> dict[str, Any]:
        with self.lock:
            c = int(self.journal.edited.state.labels[i])
        return {"i": i, "path": self.paths[i], "cluster": c,
                "label": self.labels_true[i] if self.labels_true is not None else ""}

    # --- edits ----------------------------------------------------------------------------------

    def _rows_to_paths(self, edit: dict[str, Any]) -> dict[str, Any]:
        if "rows" not in edit:
            return edit
        rows = edit.pop("rows")
        if not isinstance(rows, list) or not all(isinstance(i, int) and 0 <= i < len(self.paths) for i in rows):
            raise edits.EditError("'rows' must be a list of image numbers from this page.")
        edit["paths"] = [self.paths[i] for i in rows]
        return edit

    def commit(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("edits"), list):
            raise edits.EditError("Send {\"edits\": [...]}.")
        batch = [self._rows_to_paths(dict(e)) if isinstance(e, dict) else e for e in payload["edits"]]
        with self.lock:
            self.journal.commit(batch, source="review")
            self._after_edit()
        return self.state()

    def split(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise edits.EditError("Send {\"cluster\": C, \"n\": N}.")
        with self.lock:
            if self._X is None:
                from ..pipeline import run_vectors

                self._X = run_vectors(self.out_dir, cache=self.cache, purpose="the cluster cannot be split")
            summary = self.journal.summary
            planned = edits.plan_split(self.journal.edited.state, payload.get("cluster"), payload.get("n"),  # type: ignore[arg-type]
                                       self._X,
                                       method=str(summary.get("method", "kmeans")), seed=int(summary.get("seed", 0)))
            self.journal.commit([planned], source="review")
            self._after_edit()
        return self.state()

    def undo(self, redo: bool = False) -> dict[str, Any]:
        with self.lock:
            if redo:
                self.journal.redo(source="review")
            else:
                self.journal.undo(source="review")
            self._after_edit()
        return self.state()

    def _after_edit(self) -> None:
        self.version += 1
        try:
            edits.write_summary_entry(self.out_dir, self.journal.edited)
        except ImgclustError as exc:  # the edit itself is safe in edits.jsonl
            log.warning("Could not update summary.json: %s", exc)

    # --- files ----------------------------------------------------------------------------------

    def image_file(self, raw: str) -> Path | None:
        """The file for the URL part after ``/image/`` or ``/thumb/``, or None (-> 404).

        ``raw`` is decoded once; the result must be exactly a clustered ``path`` of assignments.csv,
        relative, without ``..``, and its real path must lie inside the images folder.
        """
        try:
            rel = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None
        if rel not in self.index or not rel or rel.startswith(("/", "\\")) or os.path.isabs(rel):
            return None
        if any(part in ("..", ".") for part in rel.replace("\\", "/").split("/")) or "\x00" in rel:
            return None
        full = os.path.join(self.images_dir, rel)
        real = os.path.realpath(full)
        if os.path.commonpath([real, self.images_real]) != self.images_real or not os.path.isfile(real):
            return None
        return Path(real)

    def thumbnail(self, path: Path, side: int) -> bytes | None:
        """A JPEG of at most ``side`` pixels, made once and kept in OUT_DIR/.thumbs/."""
        from ..outputs.report import thumbnail_jpeg

        try:
            st = path.stat()
        except OSError:
            return None
        key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{side}".encode("utf-8", "surrogateescape"))
        cached = self.thumb_dir / f"{key.hexdigest()[:32]}.jpg"
        try:
            return cached.read_bytes()
        except OSError:
            pass
        data = thumbnail_jpeg(path, side, quality=80)
        if data is None:
            return None
        try:
            atomic_write_bytes(cached, data)
        except ImgclustError as exc:
            log.info("Could not keep a thumbnail in %s: %s", self.thumb_dir, exc)
        return data


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    # --- plumbing -------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store" if not ctype.startswith("image/") else "private, max-age=3600")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=True).encode("ascii"), "application/json")

    def _error(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def _token_ok(self, query: dict[str, list[str]], *, header_only: bool = False) -> bool:
        token = self.server.token
        offered = [self.headers.get(TOKEN_HEADER, "")]
        if not header_only:
            offered += query.get("token", [])
            cookie = SimpleCookie()
            try:
                cookie.load(self.headers.get("Cookie", ""))
            except Exception:  # noqa: BLE001 - a malformed cookie header is just no token
                cookie = SimpleCookie()
            if COOKIE in cookie:
                offered.append(cookie[COOKIE].value)
        return any(o and hmac.compare_digest(o.encode(), token.encode()) for o in offered)

    # --- routes ---------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._guard(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guard(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guard(self._post)

    def _guard(self, route: Any) -> None:
        try:
            route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("Error answering %s %s", self.command, self.path.split("?")[0])
            try:
                self._error(500, "Internal error; see the terminal running imgclust review.")
            except OSError:
                pass

    def _get(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if not self._token_ok(query):
            self._error(403, "Forbidden: open the address with its token, as imgclust review printed it.")
            return
        app = self.server.app
        route = url.path
        if route in ("/", "/index.html"):
            headers = {}
            if "token" in query:  # keep the token in a cookie, so images and reloads carry it
                headers["Set-Cookie"] = f"{COOKIE}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(200, _static("index.html"), STATIC_FILES["index.html"], headers)
        elif route.startswith("/static/") and route[len("/static/"):] in STATIC_FILES:
            name = route[len("/static/"):]
            self._send(200, _static(name), STATIC_FILES[name])
        elif route == "/api/token":
            self._json({"token": self.server.token})
        elif route == "/api/state":
            self._json(app.state())
        elif route == "/api/map":
            self._send(200, app.map_bytes(), "application/octet-stream")
        elif route == "/api/labels":
            self._send(200, app.labels_bytes(), "application/octet-stream")
        elif route == "/api/cluster":
            try:
                c, page, per = (int(query.get(k, [d])[0]) for k, d in (("id", "x"), ("page", "0"), ("per", "60")))
                self._json(app.cluster_page(c, page, per))
            except (ValueError, KeyError):
                self._error(404, "No such cluster.")
        elif route == "/api/point":
            try:
                i = int(query.get("i", ["x"])[0])
                if not 0 <= i < len(app.paths):
                    raise ValueError
                self._json(app.point(i))
            except ValueError:
                self._error(404, "No such image.")
        elif route.startswith(("/image/", "/thumb/", "/preview/")):
            kind, _, raw = route[1:].partition("/")
            # The raw (still encoded) path of the request line: decoded once here, never twice.
            raw = urllib.parse.urlsplit(self.path).path[len(kind) + 2:]
            path = app.image_file(raw)
            if path is None:
                self._error(404, "Not an image of this run.")
                return
            if kind == "image":
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if not ctype.startswith("image/"):
                    ctype = "application/octet-stream"
                self._send(200, path.read_bytes(), ctype)
                return
            data = app.thumbnail(path, THUMB_SIDE if kind == "thumb" else PREVIEW_SIDE)
            if data is None:
                self._error(404, "This image cannot be read now.")
            else:
                self._send(200, data, "image/jpeg")
        else:
            self._error(404, "Not found.")

    def _post(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not self._token_ok({}, header_only=True):
            self._error(403, f"Forbidden: changes need the {TOKEN_HEADER} header.")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._error(413, "Request too large.")
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json({"error": "The request is not JSON."}, 400)
            return
        app = self.server.app
        routes = {"/api/edit": app.commit, "/api/split": app.split, "/api/undo": lambda p: app.undo(),
                  "/api/redo": lambda p: app.undo(redo=True)}
        if url.path not in routes:
            self._error(404, "Not found.")
            return
        try:
            self._json(routes[url.path](payload))
        except ImgclustError as exc:
            self._json({"error": str(exc)}, 400)


def _static(name: str) -> bytes:
    return resources.files("imgclust.review").joinpath("static", name).read_bytes()


class ReviewServer(ThreadingHTTPServer):
    """The review app bound to ``host:port`` (port 0: a free one), with a fresh random token.

    Example:
        >>> server = ReviewServer("out")  # doctest: +SKIP
        >>> print(server.url)  # doctest: +SKIP
        >>> server.serve_forever()  # doctest: +SKIP
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, out_dir: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0,
                 cache: Any = True, token: str | None = None) -> None:
        import socket

        self.app = ReviewApp(out_dir, cache=cache)
        self.token = token or secrets.token_urlsafe(24)
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise InputError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}. "
                             "Choose another --port (0 picks a free one).") from exc

    @property
    def journal(self) -> edits.Journal:
        return self.app.journal

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/?token={self.token}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that drops a connection (a reload cancels its requests) is not an error worth a traceback."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("Connection from %s dropped: %s", client_address, exc)
            return
        log.exception("Error answering %s", client_address)

    def close(self) -> None:
        """Stop serving (when serve_forever runs in another thread) and free the port."""
        self.server_close()
