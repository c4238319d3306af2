"""``OUT_DIR/k-candidates.npz``: the labels of the automatic k and of its alternatives, for a quick rerun.

A default run (automatic k) clusters the images at every k of its range to choose one. The report
then lists the chosen k and the next-best ones; a user who prefers one of those reruns with
``--k K`` into the same output folder. The sweep already computed the clustering at K, so the run
keeps those labels here, with a fingerprint of everything they depend on (the identity of the vectors,
the method and its options, the seed: :func:`imgclust.store.results.results_key`, the key of the
results cache too), and a rerun whose fingerprint matches takes them instead of clustering again. Any
change (another image, another extractor, another seed) changes the fingerprint and the rerun
clusters from scratch.

Plain NumPy arrays, no pickle; written atomically.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_bytes

log = logging.getLogger(__name__)

K_CANDIDATES = "k-candidates.npz"


def save_candidates(out_dir: str | os.PathLike[str], fingerprint: str, labels: Mapping[int, np.ndarray]) -> Path:
    """Write ``OUT_DIR/k-candidates.npz``: for every k of ``labels``, that clustering's labels (int32).

    Args:
        fingerprint: the run's :func:`~imgclust.store.results.results_key` of the vectors, method, options and seed.
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
