"""The output contract's tables: assignments.csv, summary.json, confusion.csv (all written atomically)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_json, atomic_write_text
from ..errors import InputError
from ..io.discover import ImageRecord
from ..metrics import Confusion

ASSIGNMENTS = "assignments.csv"
SUMMARY = "summary.json"
CONFUSION = "confusion.csv"

ASSIGNMENT_COLUMNS = ("path", "cluster", "distance", "status", "error")


def assignments_table(records: Sequence[ImageRecord], labels_pred: np.ndarray, distances: np.ndarray,
                      *, with_labels: bool, extra: dict[str, Sequence[Any]] | None = None) -> list[dict[str, Any]]:
    """One row per record. ``labels_pred`` and ``distances`` have one entry per *usable* record, in order.

    ``extra`` adds columns with one value per usable record (e.g. ``outlier``).
    """
    rows = []
    j = 0
    extra = extra or {}
    for r in records:
        row: dict[str, Any] = {"path": r.relpath}
        if r.ok:
            row.update(cluster=int(labels_pred[j]), distance=f"{float(distances[j]):.6g}", status="ok", error="")
            for name, values in extra.items():
                row[name] = values[j]
            j += 1
        else:
            row.update(cluster="", distance="", status=r.status, error=r.error)
            for name in extra:
                row[name] = ""
        if with_labels:
            row["label"] = r.label if r.label is not None else ""
        rows.append(row)
    if j != len(labels_pred):
        raise ValueError(f"{len(labels_pred)} cluster labels for {j} usable records")
    return rows


class _LineFeedRows(io.StringIO):
    r"""A buffer for a csv writer told to end rows with ``\r\n``: it stores ``\n`` instead.

    The csv module quotes a field only when it holds a character of the row terminator; rows ended by
    ``\n`` alone would leave a field holding ``\r`` unquoted, and a reader would split the row there.
    Writing with ``\r\n`` quotes fields holding either, and each row (one write call) still ends in ``\n``.
    """

    def write(self, s: str) -> int:
        return super().write(s[:-2] + "\n" if s.endswith("\r\n") else s)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    r"""Write rows as CSV (UTF-8, header first, rows ending in ``\n``) atomically.

    Any text round-trips through :func:`read_csv`: fields holding a comma, a quote, ``\r`` or ``\n``
    are quoted.
    """
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    buf = _LineFeedRows()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for row in rows:
        w.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def write_confusion(path: Path, conf: Confusion, mapping: dict[int, str] | None = None) -> Path:
    """clusters x labels counts; a last column gives each cluster's Hungarian-matched label."""
    rows = []
    for c, counts in zip(conf.clusters, conf.matrix, strict=True):
        row: dict[str, Any] = {"cluster": c}
        row.update({lab: int(v) for lab, v in zip(conf.labels, counts, strict=True)})
        if mapping is not None:
            row["matched_label"] = mapping.get(c, "")
        rows.append(row)
    cols = ["cluster", *conf.labels] + (["matched_label"] if mapping is not None else [])
    return write_csv(path, rows, cols)


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    return atomic_write_json(path, summary)


def read_summary(out_dir: Path) -> dict[str, Any]:
    """The summary.json of a finished run, or a clear error."""
    path = Path(out_dir) / SUMMARY
    if not path.is_file():
        raise InputError(f"{out_dir} holds no {SUMMARY}: it is not the output folder of an imgclust run.")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path}: {exc}.") from exc


def read_assignments(out_dir: Path) -> list[dict[str, str]]:
    """The rows of a finished run's assignments.csv."""
    path = Path(out_dir) / ASSIGNMENTS
    if not path.is_file():
        raise InputError(f"{out_dir} holds no {ASSIGNMENTS}: it is not the output folder of an imgclust run.")
    return read_csv(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    r"""The rows of a CSV file written by :func:`write_csv` (``newline=""``: a quoted ``\r`` stays in its field)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
