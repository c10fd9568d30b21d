"""Each benchmark writes its own section of docs/benchmarks.md, between its two markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, text: str, begin: str, end: str) -> None:
    """Replace the section from ``begin`` to ``end`` with ``text`` (which carries both
    markers), or append ``text`` when the page has no such section yet."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in doc and end in doc:
        head, _, rest = doc.partition(begin)
        _, _, tail = rest.partition(end)
        doc = head + text.rstrip("\n") + tail
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)
