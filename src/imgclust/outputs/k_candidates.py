"""``OUT_DIR/k-candidates.npz``: the labels of the automatic k and of its alternatives, for a quick rerun.

A default run (automatic k) clusters the images at every k of its range to choose one. The report
then lists the chosen k and the next-best ones; a user who prefers one of those reruns with
``--k K`` into the same output folder. The sweep already computed the clustering at K, so the run
keeps those labels here, with a fingerprint of everything they depend on (the vectors, the method
and its options, the seed), and a rerun whose fingerprint matches takes them instead of clustering
again. Any change (another image, another extractor, another seed) changes the fingerprint and the
rerun clusters from scratch.

Plain NumPy arrays, no pickle; written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_bytes
from ..cluster.rows import Rows, as_rows

log = logging.getLogger(__name__)

K_CANDIDATES = "k-candidates.npz"
FORMAT = 2


def _block_digest(start: int, block: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(block, dtype=np.float32).tobytes(), digest_size=20).digest()


def sweep_fingerprint(X: np.ndarray | Rows, *, method: str, method_options: Mapping[str, Any], seed: int) -> str:
    """A hash of what a sweep's labels depend on: the vectors (values, shape), method, options, seed.

    The vectors are hashed block by block where they are held (:class:`~imgclust.cluster.rows.Rows`),
    and the blocks' digests in order.
    """
    rows = as_rows(X)
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"format": FORMAT, "shape": list(rows.shape), "method": method,
                         "method_options": method_options, "seed": seed}, sort_keys=True, default=str).encode())
    for digest in rows.map_blocks(_block_digest):
        h.update(digest)
    return h.hexdigest()


def save_candidates(out_dir: str | os.PathLike[str], fingerprint: str, labels: Mapping[int, np.ndarray]) -> Path:
    """Write ``OUT_DIR/k-candidates.npz``: for every k of ``labels``, that clustering's labels (int32).

    Args:
        fingerprint: :func:`sweep_fingerprint` of the run.
        labels: k -> np.ndarray of shape (n_images,), int, in assignments.csv order of the clustered images.
    """
    buf = io.BytesIO()
    arrays: dict[str, Any] = {f"k{int(k)}": np.asarray(v, dtype=np.int32) for k, v in labels.items()}
    arrays["fingerprint"] = np.array(fingerprint)
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(Path(out_dir) / K_CANDIDATES, buf.getvalue())


def load_candidate(out_dir: str | os.PathLike[str], fingerprint: str, k: int) -> np.ndarray | None:
    """The saved labels at ``k`` when OUT_DIR/k-candidates.npz exists, has them and its fingerprint
    matches; else None (a damaged or foreign file counts as absent)."""
    path = Path(out_dir) / K_CANDIDATES
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["fingerprint"]) != fingerprint or f"k{int(k)}" not in data.files:
                return None
            return np.asarray(data[f"k{int(k)}"], dtype=np.int64)
    except (OSError, ValueError, KeyError) as exc:
        log.info("Ignoring %s: %s", path, exc)
        return None
