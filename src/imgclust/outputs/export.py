"""Sort the images into one folder per cluster: copy (default), symlink, or move (only when asked).

Rules:

- Folders are named ``cluster_00``, ``cluster_01`` ... after the cluster number alone, so the same
  grouping always gives the same folders. The suggested names go to ``DEST/clusters.csv``. The
  clusters are those of the run with its edits (``OUT_DIR/edits.jsonl``, see :mod:`imgclust.edits`)
  applied; a cluster renamed there is exported to a folder of that name.
- Nothing is ever overwritten: a name clash gets a ``-1``, ``-2`` ... suffix (the stem is shortened
  when the suffix would make the name longer than the filesystem allows).
- A file appears under its real name complete or not at all: copies (and moves between filesystems)
  are written to a hidden temporary name in the target folder, flushed to disk, and then linked or
  renamed into place.
- Every action is appended to the journal ``DEST/imgclust-export-manifest.jsonl`` before it is done.
  Its first line records the export (images folder, run, grouping, mode); each entry records a source
  relative to the images folder, a target relative to DEST, and the file's size and mtime. A rerun of
  the same export finishes a killed one without duplicates; :func:`undo_export` puts moved files back
  after checking every entry (targets inside DEST, sources inside the images folder, same file).
- A DEST holding files of an earlier export of another grouping (or mode) is refused, unless
  ``replace=True`` removes the files that earlier export made.
- DEST can never be inside the images folder, contain it, or be reachable from it through a
  symbolic link; a move only takes files that really live inside the images folder.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .._fs import is_within
from .._paths import linked_folders
from ..clean.selection import is_outlier, outlier_folder_name
from ..clean.selection import one_per_duplicate_group as one_per_duplicate_group_rows
from ..edits import load as load_edited
from ..errors import InputError, OutputError, ParameterError
from ..io.discover import discover, display_path
from .tables import read_summary, write_csv

log = logging.getLogger(__name__)

MODES = ("copy", "symlink", "move")
MANIFEST = "imgclust-export-manifest.jsonl"
CLUSTERS_CSV = "clusters.csv"
MANIFEST_FORMAT = 2
_TMP_PREFIX = ".imgclust-partial-"
_TMP_RE = re.compile(re.escape(_TMP_PREFIX) + r"[0-9a-f]{32}\Z")
# errno values with which os.link says "not here" (another filesystem, no hard links): fall back to a copy.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


@dataclass(frozen=True)
class ExportAction:
    """One image to export: its path, its path relative to the images folder, and its cluster folder."""

    source: Path
    relpath: str
    folder: str
    cluster: int


@dataclass(frozen=True)
class ExportPlan:
    """What an export would do.

    Attributes:
        actions: one per clustered image that can be exported.
        missing: paths (as in assignments.csv) that no longer exist.
        not_moved: ``"path: reason"`` for images a move leaves alone (a symbolic link, or a file that
            lives outside the images folder and is only reached through a linked folder).
        images_dir: the run's images folder (resolved).
        grouping: an id of (images folder, path -> cluster); the same grouping gives the same id.
        folders: cluster number -> folder name (``cluster_00`` ...).
        sizes: cluster number -> how many images the run put in it.
        names: cluster number -> suggested name (may be empty).
    """

    actions: list[ExportAction]
    missing: list[str]
    not_moved: list[str]
    images_dir: Path
    grouping: str
    folders: dict[int, str]
    sizes: dict[int, int]
    names: dict[int, str]


@dataclass
class ExportReport:
    dest: Path
    mode: str
    done: int = 0
    skipped_existing: int = 0
    missing_sources: list[str] = field(default_factory=list)
    not_moved: list[str] = field(default_factory=list)
    replaced: int = 0
    kept_from_earlier: list[str] = field(default_factory=list)
    manifest: Path | None = None
    clusters_csv: Path | None = None


def folder_name(cluster: int, k: int) -> str:
    """``cluster_00`` ...: the cluster number alone, zero-padded to at least two digits for ``k`` clusters."""
    width = max(2, len(str(max(k - 1, 0))))
    return f"cluster_{cluster:0{width}d}"


def safe_folder_name(name: str, fallback: str) -> str:
    """A folder name made from a name a user gave a cluster: no separators, '..' or control characters."""
    cleaned = re.sub(r"[\x00-\x1f/\\:*?\"<>|]+", "_", name).strip(" .")[:80]
    return cleaned if cleaned and cleaned not in (".", "..") else fallback


def check_destination(dest: Path, images_dir: Path) -> None:
    """Refuse a DEST that a later run would read as images: inside the images folder, containing it, or
    reached from it through a symbolic link (all compared as resolved paths)."""
    if is_within(dest, images_dir):
        raise OutputError(f"The export destination {dest} is inside the images folder {images_dir}; "
                          "choose a folder outside it so the images are never mixed with the output.")
    if is_within(images_dir, dest):
        raise OutputError(f"The export destination {dest} contains the images folder {images_dir}; "
                          "choose a folder outside it so the images are never mixed with the output.")
    for link, real in linked_folders(images_dir):
        if is_within(dest, real):
            raise OutputError(f"The export destination {dest} is inside {real}, which the images folder reaches "
                              f"through the symbolic link {link}: the next run would read the exported files as "
                              "images. Choose a folder outside it.")


def grouping_id(images_dir: Path, pairs: list[tuple[str, int]]) -> str:
    """A stable id of a grouping: the images folder and each clustered path's cluster."""
    text = json.dumps([str(images_dir), sorted(pairs)], ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def plan_export(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, mode: str = "copy",
                one_per_duplicate_group: str | None = None, outliers_to: str | None = None) -> ExportPlan:
    """What an export would do (nothing is written). See :class:`ExportPlan`.

    ``one_per_duplicate_group`` (``largest`` or ``sharpest``) leaves out all but one image of each
    near-duplicate group (duplicates.csv); ``outliers_to`` names a folder that takes the images
    marked as outliers instead of their cluster's folder.
    """
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}; got '{mode}'.")
    out_dir, dest = Path(out_dir), Path(dest)
    summary = read_summary(out_dir)
    images_dir = Path(summary["images_dir"])
    check_destination(dest, images_dir)
    # The edited state (edits.jsonl of imgclust review / edit applied): moved images where they were
    # moved, excluded ones left out (their cluster is ''), a renamed cluster's folder named after it.
    edited = load_edited(out_dir)
    rows = edited.rows
    if one_per_duplicate_group is not None:
        rows = one_per_duplicate_group_rows(out_dir, rows, one_per_duplicate_group)
    outlier_folder = outlier_folder_name(outliers_to) if outliers_to is not None else None
    k = max(int(summary.get("k", 1)), edited.k)
    names = dict(edited.names)
    found = discover(images_dir, exclude=[out_dir, dest]) if images_dir.is_dir() else []
    by_display = {r.relpath: r.path for r in found}
    images_real = images_dir.resolve()
    actions, missing, not_moved, pairs = [], [], [], []
    folders: dict[int, str] = {}
    for row in rows:
        if row.get("status") != "ok" or row.get("cluster", "") == "":
            continue
        c = int(row["cluster"])
        pairs.append((row["path"], c))
        folders.setdefault(c, safe_folder_name(edited.given_names[c], folder_name(c, k)) if c in edited.given_names
                           else folder_name(c, k))
        src = by_display.get(row["path"])
        if src is None:
            missing.append(row["path"])
            continue
        if mode == "move":
            why = _why_not_movable(src, images_real)
            if why:
                not_moved.append(display_path(f"{row['path']}: {why}"))
                continue
        apart = outlier_folder is not None and is_outlier(row)
        actions.append(ExportAction(src, src.relative_to(images_real).as_posix(),
                                    outlier_folder if apart and outlier_folder else folders[c], c))
    if outlier_folder is not None:  # another layout of the folders is another grouping
        if outlier_folder in folders.values():
            raise ParameterError(f"--outliers-to {outlier_folder} is the name of a cluster's folder; choose another.")
        pairs.append((f"outliers-to:{outlier_folder}", -1))
    return ExportPlan(actions, missing, not_moved, images_dir, grouping_id(images_dir, pairs),
                      dict(sorted(folders.items())), dict(Counter(c for _, c in pairs)), names)


