"""What ``imgclust list-features`` shows: every extractor and family, and whether it can run here."""

from __future__ import annotations

from dataclasses import dataclass

from .base import family_specs, list_extractors


@dataclass(frozen=True)
class FeatureInfo:
    """One row of the feature catalogue.

    Attributes:
        name: what to pass to ``--features`` (``prefix:MODEL`` for a family).
        dim: vector length with default options (None when it depends on the model or options).
        installed: whether the code it needs can be imported here.
        weights_offline: whether its weights are on this machine (None for a family: depends on the model).
        description: one line.
        install_hint: the command that makes it available (when not installed).
    """

    name: str
    dim: int | None
    installed: bool
    weights_offline: bool | None
    description: str
    install_hint: str = ""


def list_features() -> list[FeatureInfo]:
    """Every registered extractor, then every family (``timm:MODEL``) followed by the models of that
    family whose weights are already on this machine.

    Example:
        >>> [f.name for f in list_features()][:2]  # doctest: +SKIP
        ['efficientnet-lite0', 'efficientnet-lite1']
    """
    rows = []
    for spec in list_extractors():
        installed = spec.is_installed()
        rows.append(FeatureInfo(spec.name, spec.dim, installed, installed and spec.weights_offline(),
                                spec.description, "" if installed else spec.install_hint))
    for fam in family_specs():
        installed = fam.is_installed()
        rows.append(FeatureInfo(f"{fam.prefix}:MODEL", None, installed, None, fam.description,
                                "" if installed else fam.install_hint))
        if installed:
            rows.extend(FeatureInfo(f"{fam.prefix}:{m}", None, True, True, "weights in the local cache")
                        for m in fam.offline_models())
    return rows
