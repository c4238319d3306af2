"""Find files with exactly the same bytes among the usable images.

Cheap by construction: only files whose sizes collide are read, and a file is hashed once.
Duplicates are still clustered (they get the same vector, hence the same cluster); they are
reported so a user can see that, say, ``a.jpg`` and ``copy of a.jpg`` are the same picture.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from .discover import ImageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duplicates:
    """Groups of byte-identical files.

    Attributes:
        groups: each group lists the relative paths of identical files, sorted; the first is the
            one the others are reported as duplicates of. Groups are sorted by their first path.
        duplicate_of: one entry per record given to :func:`find_duplicates`, in order: the relative
            path of the group's first file for a duplicate, "" otherwise (also for the first file).
    """

    groups: list[list[str]]
    duplicate_of: list[str]

    @property
    def n_duplicates(self) -> int:
        """Files that are copies of an earlier file (group sizes minus one, summed)."""
        return sum(len(g) - 1 for g in self.groups)


def _digest(record: ImageRecord) -> str | None:
    h = hashlib.blake2b(digest_size=20)
    try:
        with open(record.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:  # gone or unreadable since it was decoded: not known to be a duplicate
        log.warning("Cannot read %s to look for duplicates: %s", record.path, exc)
        return None
    return h.hexdigest()


def find_duplicates(records: Sequence[ImageRecord]) -> Duplicates:
    """Group ``records`` whose files have exactly the same bytes.

    Only records whose ``size`` equals another record's size are read and hashed (BLAKE2b).

    Example:
        >>> dups = find_duplicates(records)  # doctest: +SKIP
        >>> dups.groups  # doctest: +SKIP
        [['cats/1.jpg', 'copies/1 (copy).jpg']]
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_size[r.size].append(i)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        for i in same_size:
            digest = _digest(records[i])
            if digest is not None:
                by_hash[digest].append(i)
    duplicate_of = [""] * len(records)
    groups = []
    for members in by_hash.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda i: records[i].relpath)
        first = records[members[0]].relpath
        for i in members[1:]:
            duplicate_of[i] = first
        groups.append([records[i].relpath for i in members])
    groups.sort(key=lambda g: g[0])
    return Duplicates(groups, duplicate_of)
