"""One command at a time per output folder, and no stale files left from an earlier one.

A command that writes an output folder (``run``, ``sweep``, ``assign``) holds an exclusive lock
(``fcntl.flock``) on the folder's marker file ``OUT/.imgclust-output`` from the moment it knows the folder is its own until it
returns. A second command into the same folder at once is refused with a clear error (exit code 2)
instead of mixing its files with the first one's. The lock belongs to the open file: it is released when
the command returns, fails, or is killed (the operating system drops it), so nothing stale is left to
clean up.

When it succeeds, a command also removes the output files an earlier command left in the folder and
it did not write again (``sweep.csv`` of an earlier automatic-k run, ``confusion.csv`` of a run with
labels, the sweep plots, ...): only the names imgclust itself writes (:data:`OUTPUT_FILES`), and only
those that were already there when the command started and were not replaced since.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ._fs import current_umask, ensure_writable_dir
from .errors import OutputError

log = logging.getLogger(__name__)

# Written first into a new output folder, so a run killed before summary.json can be rerun into it; the
# same file is the folder's lock.
OUT_MARKER = ".imgclust-output"
LOCK_NAME = OUT_MARKER
# Every file an imgclust command writes into an output folder (relative paths).
OUTPUT_FILES: tuple[str, ...] = (
    "assignments.csv", "summary.json", "confusion.csv", "sweep.csv", "elbow.png", "criteria.png",
    "report.html", "report-data.npz", "model/model.json", "model/centers.npz", "k-candidates.npz", "duplicates.csv",
)

F = TypeVar("F", bound=Callable[..., Any])


class _Session:
    """The lock and the snapshot of earlier outputs of one command's output folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.fd: int | None = None
        self.before: dict[str, int] = {}  # output name -> an open descriptor of the file that was there

    def acquire(self, text: str = "This folder holds the outputs of imgclust.\n") -> None:
        if self.fd is not None:
            return
        import fcntl

        path = self.out_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0),
                         0o666 & ~current_umask())
        except OSError as exc:
            raise OutputError(f"Cannot create the lock file {path}: {exc.strerror or exc}. "
                              "Choose an output folder you can write to.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"Another imgclust command is writing into {self.out_dir} right now (it holds "
                              f"{path}). Wait until it has finished, or choose another output folder.") from exc
        self.fd = fd
        if os.fstat(fd).st_size == 0:  # a new folder: say what it is (the lock itself needs no content)
            os.write(fd, text.encode("utf-8"))
        self.before = _snapshot(self.out_dir)

    def release(self) -> None:
        for fd in self.before.values():
            os.close(fd)
        self.before = {}
        if self.fd is not None:
            os.close(self.fd)  # closing the file drops the flock
            self.fd = None


_current: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("imgclust_out_session", default=None)


def _snapshot(out_dir: Path) -> dict[str, int]:
    # An open descriptor, not just the inode number: while it is open the inode cannot be freed and reused by
    # a file this command writes, so "the same file as before" cannot be mistaken.
    found = {}
    for name in OUTPUT_FILES:
        try:
            found[name] = os.open(out_dir / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                                  | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
    return found


def is_imgclust_dir(out_dir: Path) -> bool:
    """True when ``out_dir`` is a folder an imgclust command wrote (its marker or summary.json is there)."""
    return (out_dir / OUT_MARKER).exists() or (out_dir / "summary.json").exists()


def _locking(fn: F, cleanup: bool) -> F:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out_dir = Path(signature.bind(*args, **kwargs).arguments["out_dir"])
        session = _Session(out_dir)
        token = _current.set(session)
        try:
            if out_dir.is_dir() and is_imgclust_dir(out_dir):
                session.acquire()
            result = fn(*args, **kwargs)
            if cleanup and session.fd is not None:
                remove_stale_outputs(out_dir, session.before)
            return result
        finally:
            session.release()
            _current.reset(token)

    return wrapper  # type: ignore[return-value]


class _HoldsOutLock:
    def __call__(self, fn: F) -> F:
        """Decorate a command whose ``out_dir`` argument is an output folder: lock it for the whole call.

        The lock is taken at once when ``out_dir`` already is an imgclust folder (a rerun), else by
        :func:`claim_out_dir` when the command creates it. After a successful call, the outputs of an
        earlier command that this one did not write again are removed.
        """
        return _locking(fn, cleanup=True)

    def without_cleanup(self, fn: F) -> F:
        """The same lock, for a command that rewrites only some outputs of a run (``report``)."""
        return _locking(fn, cleanup=False)


holds_out_lock = _HoldsOutLock()


def claim_out_dir(out_dir: Path, text: str) -> None:
    """Create ``out_dir`` (if needed), take its lock (within a :func:`holds_out_lock` command) and mark it as
    imgclust's. Called just before the first output is written.

    Raises:
        OutputError: the folder cannot be written, or another command holds its lock.
    """
    ensure_writable_dir(out_dir)
    session = _current.get()
    if session is None or session.out_dir != out_dir:  # called outside a locked command: a lock for this call
        session = _Session(out_dir)
        session.acquire(text)
        session.release()
    else:
        session.acquire(text)


def keep_outputs(out_dir: Path, *names: str) -> None:
    """Within a locked command on ``out_dir``: the earlier outputs ``names`` still belong to this command's
    results (e.g. the sweep a ``--k`` rerun took its clustering from), so they are not removed as stale."""
    session = _current.get()
    if session is None or session.out_dir != out_dir:
        return
    for name in names:
        fd = session.before.pop(name, None)
        if fd is not None:
            os.close(fd)


def remove_stale_outputs(out_dir: Path, before: dict[str, int]) -> list[str]:
    """Remove the outputs listed in ``before`` (name -> open descriptor of the file there when the command
    started) that are still that same file: this command did not write them again. Returns the names removed."""
    removed = []
    for name, fd in before.items():
        path = out_dir / name
        try:
            st, old = os.lstat(path), os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (old.st_dev, old.st_ino):
            continue  # written again by this command
        try:
            path.unlink()
            removed.append(name)
        except OSError as exc:
            log.warning("Could not remove the stale output %s: %s", path, exc.strerror or exc)
    if "model/model.json" in removed:
        try:
            (out_dir / "model").rmdir()
        except OSError:
            pass  # not empty: leave it
    if removed:
        log.info("Removed outputs of an earlier command that this one did not write: %s", ", ".join(removed))
    return removed
