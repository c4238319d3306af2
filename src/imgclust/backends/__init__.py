"""Where the heavy stages run: on this machine (``local``) or on a Dask cluster (``dask``).

A backend is the two seams of the design:

1. :meth:`Backend.extract`: extraction over shards of images (cache first). The local backend
   runs :func:`imgclust.features.extract.extract` here; the Dask backend sends shards to workers,
   each of which loads the network once and writes its vectors into the embedding cache.
2. :meth:`Backend.cluster`: the k-means assigner. The Lloyd loop is the same everywhere
   (:func:`imgclust.cluster.kmeans.lloyd`); only where the chunks of vectors live changes.

Backends sit between the pipeline and the stages: they call the stage functions (here or on
workers), and the stages know nothing about Dask.

Example:
    >>> from imgclust.backends import get_backend
    >>> with get_backend("dask", workers=2) as backend:  # doctest: +SKIP
    ...     imgclust.run("photos", "out", features="pixels", k=3, backend=backend)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..cache import EmbeddingCache
from ..cluster import ClusterResult
from ..cluster.rows import Rows
from ..config import RunConfig
from ..errors import ParameterError
from ..features import Extractor
from ..features.extract import Extraction
from ..io.discover import ImageRecord

Progress = Callable[[str, int, int], None]

BACKENDS = ("local", "dask")


class Backend(ABC):
    """Runs extraction and k-means somewhere. Use it as a context manager (or call :meth:`close`)."""

    name: str = ""

    @abstractmethod
    def extract(self, records: Sequence[ImageRecord], extractor: Extractor, config: RunConfig, *,
                cache: EmbeddingCache | None, progress: Progress | None = None) -> Extraction:
        """Vectors of every usable record, cache first (see :func:`imgclust.features.extract.extract`).

        ``extractor`` was built from ``config.features`` and ``config.feature_options``; backends that
        run elsewhere rebuild it there from the config.
        """

    @abstractmethod
    def cluster(self, X: np.ndarray | Rows, k: int, config: RunConfig) -> ClusterResult:
        """Cluster the rows of ``X`` (shape (n_samples, n_features), or rows left in the store) into ``k``
        groups as the config says."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description, recorded in summary.json (never changes the result)."""
        return {"name": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the backend started (workers, connections)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get_backend(name: str = "local", *, scheduler: str | None = None, workers: int | None = None) -> Backend:
    """The backend called ``name``.

    Args:
        name: ``local`` or ``dask``.
        scheduler: (dask) address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
        workers: (dask) without a scheduler, start a local cluster of this many worker processes
            (default: one per core).

    Raises:
        ParameterError: unknown name, or scheduler/workers given for the local backend, or both given.
        MissingDependencyError: ``dask`` without dask.distributed installed.
    """
    if name == "local":
        if scheduler is not None or workers is not None:
            raise ParameterError("--scheduler and --workers only apply with --backend dask.")
        from .local import LocalBackend

        return LocalBackend()
    if name == "dask":
        from .dask import DaskBackend

        return DaskBackend(scheduler, workers=workers)
    raise ParameterError(f"Unknown backend '{name}'. Choose one of: {', '.join(BACKENDS)}.")


__all__ = ["BACKENDS", "Backend", "get_backend"]
