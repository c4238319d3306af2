"""Small, safe filesystem helpers: atomic writes and never-overwrite names.

Every file imgclust writes goes through :func:`atomic_write_bytes` (or its text/json
variants): the bytes are written to a temporary file in the same folder, flushed, and
renamed over the target, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from .errors import OutputError


def _explain_os_error(exc: OSError, path: Path) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"No space left on the device while writing {path}. Free some space and run again.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"Permission denied while writing {path}. Choose an output folder you can write to.")
    return OutputError(f"Could not write {path}: {exc.strerror or exc}.")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere: set and restore at once (the only portable way to read it).
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` atomically when the block ends without an error (temporary file in
    the same folder, flushed, fsync'ed, renamed); on an error it is removed and ``path`` is left as it was.
    For outputs written piece by piece (a table of millions of rows is never held whole)."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # mkstemp makes the file 0600; the renamed file must get the mode any new file gets (the umask).
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise _explain_os_error(exc, path) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename). Returns the path."""
    with atomic_writer(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically. Characters that cannot be UTF-8 (file names holding bytes that are not
    UTF-8 reach Python as surrogate escapes) are written as visible ``\\udcXX`` escapes, never dropped."""
    return atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON (indented, UTF-8, keys in insertion order) atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a path that is not UTF-8 (surrogate escapes) survives only as \udcXX escapes
        text = json.dumps(obj, indent=2, ensure_ascii=True, default=_json_default) + "\n"
    return atomic_write_text(path, text)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def unique_path(path: Path) -> Path:
    """Return ``path`` if nothing exists there, else ``stem-1.ext``, ``stem-2.ext``, ... that does not."""
    if not os.path.lexists(path):
        return path
    stem, suffix = path.stem, path.suffix
    i = 1
    while True:
        candidate = path.with_name(f"{stem}-{i}{suffix}")
        if not os.path.lexists(candidate):
            return candidate
        i += 1


def is_within(child: Path, parent: Path) -> bool:
    """True when ``child`` is ``parent`` or lies below it (both resolved)."""
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be created in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".imgclust-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _explain_os_error(exc, path) from exc
    return path
