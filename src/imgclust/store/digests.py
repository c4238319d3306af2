"""Content digests of files, remembered by file identity (path, size, modification time).

One SQLite table, ``CACHE_DIR/files.sqlite``: ``stat key -> BLAKE2b-128 of the file's bytes``. It
serves the content identity of the embedding cache (``--identity content``) and duplicate detection,
so that a rerun over unchanged files reads none of them again: a file whose path, size and
modification time are unchanged is taken to have unchanged bytes (what ``make`` and ``rsync``
assume too). A file edited in place gets a new modification time, hence a new stat key, and is
hashed again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import CacheError
from .vectors import BUSY_TIMEOUT, LOOKUP_CHUNK, _connect

DIGESTS = "files.sqlite"


def stat_key(path: str | os.PathLike[str], size: int, mtime_ns: int) -> str:
    """The stat identity of a file: BLAKE2b-128 of its absolute path, size and modification time (reads nothing)."""
    blob = f"{os.fsencode(path)!r}|{size}|{mtime_ns}".encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def content_digest(path: str | os.PathLike[str]) -> str:
    """BLAKE2b-128 of the file's bytes, as 32 hex digits. Raises OSError when it cannot be read."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FileDigests:
    """``stat key -> content digest`` for every file hashed through it (process- and thread-safe).

    Args:
        root: the cache folder (``CACHE_DIR``); the table lives in ``root/files.sqlite``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root) / DIGESTS
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(self.path)
            self._db.execute("CREATE TABLE IF NOT EXISTS digests (stat_key TEXT PRIMARY KEY, digest TEXT NOT NULL)"
                             " WITHOUT ROWID")
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"Cannot open the file digest table {self.path} ({exc}). Check that the cache folder "
                             "is writable, or pass another --cache (or --no-cache).") from exc

    def get_many(self, stat_keys: Sequence[str]) -> list[str | None]:
        """The digest of each stat key, None where unknown."""
        found: dict[str, str] = {}
        for s in range(0, len(stat_keys), LOOKUP_CHUNK):
            chunk = list(stat_keys[s:s + LOOKUP_CHUNK])
            with self._lock:
                found.update(self._db.execute(
                    f"SELECT stat_key, digest FROM digests WHERE stat_key IN ({','.join('?' * len(chunk))})", chunk))
        return [found.get(k) for k in stat_keys]

    def put_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Remember ``(stat key, digest)`` pairs (one transaction)."""
        if not pairs:
            return
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO digests (stat_key, digest) VALUES (?, ?)", pairs)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise CacheError(f"Cannot write the file digest table {self.path} ({exc}). Free some space, pass "
                             "another --cache, or run with --no-cache.") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["BUSY_TIMEOUT", "DIGESTS", "FileDigests", "content_digest", "stat_key"]
