"""The embedding cache: vectors stored per (extractor id, file identity), safe against kill -9.

Layout::

    CACHE_DIR/vectors/<extractor cache id>/meta.json     what wrote it (checked before use)
    CACHE_DIR/vectors/<extractor cache id>/part-*.npz    one file per finished batch: keys + vectors

Each part is written to a temporary name and renamed into place, so a part is either complete or
absent: a run killed at any moment leaves a cache the next run can use, and it resumes from the
last finished batch. A file's identity is its absolute path, size and modification time
(``identity="stat"``), or the SHA-256 of its bytes (``identity="content"``), so a changed file
gets a new key and is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from . import __version__
from ._fs import atomic_write_bytes, atomic_write_json
from .errors import CacheError, ParameterError
from .io.discover import ImageRecord

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
IDENTITIES = ("stat", "content")
# Merge parts once there are this many, so that opening a cache stays fast.
COMPACT_AFTER = 64


def default_cache_dir() -> Path:
    """``$IMGCLUST_CACHE``, else ``$XDG_CACHE_HOME/imgclust``, else ``~/.cache/imgclust``."""
    env = os.environ.get("IMGCLUST_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imgclust"


def file_key(record: ImageRecord, identity: str = "stat") -> str:
    """The cache key of one file: a hex digest of its identity."""
    if identity == "stat":
        blob = f"{os.fsencode(record.path)!r}|{record.size}|{record.mtime_ns}".encode()
        return hashlib.blake2b(blob, digest_size=16).hexdigest()
    if identity == "content":
        h = hashlib.blake2b(digest_size=16)
        with open(record.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return "c" + h.hexdigest()
    raise ParameterError(f"identity must be one of {', '.join(IDENTITIES)}; got '{identity}'.")


def write_part(folder: Path, keys: Sequence[str], X: np.ndarray, name: str | None = None) -> Path:
    """Write one part (keys and their vectors, shape (len(keys), dim) float32) atomically.

    Each part is a new file, so any number of processes may write parts into one folder at once.
    ``name`` (``part-*.npz``) gives the part a deterministic name, so that a task run twice (a Dask
    shard rescheduled after its worker died) replaces its own part instead of adding a second one;
    by default the name is unique.
    """
    buf = io.BytesIO()
    np.savez(buf, keys=np.asarray(list(keys), dtype="U"), X=np.asarray(X, dtype=np.float32))
    return atomic_write_bytes(Path(folder) / (name or f"part-{uuid.uuid4().hex}.npz"), buf.getvalue())


class EmbeddingCache:
    """Vectors of one extractor, keyed by file identity.

    Args:
        root: the cache folder (``CACHE_DIR``); vectors go under ``root/vectors/<cache_id>``.
        cache_id: the extractor's :meth:`~imgclust.features.Extractor.cache_id`.
        dim: the vector length.
        extractor: the extractor's name (recorded, for people reading the folder).

    Raises:
        CacheError: the folder was written by another extractor or by a newer imgclust.
    """

    def __init__(self, root: str | os.PathLike[str], cache_id: str, dim: int, extractor: str = "") -> None:
        self.root = Path(root)
        self.cache_id = cache_id
        self.dim = dim
        self.folder = self.root / "vectors" / cache_id
        self._index: dict[str, np.ndarray] = {}
        self._parts: list[Path] = []
        self._check_meta(extractor)
        self._load()

    # -- metadata ---------------------------------------------------------------------------
    def _check_meta(self, extractor: str) -> None:
        meta_path = self.folder / "meta.json"
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CacheError(f"The cache metadata {meta_path} is unreadable ({exc}). "
                                 "Delete that folder or pass another --cache.") from exc
            if int(meta.get("format", 0)) > CACHE_FORMAT:
                raise CacheError(f"The cache {self.folder} was written by a newer imgclust "
                                 f"({meta.get('imgclust_version')}); this is {__version__}. "
                                 "Upgrade imgclust or pass another --cache.")
            if meta.get("cache_id") != self.cache_id or int(meta.get("dim", -1)) != self.dim:
                raise CacheError(f"The cache {self.folder} holds vectors of another extractor "
                                 f"({meta.get('cache_id')}, dim {meta.get('dim')}); not trusting it. "
                                 "Delete that folder or pass another --cache.")
        else:
            atomic_write_json(meta_path, {"format": CACHE_FORMAT, "cache_id": self.cache_id, "dim": self.dim,
                                          "extractor": extractor, "imgclust_version": __version__})

    def _load(self) -> None:
        known = set(self._parts)
        for part in sorted(self.folder.glob("part-*.npz")):
            if part in known:
                continue
            try:
                with np.load(part, allow_pickle=False) as z:
                    keys, X = z["keys"], z["X"]
                if X.ndim != 2 or X.shape[1] != self.dim or len(keys) != len(X):
                    raise ValueError(f"shape {X.shape} for {len(keys)} keys")
            except Exception as exc:  # a damaged part is ignored, never trusted
                log.warning("Ignoring damaged cache part %s: %s", part, exc)
                continue
            for key, row in zip(keys.tolist(), X, strict=True):
                self._index[key] = row
            self._parts.append(part)

    def refresh(self) -> None:
        """Read the parts that other processes (e.g. Dask workers) added since this cache was opened."""
        self._load()

    # -- access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def get_many(self, keys: Sequence[str]) -> np.ndarray:
        """Vectors for ``keys`` (all must be present), shape (len(keys), dim), float32."""
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._index[k] for k in keys]).astype(np.float32, copy=False)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self._index]

    def put_many(self, keys: Sequence[str], X: np.ndarray) -> None:
        """Store one finished batch as a new part (atomic)."""
        X = np.asarray(X, dtype=np.float32)
        if X.shape != (len(keys), self.dim):
            raise ValueError(f"expected shape ({len(keys)}, {self.dim}), got {X.shape}")
        if not keys:
            return
        part = write_part(self.folder, keys, X)
        self._parts.append(part)
        for key, row in zip(keys, X, strict=True):
            self._index[key] = row
        if len(self._parts) >= COMPACT_AFTER:
            self.compact()

    def compact(self) -> None:
        """Merge all parts into one. The merged part is in place before the old ones are removed."""
        if len(self._parts) <= 1:
            return
        old = list(self._parts)
        keys = list(self._index)
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys, dtype="U"), X=self.get_many(keys))
        merged = atomic_write_bytes(self.folder / f"part-{uuid.uuid4().hex}.npz", buf.getvalue())
        for p in old:
            try:
                p.unlink()
            except OSError:
                pass
        self._parts = [merged]
