"""bench/sections.py: a benchmark's section of docs/benchmarks.md, replaced in place."""

from __future__ import annotations

from pathlib import Path

from bench import cluster
from bench.sections import write_section


def test_the_section_is_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nmain part\n")
    marks = (cluster.MARK_BEGIN, cluster.MARK_END)
    write_section(doc, f"{cluster.MARK_BEGIN}\nfirst\n{cluster.MARK_END}\n", *marks)
    write_section(doc, f"{cluster.MARK_BEGIN}\nsecond\n{cluster.MARK_END}\n", *marks)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nmain part\n")
    assert "second" in text and "first" not in text
    assert text.count(cluster.MARK_BEGIN) == 1


def test_a_page_without_the_section_gets_it_appended(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    begin, end = "<!-- x:begin -->", "<!-- x:end -->"
    write_section(doc, f"{begin}\nnew\n{end}\n", begin, end)
    assert doc.read_text() == "# Benchmarks\n\n<!-- x:begin -->\nnew\n<!-- x:end -->\n"
