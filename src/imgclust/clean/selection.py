"""Which images an export takes, given a run's clean columns: one per near-duplicate group, outliers apart."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, ParameterError
from ..outputs.tables import CsvRow, read_csv
from .stage import DUPLICATES_CSV, KEEP_RULES, pick_kept


def read_duplicates(out_dir: Path) -> list[CsvRow]:
    """The rows of a run's duplicates.csv, or an error saying the run predates it."""
    path = Path(out_dir) / DUPLICATES_CSV
    if not path.is_file():
        raise InputError(f"{out_dir} holds no {DUPLICATES_CSV} (a run made before near-duplicate groups existed). "
                         "Run imgclust run again to find them.")
    return read_csv(path)


def one_per_duplicate_group(out_dir: Path, rows: list[dict[str, str]], rule: str) -> list[dict[str, str]]:
    """``rows`` of assignments.csv without the near-duplicates that are not kept (one kept per group).

    Args:
        rule: ``largest`` (most pixels, then the larger file) or ``sharpest`` (see :func:`pick_kept`).
    """
    if rule not in KEEP_RULES:
        raise ParameterError(f"--one-per-duplicate-group keeps the largest or the sharpest image; got '{rule}'.")
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for d in read_duplicates(out_dir):
        groups[d["group"]].append(d)
    dropped: set[str] = set()
    for members in groups.values():
        kept = pick_kept(members, rule)
        dropped.update(m["path"] for j, m in enumerate(members) if j != kept)
    return [r for r in rows if r.get("path") not in dropped]


def outlier_folder_name(name: str) -> str:
    """``name`` as a folder directly under the export's destination, or a ParameterError."""
    cleaned = name.strip()
    if (not cleaned or cleaned in (".", "..") or any(c in cleaned for c in "/\\\0")
            or any(ord(c) < 32 for c in cleaned) or len(cleaned) > 100):
        raise ParameterError(f"--outliers-to takes a plain folder name (no '/', not '.' or '..'); got {name!r}.")
    return cleaned


def is_outlier(row: dict[str, str]) -> bool:
    """Whether an assignments.csv row is marked as an outlier (a run without the column has none)."""
    return row.get("outlier", "") == "1"
