"""Clean a folder: near-duplicate groups, outlier scores, quality flags, and find-similar.

Each check is a function of what a run already holds (records, vectors, neighbours, the quality
measurements taken while decoding); none reads an image file again, and none builds an n x n
matrix: they work on each image's nearest neighbours (:func:`imgclust.neighbors.knn`).
"""

from .neardup import NearDuplicates, find_near_duplicates
from .outliers import Outliers, outlier_scores
from .quality import FLAGS, QualityThresholds, image_stats, quality_flags

__all__ = [
    "FLAGS",
    "NearDuplicates",
    "Outliers",
    "QualityThresholds",
    "find_near_duplicates",
    "image_stats",
    "outlier_scores",
    "quality_flags",
]
