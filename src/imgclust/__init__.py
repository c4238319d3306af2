"""imgclust: unsupervised image classification.

Every image becomes a vector (raw pixels or a pretrained network's embedding), the vectors are
clustered, k can be chosen for you, and the groups come back as a table, folders, and scores
when labels exist.

Example:
    >>> import imgclust
    >>> result = imgclust.run("photos", "out", features="efficientnet-lite0", k=5)  # doctest: +SKIP
    >>> result.summary["metrics"]  # doctest: +SKIP
"""

__version__ = "0.1.0"

from importlib import import_module
from typing import TYPE_CHECKING, Any

# `cluster` is both a subpackage and the function users call: import it now, so the function is what
# `imgclust.cluster` names (a later import of the subpackage would otherwise bind the module here).
from .cluster import ClusterResult, cluster, list_clusterers

# The public API, imported on first use (PEP 562): `imgclust --help` and a fully cached run do not pay
# for scikit-learn, SciPy and the pipeline until they need them.
_API: dict[str, str] = {
    "AssignResult": "model", "assign": "model", "load_model": "model",
    "choose_k": "cluster.choose_k",
    "RunConfig": "config",
    "ImgclustError": "errors",
    "get_extractor": "features", "list_extractors": "features", "list_features": "features",
    "extract": "features.extract",
    "decode": "io.decode",
    "ImageRecord": "io.discover", "discover": "io.discover",
    "evaluate": "metrics",
    "export": "outputs.export",
    "RunResult": "pipeline", "SweepResult": "pipeline", "load_features": "pipeline", "run": "pipeline",
    "sweep": "pipeline",
    "similar": "clean.similar",
}

__all__ = [
    "__version__",
    "AssignResult",
    "ClusterResult",
    "ImageRecord",
    "ImgclustError",
    "RunConfig",
    "RunResult",
    "SweepResult",
    "assign",
    "choose_k",
    "cluster",
    "decode",
    "discover",
    "evaluate",
    "export",
    "extract",
    "get_extractor",
    "list_clusterers",
    "list_extractors",
    "list_features",
    "load_features",
    "load_model",
    "run",
    "similar",
    "sweep",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imgclust' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:
    from .clean.similar import similar
    from .cluster.choose_k import choose_k
    from .config import RunConfig
    from .errors import ImgclustError
    from .features import get_extractor, list_extractors, list_features
    from .features.extract import extract
    from .io.decode import decode
    from .io.discover import ImageRecord, discover
    from .metrics import evaluate
    from .model import AssignResult, assign, load_model
    from .outputs.export import export
    from .pipeline import RunResult, SweepResult, load_features, run, sweep
