"""Walk a folder and list the image files in it. Never decodes an image.

Every file that looks like an image by its name becomes an :class:`ImageRecord`. Things that
cannot be read (a broken symlink, a directory named ``x.jpg``, a file without read
permission) become records too, with a ``status`` and an ``error``, so that every output
can list them: nothing is skipped silently.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError, ParameterError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LABEL_MODES: tuple[str, ...] = ("auto", "folder", "prefix", "none")

# Statuses a record can carry. "ok" means: usable so far (decoding may still fail later).
STATUS_OK = "ok"


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One file found under the images folder.

    Attributes:
        file: absolute path of the file, as text (given as a Path or text); ``path`` gives it as a Path.
        relpath: path relative to the images folder, with '/' separators (what outputs show).
        size: size in bytes (0 when unknown).
        mtime_ns: modification time in nanoseconds (0 when unknown).
        status: ``"ok"`` or the reason the file cannot be used (e.g. ``"broken_symlink"``).
        error: a human-readable explanation when status is not ok.
        label: the ground-truth label when one is known (only used for scoring).
    """

    file: str
    relpath: str
    size: int = 0
    mtime_ns: int = 0
    status: str = STATUS_OK
    error: str = ""
    label: str | None = None

    def __post_init__(self) -> None:
        # Text, not a Path: a Path keeps every part of itself as a string of its own (a folder of millions
        # of images held a few hundred bytes more per image).
        if not isinstance(self.file, str):
            object.__setattr__(self, "file", os.fspath(self.file))

    @property
    def path(self) -> Path:
        """The absolute path of the file."""
        return Path(self.file)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def failed(self, status: str, error: str) -> ImageRecord:
        """A copy of this record marked as unusable."""
        return replace(self, status=status, error=error)


def _has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def display_path(rel: str) -> str:
    """``rel`` as outputs show it: bytes that are not UTF-8 (surrogate escapes) become ``\\x..`` escapes."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def discover(
    images_dir: str | os.PathLike[str],
    *,
    exclude: Sequence[str | os.PathLike[str]] = (),
    follow_symlinks: bool = True,
) -> list[ImageRecord]:
    """List the image files under ``images_dir``, recursively, sorted by relative path.

    Args:
        images_dir: the folder to search.
        exclude: folders never to enter (e.g. an output folder that lies inside ``images_dir``).
        follow_symlinks: follow symlinked folders (each real folder is visited once, so loops end).

    Returns:
        list of :class:`ImageRecord`, one per file with an image extension (any case).
        Hidden files (names starting with '.') are reported with status ``hidden``.

    Raises:
        InputError: the folder does not exist or is not a folder.

    Example:
        >>> records = discover("photos")  # doctest: +SKIP
        >>> [r.relpath for r in records if r.ok][:2]  # doctest: +SKIP
        ['cat/1.jpg', 'cat/2.jpg']
    """
    root = Path(images_dir)
    if not root.exists():
        raise InputError(f"The images folder {root} does not exist.")
    if not root.is_dir():
        raise InputError(f"{root} is not a folder. Pass the folder that holds the images.")
    root_abs = root.resolve()
    excluded = {Path(e).resolve() for e in exclude}
    records: list[ImageRecord] = []
    seen_dirs: set[tuple[int, int]] = set()

    def on_error(exc: OSError) -> None:
        log.warning("Cannot list %s: %s", exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root_abs, followlinks=follow_symlinks, onerror=on_error):
        here = Path(dirpath)
        try:
            st = here.stat()
            key = (st.st_dev, st.st_ino)
        except OSError:
            dirnames[:] = []
            continue
        if key in seen_dirs:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        keep_dirs = []
        for d in sorted(dirnames):
            full = here / d
            if full.resolve() in excluded:
                log.info("Skipping %s: it is an output folder.", full)
                continue
            if _has_image_extension(d):
                rel = full.relative_to(root_abs).as_posix()
                records.append(ImageRecord(os.fspath(full), display_path(rel), status="is_a_directory",
                                           error="This is a folder whose name ends like an image file."))
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        # The relative path of the folder once, not of each file (a large folder spent seconds in pathlib).
        rel_dir = here.relative_to(root_abs).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in filenames:
            if not _has_image_extension(name):
                continue
            records.append(_stat_record(here / name, display_path(prefix + name)))
    records.sort(key=lambda r: r.relpath)
    return records


def _stat_record(full: Path, rel: str) -> ImageRecord:
    if full.name.startswith("."):
        return ImageRecord(os.fspath(full), rel, status="hidden",
                           error="Hidden file (name starts with '.'), e.g. macOS metadata; not an image.")
    try:
        st = full.stat()
    except FileNotFoundError:
        return ImageRecord(os.fspath(full), rel, status="broken_symlink", error="Symbolic link to a file that does not exist.")
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            return ImageRecord(os.fspath(full), rel, status="symlink_loop",
                               error="Symbolic link loop: the link leads back to itself, never to a file.")
        return ImageRecord(os.fspath(full), rel, status="unreadable", error=f"Cannot read file information: {exc.strerror}.")
    if stat.S_ISDIR(st.st_mode):
        return ImageRecord(os.fspath(full), rel, status="is_a_directory", error="This is a folder, not a file.")
    if not stat.S_ISREG(st.st_mode):
        return ImageRecord(os.fspath(full), rel, status="not_a_file", error="Not a regular file (a device, pipe or socket).")
    if not os.access(full, os.R_OK):
        return ImageRecord(os.fspath(full), rel, st.st_size, st.st_mtime_ns, status="permission_denied",
                           error="No permission to read this file.")
    if st.st_size == 0:
        return ImageRecord(os.fspath(full), rel, 0, st.st_mtime_ns, status="empty_file", error="The file is empty (0 bytes).")
    return ImageRecord(os.fspath(full), rel, st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------------------------
# Labels (only for scoring; they never influence the clustering)


def _prefix_label(relpath: str) -> str:
    name = relpath.rsplit("/", 1)[-1]
    for i, ch in enumerate(name):
        if ch in "._-":
            return name[:i] if i > 0 else name
    return name


def _folder_label(relpath: str) -> str | None:
    parts = relpath.split("/")
    return parts[0] if len(parts) > 1 else None


LABEL_RULES: dict[str, Callable[[str], str | None]] = {"folder": _folder_label, "prefix": _prefix_label}


def resolve_label_mode(mode: str, relpaths: Iterable[str]) -> str:
    """Turn ``auto`` into ``folder`` (images in 2+ first-level subfolders) or ``none``."""
    if mode not in LABEL_MODES:
        raise ParameterError(f"Unknown label mode '{mode}'. Choose one of: {', '.join(LABEL_MODES)}.")
    if mode != "auto":
        return mode
    top = {p.split("/")[0] for p in relpaths if "/" in p}
    return "folder" if len(top) >= 2 else "none"


def attach_labels(records: Sequence[ImageRecord], mode: str) -> tuple[list[ImageRecord], str]:
    """Return the records with ``label`` filled in by ``mode``, and the mode actually used.

    ``folder``: the first-level subfolder (``IMAGES/cat/1.jpg`` -> ``cat``); ``prefix``: the file
    name up to the first '.', '_' or '-' (``cat.123.jpg`` -> ``cat``); ``none``; ``auto``: folder
    when the images sit in two or more first-level subfolders, else none.
    """
    used = resolve_label_mode(mode, [r.relpath for r in records if r.ok])
    if used == "none":
        return [replace(r, label=None) for r in records], used
    rule = LABEL_RULES[used]
    names: dict[str, str] = {}  # one string per label, not one per image
    return [replace(r, label=_shared(names, rule(r.relpath))) for r in records], used


def _shared(names: dict[str, str], label: str | None) -> str | None:
    return label if label is None else names.setdefault(label, label)
