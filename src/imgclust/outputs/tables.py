"""The output contract's tables: assignments.csv, summary.json, confusion.csv (all written atomically)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np

from .._fs import atomic_write_json, atomic_writer
from ..errors import InputError
from ..io.discover import ImageRecord
from ..metrics import Confusion

ASSIGNMENTS = "assignments.csv"
SUMMARY = "summary.json"
CONFUSION = "confusion.csv"

ASSIGNMENT_COLUMNS = ("path", "cluster", "distance", "status", "error")


def assignments_table(records: Sequence[ImageRecord], labels_pred: np.ndarray, distances: np.ndarray,
                      *, with_labels: bool, extra: dict[str, Sequence[Any]] | None = None) -> Iterator[dict[str, Any]]:
    """One row per record, made as they are asked for (:func:`write_csv` writes each and lets it go).
    ``labels_pred`` and ``distances`` have one entry per *usable* record, in order.

    ``extra`` adds columns with one value per usable record (e.g. ``outlier``; a :class:`Column` makes its
    text only when its row is written).
    """
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
        yield row
    if j != len(labels_pred):
        raise ValueError(f"{len(labels_pred)} cluster labels for {j} usable records")


class Column(Sequence[Any]):
    """A column of a table as ``text(values[i])`` for each value, made when a row asks for it (so a table of
    millions of rows holds its values as an array, not millions of strings)."""

    def __init__(self, values: Sequence[Any] | np.ndarray, text: Callable[[Any], Any]) -> None:
        self.values, self.text = values, text

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self.text(v) for v in self.values[i]]
        return self.text(self.values[i])


class _LineFeedRows(io.TextIOWrapper):
    r"""A text file for a csv writer told to end rows with ``\r\n``: it writes ``\n`` instead.

    The csv module quotes a field only when it holds a character of the row terminator; rows ended by
    ``\n`` alone would leave a field holding ``\r`` unquoted, and a reader would split the row there.
    Writing with ``\r\n`` quotes fields holding either, and each row (one write call) still ends in ``\n``.
    Characters that cannot be UTF-8 (surrogate escapes of file names) are written as ``\udcXX`` escapes.
    """

    def __init__(self, binary: BinaryIO) -> None:
        super().__init__(binary, encoding="utf-8", errors="backslashreplace", newline="")  # type: ignore[arg-type]

    def write(self, s: str) -> int:
        return super().write(s[:-2] + "\n" if s.endswith("\r\n") else s)


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    r"""Write rows as CSV (UTF-8, header first, rows ending in ``\n``) atomically, one row at a time.

    Any text round-trips through :func:`read_csv`: fields holding a comma, a quote, ``\r`` or ``\n``
    are quoted. Without ``columns``, the first row's keys are the columns.
    """
    it = iter(rows)
    first = next(it, None)
    if columns is None:
        columns = list(first.keys()) if first is not None else []
    with atomic_writer(path) as binary:
        text = _LineFeedRows(binary)
        try:
            w = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
            w.writeheader()
            if first is not None:
                w.writerow(first)
                for row in it:
                    w.writerow(row)
        finally:
            text.detach()  # flushed; the binary file stays open for the atomic writer to sync and rename (or drop)
    return path


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


def read_assignments(out_dir: Path) -> list[CsvRow]:
    """The rows of a finished run's assignments.csv."""
    path = Path(out_dir) / ASSIGNMENTS
    if not path.is_file():
        raise InputError(f"{out_dir} holds no {ASSIGNMENTS}: it is not the output folder of an imgclust run.")
    return read_csv(path)


class CsvRow(Mapping[str, str]):
    """One row of a CSV file, read-only: its values in a list, the column names shared by every row of the
    file (a dict a row costs about three times as much, which a table of millions of rows feels)."""

    __slots__ = ("_columns", "_values")

    def __init__(self, columns: dict[str, int], values: list[str]) -> None:
        self._columns, self._values = columns, values

    def __getitem__(self, key: str) -> str:
        return self._values[self._columns[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return repr(dict(self))


def read_csv(path: Path) -> list[CsvRow]:
    r"""The rows of a CSV file written by :func:`write_csv` (``newline=""``: a quoted ``\r`` stays in its field),
    as read-only mappings from the header's names (a short row's missing fields are empty; blank rows and
    fields beyond the header are left out)."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        columns = {name: i for i, name in enumerate(header)}
        width = len(header)
        rows = []
        for values in reader:
            if values:
                rows.append(CsvRow(columns, values + [""] * (width - len(values)) if len(values) < width else values))
        return rows
