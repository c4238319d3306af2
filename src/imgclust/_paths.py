"""Where a folder really is: outputs and caches must never be inside the images folder, however reached.

The images folder is searched through symbolic links to folders (see :func:`imgclust.discover`), so a
folder is "inside" it when it lies below the images folder itself *or* below the real target of any
symlinked folder found under it. A cache or output folder there would have its files (plots, copies)
read as images by the next run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ._fs import is_within


def linked_folders(root: str | os.PathLike[str]) -> Iterator[tuple[Path, Path]]:
    """(link, resolved target) of every symbolic link to a folder that a walk of ``root`` follows
    (each real folder is visited once, so loops end)."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for d in dirnames:
            full = Path(dirpath) / d
            if full.is_symlink():
                yield full, full.resolve()


def image_roots(images_dir: str | os.PathLike[str]) -> list[Path]:
    """The real folders a search of ``images_dir`` reaches: the folder itself and the resolved target of
    every symlinked folder below it."""
    root = Path(images_dir).resolve()
    roots = [root]
    for _, target in linked_folders(root):
        if not any(is_within(target, r) for r in roots):
            roots.append(target)
    return roots


def inside_images(path: str | os.PathLike[str], images_dir: str | os.PathLike[str],
                  roots: list[Path] | None = None) -> bool:
    """True when ``path`` (resolved: symlinks, ``..``) is the images folder or below a folder its search reaches."""
    return any(is_within(Path(path), r) for r in (roots if roots is not None else image_roots(images_dir)))
