"""Repository hygiene: no merge-conflict markers left in shipped files (templates render them silently)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)


def test_no_conflict_markers_in_sources_templates_or_docs():
    files = [p for d in ("src", "docs", "bench", "scripts") for p in (ROOT / d).rglob("*")
             if p.is_file() and p.suffix in {".py", ".j2", ".html", ".js", ".css", ".md", ".sh", ".txt"}]
    files += [ROOT / "README.md"]
    bad = [str(p.relative_to(ROOT)) for p in files if MARKER.search(p.read_text(encoding="utf-8", errors="replace"))]
    assert bad == []
