"""Where the shared labelled datasets are: ``shared/datasets`` beside the checkout, or beside a folder
above it (git worktrees live one level deeper). Imported by the benchmarks run as scripts."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = next((p / "shared" / "datasets" for p in REPO.parents if (p / "shared" / "datasets").is_dir()),
                REPO.parent / "shared" / "datasets")
