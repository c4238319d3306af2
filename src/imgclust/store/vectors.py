"""Fixed-length float32 vectors by key: an SQLite index over append-only raw float32 segment files.

Layout of a store folder::

    index.sqlite (+ -wal, -shm)   key -> (segment, row); segment id -> file name.  SQLite in WAL mode
    seg-<uuid>.f32                raw float32 rows of ``dim`` values, appended by one writer only

Why this design (and not LMDB or zarr): SQLite ships with Python (no new dependency, no native
build), its WAL mode gives many readers and serialised short write transactions across processes
on one machine, and it survives ``kill -9`` at any instant by construction. The vectors themselves
stay out of the database, in plain raw float32 files (memory-mappable by any tool): a lookup reads
just its rows with positioned reads, so reading 100,000 vectors out of ten million reads only their
bytes, and the index holds about 50-70 bytes per key on disk and nothing per key in memory. LMDB needs a map size fixed in advance and a compiled package; zarr
has no key index (we would still need one) and its chunk files are rewritten when appended to.

Write protocol (:meth:`VectorStore.put_many`), one batch:

1. append the rows to this writer's own segment file (each writer object opens a new file named by
   a random UUID, so no two processes ever write into one file) and ``fdatasync`` it;
2. then, in one SQLite transaction, insert ``key -> (segment, row)`` for the batch.

A kill between 1 and 2 leaves rows that no key points to (wasted bytes, never read); a kill inside
2 rolls the transaction back. A key only ever points at rows that are completely on disk, so the
store needs no repair after a crash. The cost of a batch is O(batch): nothing older is rewritten.
A key stored again points at its newest copy (``INSERT OR REPLACE``; the old rows stay, unread,
so a reader that already located them still reads whole rows): a Dask shard that runs twice only
wastes bytes. A segment file found shorter than its index says (damaged on disk, or truncated by
hand) is not trusted: its keys count as absent, so they are computed again and re-indexed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import CacheError

log = logging.getLogger(__name__)

INDEX = "index.sqlite"
SEGMENT_GLOB = "seg-*.f32"
# Keys per SQL statement (SQLite allows 32,766 parameters since 3.32; stay well below).
LOOKUP_CHUNK = 5000
# Seconds a writer waits for another process's write transaction before giving up.
BUSY_TIMEOUT = 120.0
# Rows read per positioned-read pass (a buffer of READ_CHUNK x dim float32 at most).
READ_CHUNK = 4096

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, segment INTEGER NOT NULL, row INTEGER NOT NULL)"
    " WITHOUT ROWID",
)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives any process crash; only a power cut may lose the last
    # transactions, which then point at nothing (the rows were fsynced first) and are recomputed.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _pread_exact(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(f"unexpected end of file at byte {offset + done}")
        done += got


class VectorStore:
    """Vectors of length ``dim`` (float32) by string key, in ``folder``. Thread- and process-safe.

    Args:
        folder: the store's folder (created if missing).
        dim: the vector length; every segment of the folder holds rows of this length.
        durable: ``fdatasync`` each appended batch before indexing it (default). Without it a
            process crash is still safe; a power cut may leave indexed rows unwritten.

    Example:
        >>> store = VectorStore("/tmp/s", dim=4)  # doctest: +SKIP
        >>> store.put_many(["a", "b"], np.ones((2, 4), np.float32))  # doctest: +SKIP
        >>> store.get_many(["b"]).shape  # doctest: +SKIP
        (1, 4)
    """

    def __init__(self, folder: str | os.PathLike[str], dim: int, *, durable: bool = True) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        self.folder = Path(folder)
        self.dim = dim
        self.durable = durable
        self._row_bytes = 4 * dim
        self._lock = threading.Lock()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open_index()
            except sqlite3.DatabaseError as exc:  # not a database (damaged): start a new one, trust nothing
                log.warning("The embedding store index in %s is damaged (%s); starting an empty one, so its "
                            "vectors will be computed again.", self.folder, exc)
                for stale in [*self.folder.glob(INDEX + "*"), *self.folder.glob(SEGMENT_GLOB)]:
                    stale.unlink(missing_ok=True)
                self._db = self._open_index()
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"Cannot open the embedding store in {self.folder} ({exc}). Check that the folder "
                             "is writable, or pass another --cache (or --no-cache).") from exc
        self._pid = os.getpid()
        self._fd: int | None = None
        self._segment: int | None = None
        self._rows = 0
        self._names: dict[int, str] = {}

    def _open_index(self) -> sqlite3.Connection:
        db = _connect(self.folder / INDEX)
        try:
            for statement in _SCHEMA:
                db.execute(statement)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _check_pid(self) -> None:
        """In a forked child: its own index connection and its own segment (never the parent's). Hold the lock."""
        if self._pid != os.getpid():
            self._pid, self._fd, self._segment, self._rows = os.getpid(), None, None, 0
            self._db = self._open_index()

    # -- writing ----------------------------------------------------------------------------------
    def _open_segment(self) -> None:
        name = f"seg-{uuid.uuid4().hex}.f32"
        cur = self._db.execute("INSERT INTO segments (name) VALUES (?)", (name,))
        self._segment = int(cur.lastrowid or 0)
        self._fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._rows = 0
        self._names[self._segment] = name

    def put_many(self, keys: Sequence[str], X: np.ndarray) -> None:
        """Append one batch (``X`` of shape (len(keys), dim)); a key stored before now points here.

        Raises:
            CacheError: the segment or the index cannot be written (disk full, permission).
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.shape != (len(keys), self.dim):
            raise ValueError(f"expected shape ({len(keys)}, {self.dim}), got {X.shape}")
        if not len(keys):
            return
        with self._lock:
            self._check_pid()
            try:
                if self._fd is None:
                    self._open_segment()
                assert self._fd is not None and self._segment is not None
                start = self._rows
                data = memoryview(X.reshape(-1).view(np.uint8).data)  # type: ignore[arg-type]
                offset = start * self._row_bytes
                written = 0
                try:
                    while written < len(data):
                        written += os.pwrite(self._fd, data[written:], offset + written)
                    if self.durable:
                        os.fdatasync(self._fd)
                except OSError:
                    os.ftruncate(self._fd, offset)  # the next batch starts where this one did
                    raise
                self._rows = start + len(keys)
                segment = self._segment
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO vectors (key, segment, row) VALUES (?, ?, ?)",
                                         zip(keys, [segment] * len(keys), range(start, start + len(keys)),
                                             strict=True))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except (OSError, sqlite3.Error) as exc:
                raise CacheError(f"Cannot write to the embedding store in {self.folder} ({exc}). Free some space, "
                                 "pass another --cache, or run with --no-cache.") from exc

    # -- reading ----------------------------------------------------------------------------------
    def locate(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Where each key's vector is: (segment ids, rows), int64 arrays of len(keys); -1 where absent."""
        segments = np.full(len(keys), -1, dtype=np.int64)
        rows = np.full(len(keys), -1, dtype=np.int64)
        position: dict[str, int] = {}
        for s in range(0, len(keys), LOOKUP_CHUNK):
            chunk = list(keys[s:s + LOOKUP_CHUNK])
            position = {k: s + j for j, k in enumerate(chunk)}
            marks = ",".join("?" * len(chunk))
            with self._lock:
                self._check_pid()
                found = self._db.execute(f"SELECT key, segment, row FROM vectors WHERE key IN ({marks})",
                                         chunk).fetchall()
            for key, segment, row in found:
                i = position[key]
                segments[i], rows[i] = segment, row
        for seg in np.unique(segments[segments >= 0]).tolist():
            n_rows = self._segment_rows(int(seg))
            short = (segments == seg) & (rows >= n_rows)
            if short.any():
                log.warning("Ignoring %d cached vectors whose store file (segment %d in %s) is damaged or "
                            "missing; they will be computed again.", int(short.sum()), seg, self.folder)
                segments[short], rows[short] = -1, -1
        if len(set(keys)) != len(keys):  # a key asked twice: the dict above kept only its last position
            first: dict[str, int] = {}
            for i, k in enumerate(keys):
                if segments[i] >= 0:
                    first.setdefault(k, i)
            for i, k in enumerate(keys):
                if segments[i] < 0 and k in first:
                    segments[i], rows[i] = segments[first[k]], rows[first[k]]
        return segments, rows

    def contains_many(self, keys: Sequence[str]) -> np.ndarray:
        """Boolean array: which ``keys`` are stored."""
        return self.locate(keys)[0] >= 0

    def missing(self, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        present = self.contains_many(keys)
        return [k for k, p in zip(keys, present, strict=True) if not p]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM vectors WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def _segment_name(self, segment: int) -> str:
        name = self._names.get(segment)
        if name is None:
            with self._lock:
                found = self._db.execute("SELECT name FROM segments WHERE id = ?", (segment,)).fetchone()
            if found is None:
                raise CacheError(f"The embedding store in {self.folder} is damaged (segment {segment} is not "
                                 "registered). Delete that folder; its vectors will be computed again.")
            name = self._names[segment] = found[0]
        return name

    def _segment_rows(self, segment: int) -> int:
        """Whole rows in a segment file now (0 when the file is missing)."""
        if segment == self._segment:
            return self._rows
        try:
            return (self.folder / self._segment_name(segment)).stat().st_size // self._row_bytes
        except OSError:
            return 0

    def _read_rows(self, out: np.ndarray, positions: np.ndarray, segment: int, rows: np.ndarray) -> None:
        """Read ``rows`` (ascending) of one segment into ``out[positions]``: one pread per run of adjacent rows.

        Positioned reads, not a memory map: only the rows asked for are read, and the process holds
        nothing but ``out`` (a map's touched pages would count in its resident memory too).
        """
        name = self._segment_name(segment)
        try:
            fd = os.open(self.folder / name, os.O_RDONLY)
        except OSError as exc:
            raise CacheError(f"The embedding store in {self.folder} lost its file {name} ({exc.strerror}). "
                             "Delete that folder; its vectors will be computed again.") from exc
        rb = self._row_bytes
        try:
            if int(rows[-1]) >= os.fstat(fd).st_size // rb:
                raise CacheError(f"The embedding store file {self.folder / name} is shorter than its index says. "
                                 "Delete that folder; its vectors will be computed again.")
            for s in range(0, len(rows), READ_CHUNK):
                r, pos = rows[s:s + READ_CHUNK], positions[s:s + READ_CHUNK]
                direct = bool(pos[-1] - pos[0] == len(pos) - 1 and np.all(np.diff(pos) == 1))
                buf = out[pos[0]:pos[-1] + 1] if direct else np.empty((len(r), self.dim), dtype=np.float32)
                view = memoryview(buf.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
                cuts = np.flatnonzero(np.diff(r) != 1) + 1
                for start, stop in zip([0, *cuts.tolist()], [*cuts.tolist(), len(r)], strict=True):
                    _pread_exact(fd, view[start * rb:stop * rb], int(r[start]) * rb)
                if not direct:
                    out[pos] = buf
        finally:
            os.close(fd)

    def get_many(self, keys: Sequence[str]) -> np.ndarray:
        """Vectors for ``keys`` (all must be present), shape (len(keys), dim), float32, in the order of ``keys``.

        Only the rows asked for are read, segment by segment in file order.

        Raises:
            KeyError: a key is not stored.
        """
        if not len(keys):
            return np.empty((0, self.dim), dtype=np.float32)
        segments, rows = self.locate(keys)
        absent = np.flatnonzero(segments < 0)
        if len(absent):
            raise KeyError(f"{len(absent)} keys are not in the store, e.g. {keys[int(absent[0])]!r}")
        return self.read_located(segments, rows)

    def read_located(self, segments: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The vectors at ``(segments, rows)`` (from :meth:`locate`, none -1), into ``out`` if given.

        Returns:
            np.ndarray of shape (len(rows), dim), float32 (``out`` itself when given).
        """
        if out is None:
            out = np.empty((len(rows), self.dim), dtype=np.float32)
        elif out.shape != (len(rows), self.dim) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape ({len(rows)}, {self.dim})")
        if len(rows):
            order = np.lexsort((rows, segments))  # segment by segment, rows ascending: sequential reads
            bounds = np.flatnonzero(np.diff(segments[order])) + 1
            for group in np.split(order, bounds):
                self._read_rows(out, group, int(segments[group[0]]), rows[group])
        return out

    def keys(self) -> list[str]:
        """Every stored key (for tools and tests; a run never needs them all)."""
        with self._lock:
            return [k for (k,) in self._db.execute("SELECT key FROM vectors")]

    def segment_rows(self) -> int:
        """Rows in all segment files, referenced or not (equals ``len(self)`` unless a batch was stored twice
        or a writer was killed between appending and indexing)."""
        return sum(p.stat().st_size // self._row_bytes for p in self.folder.glob(SEGMENT_GLOB))

    def close(self) -> None:
        """Close this writer's segment and the index connection (also done when the object is collected)."""
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None
            self._db.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_pid", None) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass
