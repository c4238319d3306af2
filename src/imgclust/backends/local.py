"""The local backend: extraction and k-means in this process (decode threads, in-memory chunks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..cache import EmbeddingCache
from ..cluster import ClusterResult, cluster
from ..cluster.rows import Rows
from ..config import RunConfig
from ..features import Extractor
from ..features.extract import Extraction, extract
from ..io.discover import ImageRecord
from . import Backend, Progress


class LocalBackend(Backend):
    """Everything on this machine: the default."""

    name = "local"

    def extract(self, records: Sequence[ImageRecord], extractor: Extractor, config: RunConfig, *,
                cache: EmbeddingCache | None, progress: Progress | None = None) -> Extraction:
        return extract(records, extractor, cache=cache, batch_size=config.batch_size, identity=config.identity,
                       progress=progress)

    def cluster(self, X: np.ndarray | Rows, k: int, config: RunConfig) -> ClusterResult:
        return cluster(X, k, method=config.method, seed=config.seed, **config.method_options)
