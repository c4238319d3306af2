"""The report's clean sections: near-duplicate groups side by side, outliers, quality flags.

Built from the files of a finished run (assignments.csv, duplicates.csv, summary.json), like the
rest of the report; thumbnails are bounded (:data:`MAX_GROUPS`, :data:`MAX_OUTLIERS`,
:data:`PER_FLAG`) so the page stays small whatever the size of the folder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tables import read_csv

MAX_GROUPS = 40  # near-duplicate groups shown
PER_GROUP = 8  # thumbnails per group
MAX_OUTLIERS = 48
PER_FLAG = 16  # example thumbnails per quality flag


@dataclass
class CleanThumb:
    path: str
    src: str | None
    note: str = ""
    kept: bool = False


@dataclass
class CleanView:
    groups: list[list[CleanThumb]] = field(default_factory=list)
    n_groups: int = 0
    near: dict[str, Any] = field(default_factory=dict)
    outliers: list[CleanThumb] = field(default_factory=list)
    n_outliers: int = 0
    outlier_rule: str = ""
    flags: list[tuple[str, int, list[CleanThumb]]] = field(default_factory=list)


def clean_view(out_dir: Path, rows: Sequence[Mapping[str, str]], summary: dict[str, Any],
               thumbnail: Callable[[Path], str | None]) -> CleanView | None:
    """What the clean sections show, or None for a run made before these checks existed."""
    if "quality" not in (rows[0] if rows else {}):
        return None
    images_dir = Path(summary.get("images_dir", ""))
    view = CleanView(near=summary.get("near_duplicates") or {},
                     outlier_rule=(summary.get("outliers") or {}).get("rule", ""))
    by_group: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    duplicates = out_dir / "duplicates.csv"
    for d in read_csv(duplicates) if duplicates.is_file() else []:
        by_group[d["group"]].append(d)
    view.n_groups = len(by_group)
    groups = list(by_group.values())[:MAX_GROUPS]
    outliers = sorted((r for r in rows if r.get("outlier") == "1"), key=lambda r: -float(r.get("outlier_score") or 0))
    view.n_outliers = len(outliers)
    from ..clean.quality import FLAGS

    examples = {f: [r for r in rows if f in (r.get("quality") or "").split(";")] for f in FLAGS}
    wanted = {d["path"] for g in groups for d in g[:PER_GROUP]} | {r["path"] for r in outliers[:MAX_OUTLIERS]}
    wanted |= {r["path"] for ex in examples.values() for r in ex[:PER_FLAG]}
    with ThreadPoolExecutor(max_workers=4) as pool:
        srcs = dict(zip(sorted(wanted), pool.map(lambda p: thumbnail(images_dir / p), sorted(wanted)), strict=True))
    view.groups = [[CleanThumb(d["path"], srcs[d["path"]], f"{d.get('width', '')}x{d.get('height', '')}",
                               d.get("kept") == "1") for d in g[:PER_GROUP]] for g in groups]
    view.outliers = [CleanThumb(r["path"], srcs[r["path"]], f"score {float(r.get('outlier_score') or 0):.3f}")
                     for r in outliers[:MAX_OUTLIERS]]
    view.flags = [(f, len(ex), [CleanThumb(r["path"], srcs[r["path"]]) for r in ex[:PER_FLAG]])
                  for f, ex in examples.items()]
    return view
