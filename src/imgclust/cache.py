"""The embedding cache: vectors stored per (extractor id, file identity), safe against kill -9.

Layout::

    CACHE_DIR/vectors/<extractor cache id>/meta.json      what wrote it (checked before use)
    CACHE_DIR/vectors/<extractor cache id>/index.sqlite   key -> (segment, row), SQLite in WAL mode
    CACHE_DIR/vectors/<extractor cache id>/seg-*.f32      append-only float32 rows, one file per writer
    CACHE_DIR/files.sqlite                                file identity -> content digest

See :mod:`imgclust.store.vectors` for the write protocol: storing a batch appends it to the
writer's own segment and then indexes it in one transaction, so a run killed at any moment leaves
a cache the next run can use (it resumes from the last finished batch), several processes may
write at once, and a run reads only the vectors of its own images. A file's identity is its
absolute path, size and modification time (``identity="stat"``), or a digest of its bytes
(``identity="content"``), so a changed file gets a new key and is recomputed. Content digests are
remembered by stat identity (:mod:`imgclust.store.digests`), so a rerun reads no unchanged file.

A cache of the first format (``part-*.npz`` files holding keys and vectors) is moved into the
store when first opened: each old file is checked (shapes, dtype, finite values) before its
vectors are stored, damaged ones are dropped, and one log line says what happened.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from ._fs import atomic_write_json
from .errors import CacheError, ParameterError
from .io.discover import ImageRecord
from .store import FileDigests, VectorStore, content_digest
from .store.digests import stat_key as _stat_key

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
OLD_PART_GLOB = "part-*.npz"  # the first format: one npz of keys and vectors per batch
IDENTITIES = ("stat", "content")


def default_cache_dir() -> Path:
    """``$IMGCLUST_CACHE``, else ``$XDG_CACHE_HOME/imgclust``, else ``~/.cache/imgclust``."""
    env = os.environ.get("IMGCLUST_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imgclust"


def stat_key(record: ImageRecord) -> str:
    """The stat identity of a file: a digest of its absolute path, size and modification time (reads nothing)."""
    return _stat_key(record.file, record.size, record.mtime_ns)


def file_key(record: ImageRecord, identity: str = "stat", digests: FileDigests | None = None) -> str:
    """The cache key of one file: a hex digest of its identity.

    With ``identity="content"`` the file is read and hashed, unless ``digests`` already knows it.

    Raises:
        OSError: (content identity) the file cannot be read.
    """
    key = file_keys([record], identity, digests)[0]
    if isinstance(key, OSError):
        raise key
    return key


def file_keys(records: Sequence[ImageRecord], identity: str = "stat",
              digests: FileDigests | None = None) -> list[str | OSError]:
    """The cache key of each record, or the OSError that kept its file from being read.

    ``identity="stat"`` reads no file. ``identity="content"`` reads each file whose digest
    ``digests`` does not know yet (and remembers it there).
    """
    if identity not in IDENTITIES:
        raise ParameterError(f"identity must be one of {', '.join(IDENTITIES)}; got '{identity}'.")
    stats = [stat_key(r) for r in records]
    if identity == "stat":
        return list(stats)
    known = digests.get_many(stats) if digests is not None else [None] * len(records)
    keys: list[str | OSError] = []
    new: list[tuple[str, str]] = []
    for r, s, digest in zip(records, stats, known, strict=True):
        if digest is None:
            try:
                digest = content_digest(r.path)
            except OSError as exc:
                keys.append(exc)
                continue
            new.append((s, digest))
        keys.append("c" + digest)
    if digests is not None:
        digests.put_many(new)
    return keys


class EmbeddingCache(VectorStore):
    """Vectors of one extractor, keyed by file identity (a :class:`~imgclust.store.VectorStore`).

    Args:
        root: the cache folder (``CACHE_DIR``); vectors go under ``root/vectors/<cache_id>``.
        cache_id: the extractor's :meth:`~imgclust.features.Extractor.cache_id`.
        dim: the vector length.
        extractor: the extractor's name (recorded, for people reading the folder).

    Raises:
        CacheError: the folder was written by another extractor or by a newer imgclust, or cannot be opened.
    """

    def __init__(self, root: str | os.PathLike[str], cache_id: str, dim: int, extractor: str = "") -> None:
        self.root = Path(root)
        self.cache_id = cache_id
        folder = self.root / "vectors" / cache_id
        old_format = self._check_meta(folder, dim, extractor)
        super().__init__(folder, dim)
        if old_format or any(folder.glob(OLD_PART_GLOB)):
            self._migrate()
            self._write_meta(folder, dim, extractor)
        self._digests: FileDigests | None = None

    @property
    def digests(self) -> FileDigests:
        """The content digests of files, shared by every extractor's cache under the same root."""
        if self._digests is None:
            self._digests = FileDigests(self.root)
        return self._digests

    # -- metadata ---------------------------------------------------------------------------
    def _check_meta(self, folder: Path, dim: int, extractor: str) -> bool:
        """Check meta.json (or write it for a new folder); True when the folder is of the first format."""
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            self._write_meta(folder, dim, extractor)
            return False
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CacheError(f"The cache metadata {meta_path} is unreadable ({exc}). "
                             "Delete that folder or pass another --cache.") from exc
        if int(meta.get("format", 0)) > CACHE_FORMAT:
            raise CacheError(f"The cache {folder} was written by a newer imgclust "
                             f"({meta.get('imgclust_version')}); this is {__version__}. "
                             "Upgrade imgclust or pass another --cache.")
        if meta.get("cache_id") != self.cache_id or int(meta.get("dim", -1)) != dim:
            raise CacheError(f"The cache {folder} holds vectors of another extractor "
                             f"({meta.get('cache_id')}, dim {meta.get('dim')}); not trusting it. "
                             "Delete that folder or pass another --cache.")
        return int(meta.get("format", 0)) < CACHE_FORMAT

    def _write_meta(self, folder: Path, dim: int, extractor: str) -> None:
        atomic_write_json(folder / "meta.json", {"format": CACHE_FORMAT, "cache_id": self.cache_id, "dim": dim,
                                                 "extractor": extractor, "imgclust_version": __version__})

    def _migrate(self) -> None:
        """Move the vectors of first-format part files into the store, checking each file first."""
        parts = sorted(self.folder.glob(OLD_PART_GLOB))
        n_vectors, damaged = 0, []
        for part in parts:
            try:
                with np.load(part, allow_pickle=False) as z:
                    keys, X = z["keys"], z["X"]
                if keys.ndim != 1 or keys.dtype.kind != "U" or X.dtype != np.float32 or X.shape != (len(keys), self.dim):
                    raise ValueError(f"keys {keys.dtype}{keys.shape}, vectors {X.dtype}{X.shape}")
                if not np.isfinite(X).all():
                    raise ValueError("vectors that are not finite")
            except FileNotFoundError:
                continue  # another process is migrating the same cache and already moved it
            except Exception as exc:  # a damaged part is dropped, never trusted
                damaged.append(f"{part.name} ({exc})")
                continue
            self.put_many(keys.tolist(), X)
            n_vectors += len(keys)
        for path in [*parts, *self.folder.glob(".part-*.tmp")]:
            path.unlink(missing_ok=True)
        if parts:
            log.warning("Moved %d cached vectors from %d files of the old cache format in %s into the new store%s.",
                        n_vectors, len(parts) - len(damaged), self.folder,
                        f"; dropped {len(damaged)} damaged files: {', '.join(damaged)}" if damaged else "")

    def refresh(self) -> None:
        """Nothing to do: every lookup sees what other processes (e.g. Dask workers) have indexed."""

    def close(self) -> None:
        if self._digests is not None:
            self._digests.close()
        super().close()
