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

from .cluster import ClusterResult, cluster, list_clusterers
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

__all__ = [
    "AssignResult",
    "ClusterResult",
    "ImageRecord",
    "ImgclustError",
    "RunConfig",
    "RunResult",
    "SweepResult",
    "__version__",
    "choose_k",
    "assign",
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
    "sweep",
]
