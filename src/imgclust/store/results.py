"""The results cache: what a run's expensive stages decided, kept so that a rerun need not decide it again.

A rerun of the same folder with the same settings finds every vector in the embedding store, but
choosing k, clustering and the clean checks (near-duplicates, outliers) would still take most of the
first run's time. Their results depend only on the vectors (in order) and a few settings, so they are
kept here, under a key (:func:`results_key`) made from:

- the identity of the vectors (:func:`vectors_id`): the extractor's cache id and the store key of each
  vector, in order (a file's path, size and modification time, or its content digest, as the store
  itself recognises files), so the key costs a hash of short strings, never a hash of the vectors;
- the settings the stage reads (method, options, k or its range, seed, clean options ...);
- this format's version and imgclust's version (a new release computes afresh).

Layout::

    CACHE_DIR/results/<stage>-<key>.npz    one entry: plain arrays and a JSON description, no pickle

An entry is written atomically (temporary file, then rename) and checked when read (format, version,
key, the class of every object, the shape and dtype of every array); one that fails a check is
ignored with one log line and computed again. The folder keeps the :data:`KEEP` most recently used
entries and at most :data:`MAX_BYTES` in all; older ones are removed after each write. Deleting the
folder (or the whole cache folder) is always safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._fs import atomic_write_bytes
from ..cluster.rows import Rows

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
FORMAT = 1
KEEP = 32  # entries (a run writes four: its clustering, its clean checks, the map and the cluster names)
MAX_BYTES = 1 << 30  # at most 1 GiB in all (the entries of a run over 200,000 small images take about 75 MB)
STALE_TMP_SECONDS = 86400  # a temporary file this old is a killed write's, never one in progress


def vectors_id(cache_id: str, keys: Sequence[str] | None = None, X: np.ndarray | Rows | None = None) -> str:
    """The identity of a run's vectors, in order: cheap to compute, and changes whenever one of them would.

    Args:
        cache_id: the extractor's :meth:`~imgclust.features.Extractor.cache_id`.
        keys: the embedding store's key of each vector (a file's stat identity or content digest), in the
            order of the rows; or None, then the bytes of ``X`` are hashed instead.
        X: np.ndarray of shape (n, dim), or :class:`~imgclust.cluster.rows.Rows` held elsewhere: the vectors
            (only read without ``keys``, block by block where they are held).
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(cache_id.encode() + b"\0")
    if keys is not None:
        h.update(f"keys {len(keys)}\0".encode())
        h.update("\0".join(keys).encode("utf-8", "surrogateescape"))
    elif isinstance(X, Rows):  # held elsewhere: each block hashed where it is held
        h.update(f"rows {X.shape}\0".encode())
        for digest in X.map_blocks(_block_digest):
            h.update(digest)
    elif X is not None:
        X = np.ascontiguousarray(X)
        h.update(f"vectors {X.shape} {X.dtype}\0".encode())
        for start in range(0, len(X), 8192):  # in blocks: no copy of all the vectors at once
            h.update(X[start:start + 8192].tobytes())
    else:
        raise ValueError("vectors_id needs keys or X")
    return h.hexdigest()


def _block_digest(start: int, block: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(block, dtype=np.float32).tobytes(), digest_size=20).digest()


def results_key(vectors: str, **settings: Any) -> str:
    """The key of a result computed from the vectors whose :func:`vectors_id` is ``vectors`` with ``settings``
    (JSON-able values; the same settings in any order give the same key)."""
    blob = json.dumps({"format": FORMAT, "imgclust_version": __version__, "vectors": vectors, **settings},
                      sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=20).hexdigest()


