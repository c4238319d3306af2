"""The extractor interface and the registry every feature family plugs into."""

from __future__ import annotations

import difflib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ParameterError

# Bump when anything that changes the vectors of every extractor changes (decode, colour handling).
FEATURE_FORMAT_VERSION = 1


class Extractor(ABC):
    """Turns RGB images into fixed-length vectors.

    Work is split in two so that decoding and resizing can run in threads while the network
    runs: :meth:`prepare` takes one decoded image to the model's input (cheap, per image), and
    :meth:`embed` takes a batch of prepared inputs to vectors (the heavy part).

    Subclasses set ``name`` (the registry name), ``dim`` (vector length) and declare their
    preprocessing in :meth:`preprocessing`; the cache id is derived from it, so any change to
    what the extractor outputs changes the id.
    """

    name: str = ""
    dim: int = 0

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """Everything that determines the output: input size, resize/crop, scaling, weights id."""

    @abstractmethod
    def prepare(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> one model input (any fixed shape and dtype, e.g. uint8 pixels or float32)."""

    @abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """A batch of prepared inputs, shape (n, ...) -> np.ndarray of shape (n, dim), float32."""

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """Smallest (width, height) a JPEG may be decoded at without changing the result much."""
        return None

    def cache_id(self) -> str:
        """A short stable id that changes whenever this extractor's output would change."""
        blob = json.dumps({"name": self.name, "dim": self.dim, "format": FEATURE_FORMAT_VERSION,
                           "pre": self.preprocessing()}, sort_keys=True)
        return f"{self.name.replace(':', '_').replace('/', '_')}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def describe(self) -> dict[str, Any]:
        """JSON-able description (saved with models and summaries)."""
        return {"name": self.name, "dim": self.dim, "cache_id": self.cache_id(), "preprocessing": self.preprocessing()}

    def imagenet_logits(self, X: np.ndarray) -> np.ndarray | None:
        """ImageNet-1k class scores from this extractor's vectors, shape (n, 1000), if it has a head."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free heavy resources (sessions, models)."""


@dataclass(frozen=True)
class ExtractorSpec:
    """A registry entry.

    Attributes:
        name: what users type (``--features NAME``).
        factory: called with the user's options (e.g. ``size=32``) to build the extractor.
        description: one line for ``imgclust list-features``.
        dim: vector length with default options (None when it depends on the options).
        is_installed: whether the code it needs can be imported.
        weights_offline: whether its weights are on this machine (no network needed).
        install_hint: the command that makes it available.
    """

    name: str
    factory: Callable[..., Extractor]
    description: str
    dim: int | None = None
    is_installed: Callable[[], bool] = field(default=lambda: True)
    weights_offline: Callable[[], bool] = field(default=lambda: True)
    install_hint: str = ""


@dataclass(frozen=True)
class FamilySpec:
    """A family of extractors named ``prefix:MODEL``, e.g. ``timm:resnet50`` -> factory("resnet50", **options).

    Attributes:
        is_installed: whether the code it needs can be imported.
        install_hint: the command that makes it available.
        offline_models: the MODEL names whose weights are on this machine (no network needed).
        suggest: a full ``prefix:MODEL`` name for a bare name the user typed (for "did you mean"), or None.
    """

    prefix: str
    factory: Callable[..., Extractor]
    description: str
    is_installed: Callable[[], bool] = field(default=lambda: True)
    install_hint: str = ""
    offline_models: Callable[[], list[str]] = field(default=lambda: [])
    suggest: Callable[[str], str | None] = field(default=lambda name: None)


_REGISTRY: dict[str, ExtractorSpec] = {}
# Families take any name after a prefix, e.g. "timm:resnet50" -> factory("resnet50", **options).
_FAMILIES: dict[str, FamilySpec] = {}


def register_extractor(spec: ExtractorSpec) -> ExtractorSpec:
    """Add an extractor to the registry (a later registration under the same name replaces it)."""
    _REGISTRY[spec.name] = spec
    return spec


def register_family(prefix: str, factory: Callable[..., Extractor], description: str, **status: Any) -> None:
    """Register a family of extractors named ``prefix:MODEL`` (``status``: the optional fields of
    :class:`FamilySpec`)."""
    _FAMILIES[prefix] = FamilySpec(prefix, factory, description, **status)


def _ensure_builtins() -> None:
    # Importing the modules registers their extractors; they import heavy libraries lazily.
    from . import classic, efficientnet, pixels, timm  # noqa: F401


def list_extractors() -> list[ExtractorSpec]:
    """Every registered extractor, sorted by name."""
    _ensure_builtins()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def list_families() -> dict[str, str]:
    """Registered prefix families and their descriptions."""
    _ensure_builtins()
    return {p: f.description for p, f in sorted(_FAMILIES.items())}


def family_specs() -> list[FamilySpec]:
    """Registered prefix families, sorted by prefix."""
    _ensure_builtins()
    return [_FAMILIES[p] for p in sorted(_FAMILIES)]


def get_extractor(name: str, **options: Any) -> Extractor:
    """Build the extractor registered as ``name`` with ``options``.

    Raises:
        ParameterError: unknown name (with a suggestion) or bad options.

    Example:
        >>> ex = get_extractor("pixels", size=16)
        >>> ex.dim
        768
    """
    _ensure_builtins()
    if ":" in name:
        prefix, _, model = name.partition(":")
        if prefix in _FAMILIES:
            if not model:
                raise ParameterError(f"Name a model after '{prefix}:', e.g. '{prefix}:resnet50'.")
            try:
                return _FAMILIES[prefix].factory(model, **options)
            except TypeError as exc:
                raise ParameterError(f"Bad options for features '{name}': {exc}") from exc
    spec = _REGISTRY.get(name)
    if spec is None:
        known = sorted(_REGISTRY) + [f"{p}:MODEL" for p in _FAMILIES]
        close = difflib.get_close_matches(name, sorted(_REGISTRY), n=1, cutoff=0.5)
        if not close and ":" not in name:
            close = [s for f in _FAMILIES.values() if f.is_installed() and (s := f.suggest(name))][:1]
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ParameterError(f"Unknown features '{name}'.{hint} Available: {', '.join(known)}. "
                             "See: imgclust list-features")
    if not spec.is_installed():
        raise ParameterError(f"The features '{name}' are not installed. {spec.install_hint}")
    try:
        return spec.factory(**options)
    except TypeError as exc:
        raise ParameterError(f"Bad options for features '{name}': {exc}") from exc
