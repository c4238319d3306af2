"""Sort the images into one folder per cluster: copy (default), symlink, or move (only when asked).

Rules: nothing is ever overwritten (a name clash gets a ``-1``, ``-2`` ... suffix); a copy is
written to a temporary name and linked into place, so a killed export leaves no half-written
file; a rerun skips files already exported (same name and same bytes) instead of duplicating
them; every action is appended to ``DEST/imgclust-export-manifest.jsonl`` so that a move can be
undone with :func:`undo_export`.
"""

from __future__ import annotations

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
from ..errors import InputError, OutputError, ParameterError
from ..io.discover import discover
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


def plan_export(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> tuple[list[ExportAction], list[str]]:
    """What an export would do: one action per clustered image, and the paths that no longer exist."""
    out_dir, dest = Path(out_dir), Path(dest)
    summary = read_summary(out_dir)
    images_dir = Path(summary["images_dir"])
    if is_within(dest, images_dir):
        raise OutputError(f"The export destination {dest} is inside the images folder {images_dir}; "
                          "choose a folder outside it so the images are never mixed with the output.")
    rows = read_assignments(out_dir)
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


def _copy_no_overwrite(src: Path, target_dir: Path) -> tuple[Path, bool]:
    """Copy ``src`` into ``target_dir``; returns (path, copied). Skips when an identical file is there."""
    wanted = target_dir / src.name
    if wanted.exists() and _same_file_content(src, wanted):
        return wanted, False
    tmp = target_dir / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    shutil.copy2(src, tmp)
    try:
        while True:
            target = unique_path(wanted)
            try:
                os.link(tmp, target)  # fails if target exists: never overwrites
                return target, True
            except FileExistsError:
                continue
    finally:
        os.unlink(tmp)


def _append_manifest(manifest: Path, entry: dict[str, str]) -> None:
    with open(manifest, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def export(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, mode: str = "copy",
           progress: Callable[[str, int, int], None] | None = None) -> ExportReport:
    """Put each clustered image into ``DEST/cluster_NN/``.

    Args:
        out_dir: the output folder of a run (holds assignments.csv and summary.json).
        dest: where the cluster folders go (created; must not be inside the images folder).
        mode: ``copy`` (default), ``symlink`` or ``move``. The CLI asks for ``--yes`` before a move.

    Example:
        >>> export("out", "sorted")  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}; got '{mode}'.")
    actions, missing = plan_export(out_dir, dest)
    dest = Path(dest)
    report = ExportReport(dest=dest, mode=mode, missing_sources=missing)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(f"*/{_TMP_PREFIX}*"):  # left by a killed copy: never a user's file
            stale.unlink()
        manifest = dest / MANIFEST
        report.manifest = manifest
        moved_before = _moved_sources(manifest)
        for i, a in enumerate(actions):
            target_dir = dest / a.folder
            target_dir.mkdir(exist_ok=True)
            if mode == "copy":
                target, done = _copy_no_overwrite(a.source, target_dir)
            elif mode == "symlink":
                wanted = target_dir / a.source.name
                if wanted.is_symlink() and os.readlink(wanted) == str(a.source.resolve()):
                    target, done = wanted, False
                else:
                    target = unique_path(wanted)
                    os.symlink(a.source.resolve(), target)
                    done = True
            else:
                if str(a.source) in moved_before:
                    target, done = Path(moved_before[str(a.source)]), False
                else:
                    target = unique_path(target_dir / a.source.name)
                    # Record the intent first, so an interrupted move can always be found and undone.
                    _append_manifest(manifest, {"op": "move", "source": str(a.source), "target": str(target)})
                    os.rename(a.source, target) if _same_device(a.source, target_dir) else shutil.move(a.source, target)
                    done = True
            if done and mode != "move":
                _append_manifest(manifest, {"op": mode, "source": str(a.source), "target": str(target)})
            report.done += int(done)
            report.skipped_existing += int(not done)
            if progress:
                progress("export", i + 1, len(actions))
    except OSError as exc:
        raise OutputError(f"Export to {dest} stopped: {exc.strerror or exc} ({exc.filename}). "
                          "Nothing was overwritten; fix the cause and run the same command again to finish.") from exc
    return report


def _same_device(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def _moved_sources(manifest: Path) -> dict[str, str]:
    moved: dict[str, str] = {}
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if e.get("op") == "move" and Path(e["target"]).exists() and not Path(e["source"]).exists():
                moved[e["source"]] = e["target"]
            elif e.get("op") == "undo":
                moved.pop(e["source"], None)
    return moved


def undo_export(dest: str | os.PathLike[str]) -> int:
    """Put moved files back where they came from (never overwriting). Returns how many were restored."""
    dest = Path(dest)
    manifest = dest / MANIFEST
    if not manifest.exists():
        raise InputError(f"{dest} holds no {MANIFEST}: nothing to undo.")
    restored = 0
    for source, target in _moved_sources(manifest).items():
        src, tgt = Path(source), Path(target)
        if os.path.lexists(src):
            log.warning("Not restoring %s: something already exists at %s", tgt, src)
            continue
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tgt, src)
        _append_manifest(manifest, {"op": "undo", "source": source, "target": target})
        restored += 1
    return restored
