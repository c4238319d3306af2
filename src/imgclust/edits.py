"""The edit journal: a user's corrections to a finished run, as data.

``OUT_DIR/edits.jsonl`` holds one JSON object per line, appended and fsync'ed as each action is
taken, never rewritten; ``assignments.csv`` is never touched. A line is one of::

    {"v": 1, "op": "apply", "edits": [EDIT, ...], "source": "review", "time": "..."}
    {"v": 1, "op": "undo", ...}     takes back the latest action still in effect
    {"v": 1, "op": "redo", ...}     puts back the latest action undone (a new "apply" forgets it)

and an EDIT is one of::

    {"op": "rename",  "cluster": 3, "name": "beach"}
    {"op": "merge",   "clusters": [4, 7]}                 7's images join 4; 4 keeps its id and name
    {"op": "split",   "cluster": 5, "groups": [[PATH, ...], ...]}
                                                          each listed group becomes a new cluster;
                                                          the rest stays in 5 (the groups are computed
                                                          once, when the split is made, see :func:`plan_split`)
    {"op": "move",    "paths": [PATH, ...], "to": 2}      or ``"to": "new"`` (optionally ``"name"``)
    {"op": "exclude", "paths": [PATH, ...]}               never exported, left out of every count

PATH is the ``path`` column of assignments.csv. New clusters take the next unused id (the run's k,
then k + 1, ...), so replaying the same journal always gives the same ids. A line cut short by a
crash (not JSON) is ignored: the state is that of the actions before it.

:func:`apply` is the one way the edited state is computed: export, the report, the saved model
(``imgclust assign``), ``imgclust edit`` and ``imgclust review`` all read it through here.

Example:
    >>> rows = [{"path": "a.jpg", "cluster": "0", "status": "ok"}, {"path": "b.jpg", "cluster": "1", "status": "ok"}]
    >>> edited = apply(rows, [{"op": "move", "paths": ["b.jpg"], "to": 0}, {"op": "rename", "cluster": 0, "name": "x"}])
    >>> [r["cluster"] for r in edited.rows], edited.given_names
    (['0', '0'], {0: 'x'})
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputError, ParameterError

log = logging.getLogger(__name__)

EDITS = "edits.jsonl"
JOURNAL_VERSION = 1
EDIT_OPS = ("rename", "merge", "split", "move", "exclude")
MAX_NAME_LENGTH = 200
EXCLUDED = -1


class EditError(ParameterError):
    """An edit names a cluster or an image the run does not have, or is malformed. Nothing was written."""


@dataclass
class EditState:
    """The working state edits are applied to.

    Attributes:
        paths: the ``path`` of every clustered image (status ok), in assignments.csv order.
        labels: np.ndarray of shape (n_clustered,), int64: each image's cluster, -1 when excluded.
        original: np.ndarray of shape (n_clustered,), int64: the run's clusters.
        given_names: cluster id -> the name a user gave it.
        next_id: the id the next new cluster gets.
    """

    paths: list[str]
    labels: np.ndarray
    original: np.ndarray
    given_names: dict[int, str] = field(default_factory=dict)
    next_id: int = 0
    labels_true: list[str] | None = None
    _index: dict[str, int] | None = None
    # Shared by every copy of one run's state: what depends only on the run (e.g. the scores before edits).
    _shared: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, str]], k: int | None = None) -> EditState:
        ok = [r for r in rows if r.get("status", "ok") == "ok" and str(r.get("cluster", "")) != ""]
        labels = np.array([int(r["cluster"]) for r in ok], dtype=np.int64)
        top = int(labels.max()) + 1 if len(labels) else 0
        truth = [r.get("label") or "" for r in ok]
        return cls([str(r["path"]) for r in ok], labels, labels.copy(), {}, max(top, k or 0),
                   truth if any(truth) else None)

    def copy(self) -> EditState:
        return EditState(self.paths, self.labels.copy(), self.original, dict(self.given_names), self.next_id,
                         self.labels_true, self._index, self._shared)

    def label_codes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(label names, each image's label as an index into them), or None without labels; computed once."""
        if self.labels_true is None:
            return None
        if "label_codes" not in self._shared:
            names, codes = np.unique(np.array(self.labels_true, dtype=object).astype(str), return_inverse=True)
            self._shared["label_codes"] = (names, codes.ravel())
        return self._shared["label_codes"]  # type: ignore[no-any-return]

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.paths)}
        return self._index

    def clusters(self) -> list[int]:
        """Ids of the clusters that have at least one image, increasing."""
        return [int(c) for c in np.unique(self.labels[self.labels >= 0])]

    def sizes(self) -> dict[int, int]:
        ids, counts = np.unique(self.labels[self.labels >= 0], return_counts=True)
        return {int(c): int(n) for c, n in zip(ids, counts, strict=True)}

    # --- checks ---------------------------------------------------------------------------------

    def _cluster(self, value: Any, what: str = "cluster") -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer | str):
            raise EditError(f"A {what} must be a cluster number; got {value!r}.")
        try:
            c = int(value)
        except ValueError:
            raise EditError(f"A {what} must be a cluster number; got {value!r}.") from None
        if not np.any(self.labels == c):
            live = self.clusters()
            shown = ", ".join(map(str, live[:30])) + (" ..." if len(live) > 30 else "")
            raise EditError(f"Unknown cluster {c}: this run's clusters are now {shown}.")
        return c

    def _rows(self, paths: Any) -> np.ndarray:
        if isinstance(paths, str) or not isinstance(paths, list | tuple) or not paths:
            raise EditError(f"'paths' must be a non-empty list of image paths; got {paths!r}.")
        out = []
        for p in paths:
            i = self.index.get(p) if isinstance(p, str) else None
            if i is None:
                raise EditError(f"Unknown image {p!r}: give a path as the 'path' column of assignments.csv "
                                "lists it (clustered images only).")
            out.append(i)
        return np.array(out, dtype=np.int64)

    # --- edits ----------------------------------------------------------------------------------

    def apply_edit(self, edit: Mapping[str, Any]) -> None:
        """Apply one edit in place; :class:`EditError` (and no change) when it does not fit this state."""
        if not isinstance(edit, Mapping):
            raise EditError(f"An edit must be a JSON object; got {edit!r}.")
        op = edit.get("op")
        if op == "rename":
            c = self._cluster(edit.get("cluster"))
            self.given_names[c] = check_name(edit.get("name"))
        elif op == "merge":
            targets = edit.get("clusters")
            if not isinstance(targets, list | tuple) or len(targets) < 2:
                raise EditError(f"A merge needs at least two clusters; got {targets!r}.")
            ids = [self._cluster(c) for c in targets]
            if len(set(ids)) != len(ids):
                raise EditError(f"A merge names a cluster twice: {targets!r}.")
            for c in ids[1:]:
                self.labels[self.labels == c] = ids[0]
                self.given_names.pop(c, None)
        elif op == "split":
            c = self._cluster(edit.get("cluster"))
            groups = edit.get("groups")
            if not isinstance(groups, list | tuple) or not groups:
                raise EditError(f"A split needs 'groups', a list of lists of paths; got {groups!r}.")
            members = [self._rows(g) for g in groups]
            flat = np.concatenate(members)
            if len(np.unique(flat)) != len(flat) or np.any(self.labels[flat] != c):
                raise EditError(f"A split of cluster {c} must list each of its images at most once, and only its own.")
            if len(flat) >= int(np.sum(self.labels == c)):
                raise EditError(f"A split of cluster {c} must leave some images in it.")
            for g in members:
                self.labels[g] = self.next_id
                self.next_id += 1
        elif op == "move":
            rows = self._rows(edit.get("paths"))
            if np.any(self.labels[rows] == EXCLUDED):
                raise EditError("An excluded image cannot be moved; undo its exclusion first.")
            to = edit.get("to")
            if to == "new":
                name = None if edit.get("name") is None else check_name(edit.get("name"))
                target = self.next_id
                self.next_id += 1
                if name is not None:
                    self.given_names[target] = name
            else:
                target = self._cluster(to, "target cluster")
            self.labels[rows] = target
        elif op == "exclude":
            self.labels[self._rows(edit.get("paths"))] = EXCLUDED
        else:
            raise EditError(f"Unknown edit {op!r}; known: {', '.join(EDIT_OPS)}.")
        live = set(self.clusters())
        for c in [c for c in self.given_names if c not in live]:
            del self.given_names[c]


