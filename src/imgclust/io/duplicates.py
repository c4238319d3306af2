"""Find files with exactly the same bytes among the usable images.

Cheap by construction: only files whose sizes collide are read, and a file is hashed once. With
the cache's :class:`~imgclust.store.FileDigests`, a file hashed by an earlier run (or for the
content identity) is not read again while its path, size and modification time are unchanged.
Duplicates are still clustered (they get the same vector, hence the same cluster); they are
reported so a user can see that, say, ``a.jpg`` and ``copy of a.jpg`` are the same picture.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.digests import content_digest, stat_key
from .discover import ImageRecord

if TYPE_CHECKING:
    from ..store import FileDigests

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
    try:
        return content_digest(record.path)
    except OSError as exc:  # gone or unreadable since it was decoded: not known to be a duplicate
        log.warning("Cannot read %s to look for duplicates: %s", record.path, exc)
        return None


def find_duplicates(records: Sequence[ImageRecord], digests: FileDigests | None = None) -> Duplicates:
    """Group ``records`` whose files have exactly the same bytes.

    Only records whose ``size`` equals another record's size are looked at. Their digests
    (BLAKE2b-128) come from ``digests`` where known there; the others are read, hashed, and
    remembered in ``digests``.

    Example:
        >>> dups = find_duplicates(records)  # doctest: +SKIP
        >>> dups.groups  # doctest: +SKIP
        [['cats/1.jpg', 'copies/1 (copy).jpg']]
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_size[r.size].append(i)
    colliding = sorted(i for same_size in by_size.values() if len(same_size) > 1 for i in same_size)
    known: list[str | None] = [None] * len(colliding)
    stat_keys: list[str] = []
    if digests is not None and colliding:
        stat_keys = [stat_key(records[i].path, records[i].size, records[i].mtime_ns) for i in colliding]
        known = digests.get_many(stat_keys)
    by_hash: dict[str, list[int]] = defaultdict(list)
    new: list[tuple[str, str]] = []
    for j, i in enumerate(colliding):
        digest = known[j]
        if digest is None:
            digest = _digest(records[i])
            if digest is not None and digests is not None:
                new.append((stat_keys[j], digest))
        if digest is not None:
            by_hash[digest].append(i)
    if digests is not None:
        digests.put_many(new)
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
