"""The default features: EfficientNet-Lite2 at int8, or EfficientNet-Lite0 at fp32 where int8 is not available.

The rule that picked them (issue 17): the most accurate configuration whose end-to-end speed is at least
that of Lite0 fp32, among those that lose no more than 0.005 one-to-one accuracy against it on any shared
set. Lite2 int8 qualifies only because int8 makes it fast: where int8 kernels are missing, Lite2 would run
at fp32, about half Lite0 fp32's speed, so the default falls back to Lite0 fp32 instead (one log line).
Figures: docs/features.md.

Only the default is resolved here. Features named by the caller keep their own meaning: an
``efficientnet-lite2`` asked for at int8 falls back to Lite2 fp32 (see
:class:`~imgclust.features.efficientnet.EfficientNetLiteExtractor`).
"""

from __future__ import annotations

import logging
from typing import Any

from . import quantize

log = logging.getLogger(__name__)

#: the default network, run at :data:`DEFAULT_PRECISION`
DEFAULT_FEATURES = "efficientnet-lite2"
DEFAULT_PRECISION = "int8"
#: the default where int8 is not available (at fp32)
FALLBACK_FEATURES = "efficientnet-lite0"
_WARNED: set[str] = set()


def default_features(options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The features and options a run without ``features`` uses here: ``(name, feature_options)``.

    Args:
        options: feature options given without a features name (e.g. ``{"precision": "fp32"}`` from
            ``--precision fp32`` alone). A precision given there applies to the default network
            (:data:`DEFAULT_FEATURES`) as asked, with no fallback to another network.

    Example:
        >>> default_features()  # doctest: +SKIP
        ('efficientnet-lite2', {'precision': 'int8'})
    """
    options = dict(options or {})
    if "precision" in options:
        return DEFAULT_FEATURES, options
    reason = quantize.int8_unavailable_reason()
    if reason is None:
        return DEFAULT_FEATURES, {**options, "precision": DEFAULT_PRECISION}
    note = (f"int8 is not available here ({reason}); the default features are {FALLBACK_FEATURES} in fp32 "
            f"({DEFAULT_FEATURES} would run in fp32 at about half the speed).")
    if note not in _WARNED:  # one line per process, however many runs it makes
        _WARNED.add(note)
        log.warning(note)
    return FALLBACK_FEATURES, options