class ResultsCache:
    """Results of a run's stages, one file per (stage, key), under ``root/results``.

    Args:
        root: the cache folder (``CACHE_DIR``), the embedding store's.
        keep: how many entries to keep (the most recently used); max_bytes: their total size at most.

    Example:
        >>> cache = ResultsCache("~/.cache/imgclust")  # doctest: +SKIP
        >>> cache.put("cluster", key, result)  # doctest: +SKIP
        >>> cache.get("cluster", key, [ClusterResult])  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], *, keep: int = KEEP, max_bytes: int = MAX_BYTES) -> None:
        self.folder = Path(root) / RESULTS_DIR
        self.keep = keep
        self.max_bytes = max_bytes

    def path(self, stage: str, key: str) -> Path:
        return self.folder / f"{stage}-{key}.npz"

    def get(self, stage: str, key: str, types: Sequence[type]) -> Any:
        """The result kept under (``stage``, ``key``), or None when there is none or it fails a check.

        ``types``: the dataclasses the result may be built of, the result's own class first; any other class
        named in the entry makes it fail the check.
        """
        path = self.path(stage, key)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                if (meta.get("format"), meta.get("imgclust_version"), meta.get("stage"), meta.get("key")) != \
                        (FORMAT, __version__, stage, key):
                    raise ValueError("written for another key, version or format")
                value = _decode(meta["value"], data, meta["arrays"], {t.__name__: t for t in types})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            log.warning("Ignoring the cached result %s (%s): computing it again.", path, exc)
            return None
        if not isinstance(value, types[0]):
            log.warning("Ignoring the cached result %s (not a %s): computing it again.", path, types[0].__name__)
            return None
        try:
            os.utime(path)  # recently used: kept longest
        except OSError:
            pass
        return value

    def put(self, stage: str, key: str, value: Any) -> Path | None:
        """Keep ``value`` (a dataclass of arrays, numbers, strings, lists, tuples, dicts and other such
        dataclasses) under (``stage``, ``key``), then remove the oldest entries beyond the bounds.

        A cache that cannot be written only costs the next run the time: it is logged, never raised.
        """
        arrays: dict[str, Any] = {}
        shapes: dict[str, list[Any]] = {}
        encoded = _encode(value, arrays, shapes)
        meta = {"format": FORMAT, "imgclust_version": __version__, "stage": stage, "key": key,
                "arrays": shapes, "value": encoded}
        buf = io.BytesIO()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        np.savez(buf, **arrays)
        path = self.path(stage, key)
        try:
            atomic_write_bytes(path, buf.getbuffer())  # no second copy of a large entry
        except Exception as exc:  # noqa: BLE001 - OutputError or OSError: the run's outputs do not depend on it
            log.warning("Could not keep the result in %s (%s); the next run computes it again.", path, exc)
            return None
        self.prune()
        return path

    def prune(self) -> list[Path]:
        """Remove the least recently used entries beyond :attr:`keep` entries or :attr:`max_bytes` bytes
        (the newest one always stays), and temporary files a killed write left a day ago or more.
        Returns the removed paths."""
        entries, removed = [], []
        for p in self.folder.glob("*"):
            try:
                st = p.stat()
            except OSError:
                continue
            if p.name.endswith(".npz"):
                entries.append((st.st_mtime_ns, st.st_size, p))
            elif p.name.endswith(".tmp") and time.time() - st.st_mtime > STALE_TMP_SECONDS:
                p.unlink(missing_ok=True)
                removed.append(p)
        entries.sort(key=lambda e: e[0], reverse=True)
        total = 0
        for i, (_, size, p) in enumerate(entries):
            total += size
            if i > 0 and (i >= self.keep or total > self.max_bytes):
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed


# --- encoding: JSON for the structure, named arrays for the numbers ---------------------------------------

def _encode(value: Any, arrays: dict[str, Any], shapes: dict[str, list[Any]]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": type(value).__name__,
                "fields": {f.name: _encode(getattr(value, f.name), arrays, shapes) for f in dataclasses.fields(value)}}
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        if a.dtype.hasobject:
            raise TypeError("arrays of Python objects are not kept")
        name = f"a{len(arrays)}"
        arrays[name] = a
        shapes[name] = [list(a.shape), a.dtype.str]
        return {"array": name, "scalar": isinstance(value, np.generic)}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, arrays, shapes), _encode(v, arrays, shapes)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, arrays, shapes) for v in value]}
    if isinstance(value, list):
        if _plain(value):  # e.g. the quality flags of every image: read back by json alone, not walked
            return {"json": value}
        return [_encode(v, arrays, shapes) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__}")


def _plain(value: Any) -> bool:
    """Whether ``value`` is made of lists, strings, numbers, booleans and None only (JSON gives it back as it was)."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def _decode(value: Any, data: Any, shapes: dict[str, list[Any]], types: dict[str, type]) -> Any:
    if isinstance(value, list):
        return [_decode(v, data, shapes, types) for v in value]
    if not isinstance(value, dict):
        return value
    if "json" in value:
        return value["json"]
    if "array" in value:
        name = value["array"]
        a = data[name]
        shape, dtype = shapes[name]
        if list(a.shape) != shape or a.dtype.str != dtype:
            raise ValueError(f"array {name} is {a.shape} {a.dtype.str}, not {tuple(shape)} {dtype}")
        return a[()] if value.get("scalar") else a
    if "dataclass" in value:
        cls = types.get(value["dataclass"])
        if cls is None:
            raise TypeError(f"unexpected class {value['dataclass']}")
        return cls(**{k: _decode(v, data, shapes, types) for k, v in value["fields"].items()})
    if "dict" in value:
        return {_decode(k, data, shapes, types): _decode(v, data, shapes, types) for k, v in value["dict"]}
    if "tuple" in value:
        return tuple(_decode(v, data, shapes, types) for v in value["tuple"])
    raise ValueError(f"unexpected entry {sorted(value)[:3]}")