def _why_not_movable(src: Path, images_real: Path) -> str:
    """Why a move must leave ``src`` alone ('' when it may be moved)."""
    if src.is_symlink():
        return "a symbolic link; moving it would move only the link (and break a relative one). Not moved."
    if not is_within(src, images_real):
        return (f"really lives at {src.resolve()}, outside the images folder (reached through a linked folder). "
                "Not moved.")
    return ""


# ---------------------------------------------------------------------------------------------
# The journal (manifest).


@dataclass
class _Journal:
    header: dict[str, Any] | None
    entries: list[dict[str, Any]]

    @property
    def legacy(self) -> bool:
        """Written by an imgclust before format 2: paths relative to the folder it ran in, no header."""
        return self.header is None and bool(self.entries)

    def latest(self, op: str) -> dict[str, dict[str, Any]]:
        """source -> the last entry of ``op`` for it (moves that were undone dropped)."""
        done: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            if e["op"] == op:
                done[e["source"]] = e
            elif e["op"] == "undo" and op == "move":
                done.pop(e["source"], None)
        return done


def _refuse_link(manifest: Path) -> None:
    if manifest.is_symlink():
        raise OutputError(f"{manifest} is a symbolic link (to {os.readlink(manifest)}); imgclust does not read or "
                          f"write its export journal through a link, which could put it outside {manifest.parent}. "
                          "Remove the link, or choose another --to.")


