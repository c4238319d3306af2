"""The settings of a run, as a frozen dataclass that round-trips to and from JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import ParameterError

DEFAULT_METHOD = "spectral"
DEFAULT_K_RANGE = (2, 30)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides the result of ``imgclust run`` (paths aside).

    Attributes:
        features: registry name of the extractor; empty (the default): the default features, which
            :func:`imgclust.pipeline.run` and :func:`~imgclust.pipeline.sweep` settle before any work (efficientnet-lite2
            at int8, or efficientnet-lite0 at fp32 where int8 is not available; see
            :mod:`imgclust.features.default`) and record in the run's summary and model.
        feature_options: options for the extractor (e.g. ``{"size": 32}`` for pixels).
        k: number of clusters, or None to choose it automatically over ``k_range``.
        k_range: (low, high) range searched when k is None, both inclusive.
        method: registry name of the clusterer.
        method_options: options for the clusterer.
        seed: random seed; the same inputs, config and seed give the same labels.
        labels: how ground-truth labels are read for scoring: auto, folder, prefix or none.
        identity: how the cache recognises a file: ``stat`` (path, size, mtime) or ``content`` (hash).
        batch_size: images per network batch.
        clean_options: settings of the clean checks (near-duplicates, outliers); see
            :data:`imgclust.clean.stage.CLEAN_OPTIONS`.
    """

    features: str = ""
    feature_options: dict[str, Any] = field(default_factory=dict)
    k: int | None = None
    k_range: tuple[int, int] = DEFAULT_K_RANGE
    method: str = DEFAULT_METHOD
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    labels: str = "auto"
    identity: str = "stat"
    batch_size: int = 32
    clean_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int)):
            raise ParameterError(f"k must be a whole number or None (automatic); got {self.k!r}.")
        if self.k is not None and self.k < 1:
            raise ParameterError(f"k must be at least 1; got {self.k}.")
        lo, hi = self.k_range
        if not (1 <= lo <= hi):
            raise ParameterError(f"k range must be LOW-HIGH with 1 <= LOW <= HIGH; got {lo}-{hi}.")
        if self.batch_size < 1:
            raise ParameterError(f"batch size must be at least 1; got {self.batch_size}.")
        if self.identity not in ("stat", "content"):
            raise ParameterError(f"identity must be 'stat' or 'content'; got '{self.identity}'.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(f"seed must be a non-negative whole number; got {self.seed!r}.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["k_range"] = list(self.k_range)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ParameterError(f"Unknown settings: {', '.join(sorted(unknown))}.")
        d = dict(d)
        if "k_range" in d:
            d["k_range"] = tuple(d["k_range"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))


def parse_k_range(text: str) -> tuple[int, int]:
    """``"2-30"`` -> (2, 30)."""
    try:
        lo_s, hi_s = text.split("-", 1)
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise ParameterError(f"A k range looks like 2-30; got '{text}'.") from None
    if not 1 <= lo <= hi:
        raise ParameterError(f"A k range needs 1 <= LOW <= HIGH; got '{text}'.")
    return lo, hi


def parse_ks(text: str) -> list[int]:
    """``"2,16,64"`` -> [2, 16, 64]; ``"2-30"`` -> [2, 3, ..., 30]; both may be mixed: ``"2-5,10"``."""
    ks: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = parse_k_range(part)
            ks.extend(range(lo, hi + 1))
        else:
            try:
                ks.append(int(part))
            except ValueError:
                raise ParameterError(f"k values are whole numbers like 2,16,64 or a range like 2-30; got '{part}'.") from None
    if not ks or min(ks) < 1:
        raise ParameterError(f"Give at least one k >= 1; got '{text}'.")
    return sorted(set(ks))
