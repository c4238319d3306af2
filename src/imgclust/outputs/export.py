"""Sort the images into one folder per cluster: copy (default), symlink, or move (only when asked).

Rules: nothing is ever overwritten (a name clash gets a ``-1``, ``-2`` ... suffix); a copy is
written to a temporary name and linked into place, so a killed export leaves no half-written
file; a rerun skips files already exported (same name and same bytes) instead of duplicating
them; every action is appended to ``DEST/imgclust-export-manifest.jsonl`` (before it is done) so that
a move can be undone with :func:`undo_export` and a killed export can be finished by a rerun
without duplicates.
"""

from __future__ import annotations

import errno
import filecmp
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._fs import is_within, unique_path
from ..clean.selection import is_outlier
from ..clean.selection import one_per_duplicate_group as one_per_duplicate_group_rows
from ..errors import InputError, OutputError, ParameterError
from ..io.discover import discover, display_path
from .tables import read_assignments, read_summary

log = logging.getLogger(__name__)

MODES = ("copy", "symlink", "move")
MANIFEST = "imgclust-export-manifest.jsonl"
_TMP_PREFIX = ".imgclust-partial-"


@dataclass(frozen=True)
class ExportAction:
    source: Path
    folder: str
    cluster: int


@dataclass
class ExportReport:
    dest: Path
    mode: str
    done: int = 0
    skipped_existing: int = 0
    missing_sources: list[str] = field(default_factory=list)
    manifest: Path | None = None


def safe_folder_name(name: str, fallback: str) -> str:
    """A folder name that cannot escape its parent: no separators, no '..', no control characters."""
    cleaned = re.sub(r"[\x00-\x1f/\\:*?\"<>|]+", "_", name).strip(" .")
    cleaned = cleaned[:80]
    return cleaned if cleaned and cleaned not in (".", "..") else fallback