def _read_journal(manifest: Path) -> _Journal:
    _refuse_link(manifest)
    if not os.path.lexists(manifest):
        return _Journal(None, [])
    try:
        fd = os.open(manifest, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_link(manifest)
        raise OutputError(f"Cannot read {manifest}: {exc.strerror or exc}.") from exc
    header, entries = None, []
    for i, line in enumerate(text.splitlines()):
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if not isinstance(e, dict):
            continue
        if i == 0 and e.get("op") == "export" and e.get("format") == MANIFEST_FORMAT:
            header = e
        elif isinstance(e.get("op"), str) and isinstance(e.get("source"), str) and isinstance(e.get("target"), str):
            entries.append(e)
    return _Journal(header, entries)


def _append_manifest(manifest: Path, entry: dict[str, Any]) -> None:
    # ensure_ascii: file names that are not UTF-8 (surrogate escapes) survive as \udcXX escapes.
    # O_NOFOLLOW: a manifest swapped for a link is never written through.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(manifest, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_link(manifest)
        raise
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(json.dumps(entry, ensure_ascii=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _start_manifest(manifest: Path, header: dict[str, Any]) -> None:
    """A new journal holding only ``header`` (replacing an old one in one rename)."""
    tmp = manifest.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
    try:
        _append_manifest(tmp, header)
        os.replace(tmp, manifest)  # replaces a link itself, never its target
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _inside(root: Path, rel: Any, *, parts: int | None = None) -> Path | None:
    """``root / rel`` when ``rel`` is a plain relative path (no '..', not absolute, no NUL), else None."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or (parts is not None and len(p.parts) != parts):
        return None
    return root.joinpath(*p.parts)


def _target_of(dest: Path, entry: dict[str, Any]) -> Path | None:
    """The entry's target: ``DEST/folder/name`` with a folder that is a real folder directly inside DEST."""
    target = _inside(dest, entry.get("target"), parts=2)
    if target is None:
        return None
    folder = target.parent
    if folder.is_symlink() or folder.resolve().parent != dest.resolve():
        return None
    return target


def _identity(entry: dict[str, Any]) -> tuple[int, int] | None:
    size, mtime = entry.get("size"), entry.get("mtime_ns")
    if type(size) is int and type(mtime) is int:
        return size, mtime
    return None


# A copy keeps the modification time only to the filesystem's precision (FAT: 2 seconds).
_MTIME_SLACK_NS = 2_000_000_000


def _same_identity(path: Path, entry: dict[str, Any]) -> bool:
    """``path`` is a regular file with the size and (within the filesystem's precision) mtime recorded."""
    ident = _identity(entry)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (ident is not None and stat.S_ISREG(st.st_mode) and st.st_size == ident[0]
            and abs(st.st_mtime_ns - ident[1]) <= _MTIME_SLACK_NS)


# ---------------------------------------------------------------------------------------------
# Placing files.


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        return os.path.getsize(a) == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def free_name(folder: Path, name: str) -> Path:
    """``folder/name`` if free, else ``stem-1.ext``, ``stem-2.ext`` ... that is free. The stem is cut (by
    characters, so a multi-byte character is never split) when the name would be longer, in bytes, than
    the filesystem allows."""
    limit = _name_max(folder)
    if len(os.fsencode(name)) <= limit and not os.path.lexists(folder / name):
        return folder / name
    p = PurePosixPath(name)
    stem, suffix = (p.stem, p.suffix) if len(os.fsencode(p.suffix)) < limit // 2 else (name, "")
    i = 0 if len(os.fsencode(name)) > limit else 1
    while True:
        tail = f"-{i}{suffix}" if i else suffix
        cut = stem
        while cut and len(os.fsencode(cut + tail)) > limit:
            cut = cut[:-1]
        candidate = folder / (cut + tail)
        if not os.path.lexists(candidate):
            return candidate
        i += 1


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a folder
    finally:
        os.close(fd)


def _named(exc: OSError, target: Path) -> OSError:
    """The same error, naming the file the user will look for rather than a temporary one."""
    if exc.filename is None or _TMP_PREFIX in os.fspath(exc.filename):
        return OSError(exc.errno, exc.strerror or str(exc), str(target))
    return exc


def _link_into_place(tmp: Path, target: Path) -> None:
    """Give the complete file ``tmp`` its final name; FileExistsError if the name is taken (never overwrites)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if os.path.lexists(target):  # no hard links here: check, then rename
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from None
        os.rename(tmp, target)


def _copy_across(src: Path, target: Path) -> None:
    """Move ``src`` to ``target`` on another filesystem: copy to a temporary name beside ``target``, flush,
    rename into place, then remove ``src``. A kill leaves either the source alone, or both complete files."""
    tmp = target.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        shutil.copy2(src, tmp)
        _fsync(tmp)
        _link_into_place(tmp, target)
        _fsync(target.parent)  # the new name is on disk before the only other copy goes
    except OSError as exc:
        raise _named(exc, target) from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    os.unlink(src)


def _move_no_overwrite(src: Path, target: Path) -> None:
    """Move one file to ``target``; FileExistsError if ``target`` is taken."""
    try:
        os.link(src, target, follow_symlinks=False)  # fails if target exists, unlike rename
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from None
        _copy_across(src, target)
        return
    os.unlink(src)


def _copy_no_overwrite(a: ExportAction, target_dir: Path, manifest: Path) -> Path:
    """Copy ``a.source`` into ``target_dir`` under a free name; the copy appears complete or not at all."""
    tmp = target_dir / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        st = os.stat(a.source)
        shutil.copy2(a.source, tmp)
        _fsync(tmp)
        while True:
            target = free_name(target_dir, a.source.name)
            # Record the intent first: a rerun after a kill here finds the copy instead of making a second one.
            _append_manifest(manifest, {"op": "copy", "source": a.relpath, "target": f"{a.folder}/{target.name}",
                                        "size": st.st_size, "mtime_ns": st.st_mtime_ns})
            try:
                _link_into_place(tmp, target)  # fails if target exists: never overwrites
                return target
            except FileExistsError:
                continue
    except OSError as exc:
        raise _named(exc, target_dir / a.source.name) from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove what a killed copy left in ``folder``: only names imgclust makes (``.imgclust-partial-<hex>``)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if _TMP_RE.match(name) and not os.path.isdir(folder / name):
            os.unlink(folder / name)


def _target_dir(dest: Path, folder: str) -> Path:
    """``dest/folder``, created; refused if it is (or leads through) a link out of ``dest``."""
    target_dir = dest / folder
    target_dir.mkdir(exist_ok=True)
    if target_dir.is_symlink() or target_dir.resolve().parent != dest.resolve():
        raise OutputError(f"{target_dir} is a link to a place outside {dest}; not writing through it. "
                          "Remove the link or choose another destination.")
    return target_dir


# ---------------------------------------------------------------------------------------------
# Export.


def _header(plan: ExportPlan, out_dir: Path, mode: str) -> dict[str, Any]:
    return {"op": "export", "format": MANIFEST_FORMAT, "images_dir": str(plan.images_dir),
            "run": str(out_dir.resolve()), "grouping": plan.grouping, "mode": mode, "k": len(plan.folders)}


def _live(journal: _Journal, dest: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """op -> (target, entry) of the files an earlier export put in DEST that are still there."""
    live: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for op in MODES:
        for e in journal.latest(op).values():
            t = _target_of(dest, e)
            if t is not None and os.path.lexists(t):
                live.setdefault(op, []).append((t, e))
    return live


def _settle_earlier_export(journal: _Journal, header: dict[str, Any], dest: Path, manifest: Path, *,
                           replace: bool, report: ExportReport) -> _Journal:
    """Make sure DEST holds nothing of an earlier export that differs from this one; returns the journal to use."""
    old = journal.header
    if old is not None and all(old.get(key) == header[key] for key in ("images_dir", "grouping", "mode")):
        return journal  # the same export again: finish it
    if journal.legacy:
        raise OutputError(f"{dest} holds an export journal ({MANIFEST}) written by an older imgclust, which does not "
                          "record which grouping it holds. Choose another --to (or move that folder away first).")
    live = _live(journal, dest)
    n_live = sum(len(v) for v in live.values())
    if n_live and old is not None:
        what = ("the same grouping" if old.get("grouping") == header["grouping"] and
                old.get("images_dir") == header["images_dir"] else "a different grouping")
        earlier = f"an earlier {old.get('mode')} export of {what} (from {old.get('run')}; {n_live} of its files are still there)"
        if live.get("move"):
            raise OutputError(f"{dest} already holds {earlier}. Those files were moved out of {old.get('images_dir')}: "
                              f"put them back first with 'imgclust export --undo --to {dest}', or choose another --to.")
        if not replace:
            raise OutputError(f"{dest} already holds {earlier}; adding this {header['mode']} export would mix the two. "
                              "Choose another --to, or add --replace to remove the files that earlier export made "
                              "(files you added or changed are kept).")
        _remove_earlier(live, dest, report)
    _start_manifest(manifest, header)
    return _Journal(header, [])


def _remove_earlier(live: dict[str, list[tuple[Path, dict[str, Any]]]], dest: Path, report: ExportReport) -> None:
    """Remove the copies and links an earlier export made that are still as it made them."""
    folders = set()
    for op, items in live.items():
        for target, e in items:
            folders.add(target.parent)
            unchanged = (_same_identity(target, e) if op == "copy" else
                         target.is_symlink() and os.readlink(target) == e.get("link"))
            if unchanged:
                os.unlink(target)
                report.replaced += 1
            else:
                report.kept_from_earlier.append(display_path(f"{target} (changed since that export)"))
    for folder in sorted(folders):
        _remove_stale_temporaries(folder)
        try:
            folder.rmdir()  # only when empty: a file the user added keeps its folder
        except OSError:
            pass


def _write_clusters_csv(dest: Path, plan: ExportPlan, *, ours: bool) -> Path | None:
    """``DEST/clusters.csv``: folder, cluster, images, suggested name. A file of that name that an earlier
    export did not write is the user's: left alone (and None returned)."""
    path = dest / CLUSTERS_CSV
    if os.path.lexists(path) and not ours:
        log.warning("Not writing %s: a file of that name is already there.", path)
        return None
    rows = [{"folder": f, "cluster": c, "images": plan.sizes[c], "suggested_name": plan.names.get(c, "")}
            for c, f in plan.folders.items()]
    return write_csv(path, rows, ["folder", "cluster", "images", "suggested_name"])


def export(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, mode: str = "copy", replace: bool = False,
           progress: Callable[[str, int, int], None] | None = None, one_per_duplicate_group: str | None = None,
           outliers_to: str | None = None) -> ExportReport:
    """Put each clustered image into ``DEST/cluster_NN/``.

    Args:
        out_dir: the output folder of a run (holds assignments.csv and summary.json).
        dest: where the cluster folders go (created; never inside the images folder, never containing it).
        mode: ``copy`` (default), ``symlink`` or ``move``. The CLI asks for ``--yes`` before a move.
        replace: when DEST holds copies or links of an earlier export of another grouping (or mode),
            remove those that are unchanged first. Without it, such a DEST is refused.
        one_per_duplicate_group: ``largest`` or ``sharpest``: export only that image of each
            near-duplicate group (duplicates.csv); None exports them all.
        outliers_to: a folder name under DEST for the images marked as outliers (the ``outlier``
            column), instead of their cluster's folder.

    A rerun of the same export (e.g. after a kill) finishes the job: the journal tells which
    files are already in place, and those are skipped rather than exported a second time.

    Raises:
        OutputError: DEST is unsafe, holds another export, or a file could not be written.

    Example:
        >>> export("out", "sorted")  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}; got '{mode}'.")
    out_dir = Path(out_dir)
    plan = plan_export(out_dir, dest, mode=mode, one_per_duplicate_group=one_per_duplicate_group,
                       outliers_to=outliers_to)
    dest = Path(dest)
    report = ExportReport(dest=dest, mode=mode, missing_sources=plan.missing, not_moved=plan.not_moved)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        manifest = dest / MANIFEST
        report.manifest = manifest
        earlier = _read_journal(manifest)
        journal = _settle_earlier_export(earlier, _header(plan, out_dir, mode), dest, manifest,
                                         replace=replace, report=report)
        for sub in dest.iterdir():  # left by a killed copy: never a user's file
            if sub.is_dir() and not sub.is_symlink():
                _remove_stale_temporaries(sub)
        report.clusters_csv = _write_clusters_csv(dest, plan, ours=earlier.header is not None)
        before = journal.latest(mode)
        if mode == "move":  # files an earlier, interrupted move already took are done, not missing
            moved = {display_path(s) for s, e in before.items()
                     if _already_done(mode, plan.images_dir / s, _target_of(dest, e), e)}
            report.missing_sources = [m for m in plan.missing if m not in moved]
            report.skipped_existing = len(plan.missing) - len(report.missing_sources)
        for i, a in enumerate(plan.actions):
            target_dir = _target_dir(dest, a.folder)
            entry = before.get(a.relpath)
            earlier_target = _target_of(dest, entry) if entry else None
            if entry and _already_done(mode, a.source, earlier_target, entry):
                report.skipped_existing += 1
            elif mode == "copy":
                _copy_no_overwrite(a, target_dir, manifest)
                report.done += 1
            elif mode == "symlink":
                target = free_name(target_dir, a.source.name)
                link = str(a.source.resolve())
                _append_manifest(manifest, {"op": mode, "source": a.relpath, "target": f"{a.folder}/{target.name}",
                                            "link": link})
                os.symlink(link, target)
                report.done += 1
            elif entry and earlier_target and _is_complete_copy(a.source, earlier_target, entry):
                os.unlink(a.source)  # killed after the file reached its target, before the source was removed
                report.done += 1
            else:
                target = free_name(target_dir, a.source.name)
                st = os.lstat(a.source)
                # Record the intent first, so an interrupted move can always be found and undone.
                _append_manifest(manifest, {"op": "move", "source": a.relpath, "target": f"{a.folder}/{target.name}",
                                            "size": st.st_size, "mtime_ns": st.st_mtime_ns})
                _move_no_overwrite(a.source, target)
                report.done += 1
            if progress:
                progress("export", i + 1, len(plan.actions))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise OutputError(f"Export to {dest} stopped: {exc.strerror or exc}{where}. "
                          "Nothing was overwritten; fix the cause and run the same command again to finish.") from exc
    return report


def _already_done(mode: str, source: Path, target: Path | None, entry: dict[str, Any]) -> bool:
    """Whether an earlier (maybe killed) export already put ``source`` at ``target``."""
    if target is None or not os.path.lexists(target):
        return False
    if mode == "copy":
        return _same_file_content(source, target)
    if mode == "symlink":
        return target.is_symlink() and os.readlink(target) == entry.get("link")
    return not os.path.lexists(source)  # move: the file left its source and sits at the target


def _is_complete_copy(source: Path, target: Path, entry: dict[str, Any]) -> bool:
    """``target`` is ``source`` itself (a hard link) or a complete copy of it made by an interrupted move."""
    try:
        sa, sb = os.lstat(source), os.lstat(target)
    except OSError:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    return _same_identity(target, entry) and _same_file_content(source, target)


# ---------------------------------------------------------------------------------------------
# Undo.


@dataclass
class UndoReport:
    """What :func:`undo_export` did.

    Attributes:
        restored: files put back.
        kept: moved files left in DEST because their old place is taken again (with why).
        refused: journal entries that failed a check (with why); nothing was moved for them.
        images_dir: the images folder the files went back to.
    """

    restored: int = 0
    kept: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    images_dir: Path | None = None


def _journal_to_undo(dest: Path) -> tuple[Path, _Journal]:
    manifest = dest / MANIFEST
    _refuse_link(manifest)
    if not manifest.is_file():
        raise InputError(f"{dest} holds no {MANIFEST}: nothing to undo.")
    journal = _read_journal(manifest)
    if journal.legacy:
        raise InputError(f"{manifest} was written by an older imgclust: its paths depend on the folder that export "
                         "ran in and cannot be checked, so nothing was moved. Each line names a 'source' and a "
                         "'target'; move those files back by hand.")
    owner = os.lstat(manifest).st_uid
    if hasattr(os, "geteuid") and owner != os.geteuid():  # root too: a planted journal is most harmful there
        raise InputError(f"{manifest} belongs to another user (uid {owner}); undo only follows an export journal you "
                         "own, because it moves files. Nothing was moved.")
    return manifest, journal


def undo_export(dest: str | os.PathLike[str]) -> UndoReport:
    """Put moved files back where they came from, never overwriting anything.

    Every entry of the journal is checked before anything moves: the target must be a file directly
    in a cluster folder of ``dest`` with the size and modification time recorded when it was moved,
    and the source must resolve (symbolic links followed) to a place inside the images folder the
    journal records. Entries that fail are listed in ``UndoReport.refused``; no folder is ever
    created outside the images folder. A moved file whose original place is taken again stays in
    ``dest`` and is listed in ``UndoReport.kept``. The result does not depend on the current folder.
    """
    dest = Path(dest)
    manifest, journal = _journal_to_undo(dest)
    report = UndoReport()
    if journal.header is None:
        return report
    images_dir = Path(str(journal.header.get("images_dir", "")))
    report.images_dir = images_dir
    if not images_dir.is_absolute() or not images_dir.is_dir():
        raise InputError(f"The images folder recorded in {manifest} ({images_dir}) is not an existing folder; "
                         "nothing was moved. (Undo never creates it.)")
    images_real = images_dir.resolve()
    try:
        for source, entry in journal.latest("move").items():
            target = _target_of(dest, entry)
            src = _inside(images_dir, source)
            if target is None:
                report.refused.append(display_path(f"{entry['target']!r}: not a file in a cluster folder of {dest}"))
                continue
            if src is None or not is_within(src.parent, images_real):
                report.refused.append(display_path(f"{target}: its recorded source {source!r} is outside the images "
                                                   f"folder {images_dir}"))
                continue
            if not os.path.lexists(target):
                continue  # already put back (or removed by the user)
            if not _same_identity(target, entry):
                report.refused.append(display_path(f"{target}: not the file that export moved (its size or modification "
                                                   "time differs from the journal)"))
                continue
            if os.path.lexists(src):
                if _same_file_content(src, target) and not src.is_symlink():
                    os.unlink(target)  # an undo killed after its copy reached the images folder: finish it
                    _append_manifest(manifest, {"op": "undo", "source": source, "target": entry["target"]})
                    report.restored += 1
                else:
                    report.kept.append(display_path(f"{target} (something else is now at {src})"))
                continue
            src.parent.mkdir(parents=True, exist_ok=True)  # inside the images folder (checked above)
            _remove_stale_temporaries(src.parent)
            _move_no_overwrite(target, src)
            _append_manifest(manifest, {"op": "undo", "source": source, "target": entry["target"]})
            report.restored += 1
    except OSError as exc:
        raise OutputError(f"Undo stopped: {exc.strerror or exc} ({exc.filename}). "
                          "Nothing was overwritten; fix the cause and run the same command again.") from exc
    return report