def check_name(name: Any) -> str:
    """A cluster name as given: any text (it is escaped wherever shown), trimmed, 1 to 200 characters."""
    if not isinstance(name, str) or not name.strip():
        raise EditError(f"A cluster name must be non-empty text; got {name!r}.")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise EditError(f"A cluster name may have at most {MAX_NAME_LENGTH} characters; got {len(name)}.")
    if any(ord(ch) < 32 for ch in name):
        raise EditError("A cluster name cannot hold control characters (newlines, tabs).")
    return name


# --- the journal ------------------------------------------------------------------------------------

def read_journal(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of OUT_DIR/edits.jsonl (none when it does not exist); a line cut by a crash is dropped.

    A crash can only cut the line being written; the next append starts a new line after it, so
    such a line may also sit in the middle. Text that is not JSON is such a line.

    Raises:
        InputError: a line is JSON but not an action (apply, undo, redo).
    """
    path = Path(out_dir) / EDITS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    out = []
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:  # cut short by a crash (a prefix of a JSON object is never valid JSON)
            log.warning("Ignoring line %d of %s: cut short by a crash.", n, path)
            continue
        if not isinstance(entry, dict) or entry.get("op") not in ("apply", "undo", "redo"):
            raise InputError(f"Line {n} of {path} is not an edit ({line[:80]!r}). Remove that line by hand; "
                             "the lines before it are kept.")
        out.append(entry)
    if tail.strip():
        log.warning("Ignoring the unfinished last line of %s (cut short by a crash).", path)
    return out


def effective_edits(journal: Iterable[Mapping[str, Any]]) -> tuple[list[list[dict[str, Any]]], int]:
    """The actions in effect after the undos and redos, and how many undone actions can be redone."""
    done: list[list[dict[str, Any]]] = []
    undone: list[list[dict[str, Any]]] = []
    for entry in journal:
        op = entry.get("op")
        if op == "undo":
            if done:
                undone.append(done.pop())
        elif op == "redo":
            if undone:
                done.append(undone.pop())
        else:
            done.append(list(entry.get("edits") or []))
            undone.clear()
    return done, len(undone)


@dataclass(frozen=True)
class EditedRun:
    """The edited state of a run: what :func:`apply` returns.

    Attributes:
        assignments: the run's rows, as given.
        state: the edited state, as arrays (see :class:`EditState`).
        names: id -> display name of each cluster that has images: the given name, else the run's suggestion.
        given_names: id -> name, for the clusters a user renamed.
        k: one more than the largest cluster id in use (ids of merged clusters stay unused).
        n_edits: edits in effect.
        n_undone: actions that can be redone.
    """

    assignments: Sequence[Mapping[str, str]]
    state: EditState
    names: dict[int, str]
    given_names: dict[int, str]
    k: int
    n_edits: int
    n_undone: int = 0

    @cached_property
    def metrics(self) -> dict[str, Any] | None:
        """Scores against the run's labels before and after the edits, or None (see :func:`edited_metrics`)."""
        return _edited_metrics(self.state)

    @cached_property
    def rows(self) -> list[dict[str, str]]:
        """assignments.csv's rows with ``cluster`` as edited ('' for an excluded image) and two more
        columns: ``original_cluster`` (the run's) and ``excluded`` ('true' or '')."""
        rows: list[dict[str, str]] = []
        index = self.state.index
        for r in self.assignments:
            row = dict(r)
            ok = row.get("status", "ok") == "ok" and row.get("cluster", "") != ""
            i = index.get(row.get("path", "")) if ok else None
            row["original_cluster"] = row.get("cluster", "")
            if i is None:
                row["excluded"] = ""
            else:
                c = int(self.state.labels[i])
                row["cluster"] = "" if c == EXCLUDED else str(c)
                row["excluded"] = "true" if c == EXCLUDED else ""
            rows.append(row)
        return rows

    def clustered(self) -> tuple[list[Mapping[str, str]], np.ndarray]:
        """The rows of the images in a cluster after the edits (excluded ones left out), as assignments.csv has
        them (their ``cluster`` is the run's), and np.ndarray of their clusters as edited, int64: what a
        report of a large run needs without the second copy of every row that :attr:`rows` makes."""
        ok = [r for r in self.assignments if r.get("status", "ok") == "ok" and str(r.get("cluster", "")) != ""]
        keep = self.state.labels != EXCLUDED
        return [r for r, kept in zip(ok, keep, strict=True) if kept], self.state.labels[keep]

    @property
    def clusters(self) -> list[int]:
        return self.state.clusters()

    @property
    def sizes(self) -> dict[int, int]:
        return self.state.sizes()

    @property
    def n_excluded(self) -> int:
        return int(np.sum(self.state.labels == EXCLUDED))


def apply(assignments: Sequence[Mapping[str, str]], edits: Iterable[Mapping[str, Any]], *,
          suggested_names: Mapping[str, str] | Mapping[int, str] | None = None, k: int | None = None,
          n_undone: int = 0) -> EditedRun:
    """Apply edits to a run's assignments: ``apply(assignments, edits) -> assignments``.

    Args:
        assignments: the rows of assignments.csv (as :func:`imgclust.outputs.tables.read_assignments` reads them).
        edits: EDIT objects (see the module docstring), in order.
        suggested_names: the run's suggested names (summary.json's ``cluster_names``), shown for clusters not renamed.
        k: the run's k (new clusters are numbered from it); default one more than the largest cluster.

    Returns:
        :class:`EditedRun`.

    Raises:
        EditError: an edit does not fit the state it is applied to (unknown cluster or path, ...).
    """
    state = EditState.from_rows(assignments, k)
    n = 0
    for edit in edits:
        state.apply_edit(edit)
        n += 1
    return _edited(assignments, state, suggested_names or {}, n, n_undone)


def _edited(assignments: Sequence[Mapping[str, str]], state: EditState,
            suggested: Mapping[str, str] | Mapping[int, str], n_edits: int, n_undone: int) -> EditedRun:
    live = state.clusters()
    suggested_by_id = {int(c): str(v) for c, v in suggested.items()}
    names = {c: state.given_names.get(c, suggested_by_id.get(c, "")) for c in live}
    names = {c: v for c, v in names.items() if v}
    return EditedRun(assignments, state, names, dict(state.given_names), max(live) + 1 if live else 0, n_edits, n_undone)


def load(out_dir: str | os.PathLike[str]) -> EditedRun:
    """The edited state of the run in OUT_DIR: its assignments.csv with its edits.jsonl applied.

    Raises:
        InputError: OUT_DIR is not a run's output folder, or its journal does not fit its assignments.
    """
    from .outputs.tables import read_assignments, read_summary

    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    rows = read_assignments(out_dir)
    actions, n_undone = effective_edits(read_journal(out_dir))
    try:
        return apply(rows, [e for a in actions for e in a], suggested_names=summary.get("cluster_names") or {},
                     k=int(summary.get("k", 0)), n_undone=n_undone)
    except EditError as exc:
        raise InputError(f"The edits in {out_dir / EDITS} do not fit this run's assignments.csv: {exc}") from exc


class Journal:
    """The edits of one run, kept in memory and appended to OUT_DIR/edits.jsonl as they are made.

    One instance per process; not for several writers at once (the review app holds a lock around it).

    Example:
        >>> j = Journal("out")  # doctest: +SKIP
        >>> j.commit([{"op": "rename", "cluster": 3, "name": "beach"}])  # doctest: +SKIP
        >>> j.undo()  # doctest: +SKIP
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        from .outputs.tables import read_assignments, read_summary

        self.out_dir = Path(out_dir)
        self.path = self.out_dir / EDITS
        self.summary = read_summary(self.out_dir)
        self.rows = read_assignments(self.out_dir)
        self.k = int(self.summary.get("k", 0))
        self.suggested = {int(c): str(v) for c, v in (self.summary.get("cluster_names") or {}).items()}
        self._base = EditState.from_rows(self.rows, self.k)
        self._journal = read_journal(self.out_dir)
        self._size = self._file_size()
        self.edited = self._replay()

    def _file_size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def sync(self) -> bool:
        """Read the journal again if another process (``imgclust edit`` beside an open review) appended to it.

        Returns:
            Whether it had changed.
        """
        if self._file_size() == self._size:
            return False
        self._journal = read_journal(self.out_dir)
        self._size = self._file_size()
        self.edited = self._replay()
        return True

    def _replay(self) -> EditedRun:
        actions, n_undone = effective_edits(self._journal)
        state = self._base.copy()
        n = 0
        try:
            for action in actions:
                for edit in action:
                    state.apply_edit(edit)
                    n += 1
        except EditError as exc:
            raise InputError(f"The edits in {self.path} do not fit this run's assignments.csv: {exc}") from exc
        self._n_done = len(actions)
        return _edited(self.rows, state, self.suggested, n, n_undone)

    @property
    def can_undo(self) -> bool:
        return self._n_done > 0

    @property
    def can_redo(self) -> bool:
        return self.edited.n_undone > 0

    def check(self, edits: Sequence[Mapping[str, Any]]) -> EditState:
        """The state after ``edits``, without writing anything. Raises :class:`EditError`."""
        if not edits:
            raise EditError("No edit given.")
        state = self.edited.state.copy()
        for edit in edits:
            state.apply_edit(edit)
        return state

    def commit(self, edits: Sequence[Mapping[str, Any]], *, source: str = "python") -> EditedRun:
        """Check ``edits`` against the current state, then append them as one action (undone as one).

        Raises:
            EditError: an edit does not fit; nothing is written.
        """
        edits = [dict(e) for e in edits]
        self.sync()
        self.check(edits)
        self._append({"v": JOURNAL_VERSION, "op": "apply", "edits": edits, "source": source})
        return self.edited

    def undo(self, *, source: str = "python") -> EditedRun:
        self.sync()
        if not self.can_undo:
            raise EditError("Nothing to undo.")
        self._append({"v": JOURNAL_VERSION, "op": "undo", "source": source})
        return self.edited

    def redo(self, *, source: str = "python") -> EditedRun:
        self.sync()
        if not self.can_redo:
            raise EditError("Nothing to redo.")
        self._append({"v": JOURNAL_VERSION, "op": "redo", "source": source})
        return self.edited

    def _append(self, entry: dict[str, Any]) -> None:
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # ensure_ascii: a path that is not UTF-8 (surrogate escapes) survives as \udcXX escapes.
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")
        try:
            # One write of one line with O_APPEND, then fsync: after a crash the line is there whole or
            # cut short (and then ignored by read_journal), never interleaved.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if os.fstat(fd).st_size and not _ends_with_newline(fd):
                    line = b"\n" + line  # end a line cut by an earlier crash, so this one reads whole
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputError(f"Cannot write {self.path}: {exc.strerror or exc}. Nothing was recorded.") from exc
        self._journal.append(entry)
        self._size = self._file_size()
        self.edited = self._replay()


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return os.pread(fd, 1, size - 1) == b"\n"


# --- derived results --------------------------------------------------------------------------------

def plan_split(state: EditState, cluster: int, n: int, X: np.ndarray, *, method: str = "kmeans",
               seed: int = 0, **options: Any) -> dict[str, Any]:
    """A split edit: the members of ``cluster`` re-clustered into ``n`` groups with ``method``.

    Args:
        state: the current state (see :attr:`EditedRun.state`).
        cluster: the cluster to split.
        n: number of parts, 2 <= n <= its size.
        X: np.ndarray of shape (n_clustered, dim): the run's vectors, in ``state.paths`` order.
        method: a registered clusterer (the run's, normally).

    Returns:
        ``{"op": "split", "cluster": c, "n": n, "groups": [...]}``: the largest part stays in ``cluster``.
    """
    from .cluster import cluster as fit

    c = state._cluster(cluster)
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise EditError(f"A split needs a whole number of parts; got {n!r}.")
    members = np.flatnonzero(state.labels == c)
    if not 2 <= n <= len(members):
        raise EditError(f"Cluster {c} has {len(members)} images; it can be split into 2 to {len(members)} parts, not {n}.")
    if len(X) != len(state.paths):
        raise EditError(f"{len(X)} vectors for {len(state.paths)} clustered images.")
    result = fit(np.asarray(X)[members], int(n), method=method, seed=seed, **options)
    parts = sorted((members[result.labels == p] for p in range(int(n))), key=len, reverse=True)
    groups = [[state.paths[i] for i in part] for part in parts[1:] if len(part)]
    return {"op": "split", "cluster": c, "n": int(n), "groups": groups}


def edited_metrics(edited: EditedRun) -> dict[str, Any] | None:
    """Scores against the run's labels before and after the edits (excluded images left out after), or None."""
    return edited.metrics


def _edited_metrics(state: EditState) -> dict[str, Any] | None:
    from .metrics import evaluate

    coded = state.label_codes()
    if coded is None:
        return None
    _, codes = coded
    if "metrics_before" not in state._shared:
        state._shared["metrics_before"] = evaluate(codes, state.original)
    keep = state.labels >= 0
    return {"before": state._shared["metrics_before"],
            "after": evaluate(codes[keep], state.labels[keep]) if keep.any() else None}


def summary_entry(edited: EditedRun) -> dict[str, Any]:
    """What summary.json's ``edits`` entry holds: the edited clusters, their names and sizes, the scores."""
    sizes = edited.sizes
    entry: dict[str, Any] = {
        "file": EDITS,
        "n_edits": edited.n_edits,
        "k": len(sizes),
        "cluster_ids": list(sizes),
        "cluster_sizes": {str(c): n for c, n in sizes.items()},
        "cluster_names": {str(c): n for c, n in edited.names.items()},
        "given_names": {str(c): n for c, n in edited.given_names.items()},
        "n_excluded": edited.n_excluded,
        "n_moved": int(np.sum((edited.state.labels != edited.state.original) & (edited.state.labels >= 0))),
    }
    scores = edited_metrics(edited)
    if scores is not None:
        entry["metrics_before"], entry["metrics_after"] = scores["before"], scores["after"]
    return entry


def write_summary_entry(out_dir: str | os.PathLike[str], edited: EditedRun) -> None:
    """Record the edited state in OUT_DIR/summary.json (its ``edits`` entry; the run's own entries are kept)."""
    from .outputs.tables import SUMMARY, read_summary, write_summary

    summary = read_summary(Path(out_dir))
    summary["edits"] = summary_entry(edited)
    write_summary(Path(out_dir) / SUMMARY, summary)


def edited_centers(Z: np.ndarray, edited: EditedRun) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres of the edited clusters, for a saved model.

    Args:
        Z: np.ndarray of shape (n_clustered, d): the run's vectors in the model's (transformed) space,
            in ``edited.state.paths`` order.

    Returns:
        (ids, centers, thresholds): np.ndarray (m,) int64 of the cluster ids with images,
        (m, d) float32 means of their members, (m,) float32 95th percentile of the members' distances.
    """
    from .model import OUTLIER_PERCENTILE

    labels = edited.state.labels
    ids = np.array(edited.clusters, dtype=np.int64)
    centers = np.zeros((len(ids), Z.shape[1]), dtype=np.float32)
    thresholds = np.zeros(len(ids), dtype=np.float32)
    for j, c in enumerate(ids):
        members = Z[labels == c]
        centers[j] = members.mean(axis=0)
        d = np.linalg.norm(members - centers[j], axis=1)
        thresholds[j] = np.percentile(d.astype(np.float64), OUTLIER_PERCENTILE)
    return ids, centers, thresholds


def label_mix(edited: EditedRun, top: int = 5) -> dict[int, list[tuple[str, int]]]:
    """The most common labels of each cluster (empty when the run has no labels)."""
    coded = edited.state.label_codes()
    if coded is None:
        return {}
    names, codes = coded
    labels = edited.state.labels
    out: dict[int, list[tuple[str, int]]] = {}
    for c in edited.clusters:
        counts = np.bincount(codes[labels == c], minlength=len(names))
        order = np.argsort(-counts, kind="stable")[:top]
        out[c] = [(str(names[j]), int(counts[j])) for j in order if counts[j] > 0]
    return out


def edit(out_dir: str | os.PathLike[str], *, rename: Mapping[int, str] | None = None,
         merge: Sequence[Sequence[int]] = (), split: Mapping[int, int] | None = None,
         move: Mapping[str, int | str] | None = None, exclude: Sequence[str] = (), cache: Any = True,
         source: str = "python") -> EditedRun:
    """Correct a finished run without the browser: the edits are checked, then appended as one action.

    Applied in this order: renames, merges, splits, moves, exclusions. Also records the edited state
    in summary.json (its ``edits`` entry). ``imgclust edit`` calls this.

    Args:
        out_dir: the run's output folder.
        rename: cluster -> new name.
        merge: groups of clusters to merge, each into its first.
        split: cluster -> number of parts (re-clustered with the run's method on the run's vectors,
            read from the embedding cache ``cache`` or recomputed).
        move: image path (as in assignments.csv) -> cluster, or ``"new"`` for one new cluster per call.
        exclude: image paths never to export.

    Returns:
        The edited state.

    Raises:
        EditError: an unknown cluster or path, or another edit that does not fit; nothing is written.

    Example:
        >>> edit("out", rename={3: "beach"}, merge=[[4, 7]], exclude=["junk/x.jpg"])  # doctest: +SKIP
    """
    journal = Journal(out_dir)
    edits: list[dict[str, Any]] = [{"op": "rename", "cluster": c, "name": n} for c, n in (rename or {}).items()]
    edits += [{"op": "merge", "clusters": list(g)} for g in merge]
    state = journal.check(edits) if edits else journal.edited.state
    if split:
        from .pipeline import run_vectors

        X = run_vectors(out_dir, cache=cache, purpose="the cluster cannot be split")
        for c, n in split.items():
            planned = plan_split(state, c, n, X, method=str(journal.summary.get("method", "kmeans")),
                                 seed=int(journal.summary.get("seed", 0)))
            edits.append(planned)
            state = journal.check(edits)
    targets: dict[str, list[str]] = {}
    for path, to in (move or {}).items():
        targets.setdefault(str(to), []).append(path)
    for to, paths in targets.items():
        edits.append({"op": "move", "paths": paths, "to": "new" if to == "new" else _cluster_arg(to)})
    if exclude:
        edits.append({"op": "exclude", "paths": list(exclude)})
    edited = journal.commit(edits, source=source)
    write_summary_entry(out_dir, edited)
    return edited


def _cluster_arg(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise EditError(f"A cluster is a number or 'new'; got {value!r}.") from None