def plan_export(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                one_per_duplicate_group: str | None = None,
                outliers_to: str | None = None) -> tuple[list[ExportAction], list[str]]:
    """What an export would do: one action per clustered image, and the paths that no longer exist.

    ``one_per_duplicate_group`` (``largest`` or ``sharpest``) leaves out all but one image of each
    near-duplicate group; ``outliers_to`` names a folder that takes the images marked as outliers
    instead of their cluster's folder.
    """
    out_dir, dest = Path(out_dir), Path(dest)
    summary = read_summary(out_dir)
    images_dir = Path(summary["images_dir"])
    if is_within(dest, images_dir):
        raise OutputError(f"The export destination {dest} is inside the images folder {images_dir}; "
                          "choose a folder outside it so the images are never mixed with the output.")
    rows = read_assignments(out_dir)
    if one_per_duplicate_group is not None:
        rows = one_per_duplicate_group_rows(out_dir, rows, one_per_duplicate_group)
    outlier_folder = safe_folder_name(outliers_to, "outliers") if outliers_to is not None else None
    names = {int(k): v for k, v in (summary.get("cluster_names") or {}).items()}
    width = max(2, len(str(max(int(summary.get("k", 1)) - 1, 0))))
    by_display = {r.relpath: r.path for r in discover(images_dir, exclude=[out_dir, dest])} if images_dir.is_dir() else {}
    actions, missing = [], []
    for row in rows:
        if row.get("status") != "ok" or row.get("cluster", "") == "":
            continue
        c = int(row["cluster"])
        default = f"cluster_{c:0{width}d}"
        folder = f"{default}_{safe_folder_name(names[c], default)}" if c in names else default
        if outlier_folder is not None and is_outlier(row):
            folder = outlier_folder
        src = by_display.get(row["path"])
        if src is None:
            missing.append(row["path"])
            continue
        actions.append(ExportAction(src, folder, c))
    return actions, missing


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        return os.path.getsize(a) == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _copy_no_overwrite(src: Path, target_dir: Path, manifest: Path) -> Path:
    """Copy ``src`` into ``target_dir`` under a free name; the copy appears complete or not at all."""
    tmp = target_dir / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        shutil.copy2(src, tmp)
        while True:
            target = unique_path(target_dir / src.name)
            # Record the intent first: a rerun after a kill here finds the copy instead of making a second one.
            _append_manifest(manifest, {"op": "copy", "source": str(src), "target": str(target)})
            try:
                os.link(tmp, target)  # fails if target exists: never overwrites
                return target
            except FileExistsError:
                continue
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _append_manifest(manifest: Path, entry: dict[str, str]) -> None:
    # ensure_ascii: file names that are not UTF-8 (surrogate escapes) survive as \udcXX escapes.
    with open(manifest, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _already_done(mode: str, source: Path, target: Path | None) -> bool:
    """Whether an earlier (maybe killed) export already put ``source`` at ``target``."""
    if target is None or not os.path.lexists(target):
        return False
    if mode == "copy":
        return _same_file_content(source, target)
    if mode == "symlink":
        return target.is_symlink() and os.readlink(target) == str(source.resolve())
    return not os.path.lexists(source)  # move: the file left its source and sits at the target


def _target_dir(dest: Path, folder: str) -> Path:
    """``dest/folder``, created; refused if it is (or leads through) a link out of ``dest``."""
    target_dir = dest / folder
    target_dir.mkdir(exist_ok=True)
    if target_dir.is_symlink() or target_dir.resolve().parent != dest.resolve():
        raise OutputError(f"{target_dir} is a link to a place outside {dest}; not writing through it. "
                          "Remove the link or choose another destination.")
    return target_dir


def export(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, mode: str = "copy",
           progress: Callable[[str, int, int], None] | None = None, one_per_duplicate_group: str | None = None,
           outliers_to: str | None = None) -> ExportReport:
    """Put each clustered image into ``DEST/cluster_NN/``.

    Args:
        out_dir: the output folder of a run (holds assignments.csv and summary.json).
        dest: where the cluster folders go (created; must not be inside the images folder).
        mode: ``copy`` (default), ``symlink`` or ``move``. The CLI asks for ``--yes`` before a move.
        one_per_duplicate_group: ``largest`` or ``sharpest``: export only that image of each
            near-duplicate group (duplicates.csv); None exports them all.
        outliers_to: a folder name under ``dest`` for the images marked as outliers (the ``outlier``
            column), instead of their cluster's folder.

    A rerun of the same export (e.g. after a kill) finishes the job: the manifest tells which
    files are already in place, and those are skipped rather than exported a second time.

    Example:
        >>> export("out", "sorted")  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}; got '{mode}'.")
    actions, missing = plan_export(out_dir, dest, one_per_duplicate_group=one_per_duplicate_group,
                                   outliers_to=outliers_to)
    dest = Path(dest)
    report = ExportReport(dest=dest, mode=mode, missing_sources=missing)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(f"*/{_TMP_PREFIX}*"):  # left by a killed copy: never a user's file
            stale.unlink()
        manifest = dest / MANIFEST
        report.manifest = manifest
        before = _done_before(manifest, mode)
        if mode == "move":  # files an earlier, interrupted move already took are done, not missing
            images_dir = Path(read_summary(Path(out_dir))["images_dir"])
            moved = {_relpath(Path(s), images_dir) for s, t in before.items() if _already_done(mode, Path(s), t)}
            report.missing_sources = [m for m in missing if m not in moved]
            report.skipped_existing = len(missing) - len(report.missing_sources)
        for i, a in enumerate(actions):
            target_dir = _target_dir(dest, a.folder)
            earlier = before.get(str(a.source))
            if _already_done(mode, a.source, earlier):
                report.skipped_existing += 1
            elif mode == "copy":
                _copy_no_overwrite(a.source, target_dir, manifest)
                report.done += 1
            elif mode == "symlink":
                target = unique_path(target_dir / a.source.name)
                _append_manifest(manifest, {"op": mode, "source": str(a.source), "target": str(target)})
                os.symlink(a.source.resolve(), target)
                report.done += 1
            elif earlier is not None and _same_inode(a.source, earlier):
                os.unlink(a.source)  # killed between link and unlink: the file is already at its target
                report.done += 1
            else:
                target = unique_path(target_dir / a.source.name)
                # Record the intent first, so an interrupted move can always be found and undone.
                _append_manifest(manifest, {"op": "move", "source": str(a.source), "target": str(target)})
                _move_no_overwrite(a.source, target)
                report.done += 1
            if progress:
                progress("export", i + 1, len(actions))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise OutputError(f"Export to {dest} stopped: {exc.strerror or exc}{where}. "
                          "Nothing was overwritten; fix the cause and run the same command again to finish.") from exc
    return report


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _relpath(path: Path, root: Path) -> str:
    try:
        return display_path(path.relative_to(root).as_posix())
    except ValueError:
        return ""


def _move_no_overwrite(src: Path, target: Path) -> None:
    """Move one file (a link is moved as the link) to ``target``; FileExistsError if target is taken."""
    try:
        os.link(src, target, follow_symlinks=False)  # fails if target exists, unlike rename
    except FileExistsError:
        raise
    except OSError:  # another device, or a filesystem without hard links
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from None
        shutil.move(src, target)
        return
    os.unlink(src)


def _manifest_entries(manifest: Path) -> list[dict[str, str]]:
    entries = []
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash
    return entries


def _done_before(manifest: Path, mode: str) -> dict[str, Path]:
    """source -> the last target an earlier export of this ``mode`` recorded for it (undone moves dropped)."""
    done: dict[str, Path] = {}
    for e in _manifest_entries(manifest):
        if e.get("op") == mode:
            done[e["source"]] = Path(e["target"])
        elif e.get("op") == "undo":
            done.pop(e["source"], None)
    return done


@dataclass
class UndoReport:
    """What :func:`undo_export` did: files put back, and moved files left where they are (with why)."""

    restored: int = 0
    kept: list[str] = field(default_factory=list)


def undo_export(dest: str | os.PathLike[str]) -> UndoReport:
    """Put moved files back where they came from, never overwriting anything.

    A moved file whose original place is taken again (a new file was put there) stays in ``dest``
    and is listed in ``UndoReport.kept``.
    """
    dest = Path(dest)
    manifest = dest / MANIFEST
    if not manifest.exists():
        raise InputError(f"{dest} holds no {MANIFEST}: nothing to undo.")
    report = UndoReport()
    try:
        for source, target in _done_before(manifest, "move").items():
            src = Path(source)
            if not os.path.lexists(target) or os.path.lexists(src):
                if os.path.lexists(target):
                    report.kept.append(f"{target} (something else is now at {src})")
                continue
            src.parent.mkdir(parents=True, exist_ok=True)
            _move_no_overwrite(target, src)
            _append_manifest(manifest, {"op": "undo", "source": source, "target": str(target)})
            report.restored += 1
    except OSError as exc:
        raise OutputError(f"Undo stopped: {exc.strerror or exc} ({exc.filename}). "
                          "Nothing was overwritten; fix the cause and run the same command again.") from exc
    return report
