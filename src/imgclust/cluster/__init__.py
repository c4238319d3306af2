"""Clusterers (a registry), k selection and the result contract. Arrays only: no IO here."""

from .base import (
           ClustererSpec,
           ClusterResult,
           cluster,
           get_clusterer,
           list_clusterers,
           register_clusterer,
           validate_k,
)

__all__ = ["ClusterResult", "ClustererSpec", "cluster", "get_clusterer", "list_clusterers", "register_clusterer",
           "validate_k"]
