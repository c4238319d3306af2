"""Feature extractors: a registry of families (pixels, EfficientNet-Lite, ...), each imported lazily."""

from .base import (
    Extractor,
    ExtractorSpec,
    get_extractor,
    list_extractors,
    list_families,
    register_extractor,
    register_family,
)

__all__ = [
    "Extractor",
    "ExtractorSpec",
    "get_extractor",
    "list_extractors",
    "list_families",
    "register_extractor",
    "register_family",
]
