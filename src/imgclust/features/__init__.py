"""Feature extractors: a registry of families (pixels, EfficientNet-Lite, ...), each imported lazily."""

from .base import (
    Extractor,
    ExtractorSpec,
    FamilySpec,
    get_extractor,
    list_extractors,
    list_families,
    register_extractor,
    register_family,
)
from .catalog import FeatureInfo, list_features

__all__ = [
    "Extractor",
    "ExtractorSpec",
    "FamilySpec",
    "FeatureInfo",
    "get_extractor",
    "list_extractors",
    "list_families",
    "list_features",
    "register_extractor",
    "register_family",
]
