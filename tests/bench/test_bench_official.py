"""bench/official.py rewrites docs/benchmarks.md but keeps the sections it does not generate."""

from __future__ import annotations

from pathlib import Path

from bench import cluster, official


def test_a_new_run_keeps_the_hand_kept_and_the_cluster_sections_in_order(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    kept = f"{official.KEPT_BEGIN}\n## Resume hold\nby hand\n{official.KEPT_END}"
    measured = f"{cluster.MARK_BEGIN}\n## Redis Cluster\nmeasured\n{cluster.MARK_END}"
    doc.write_text(f"# Benchmarks\n\nold run\n\n{kept}\n\n{measured}\n")
    text = official.keep_sections(doc, "# Benchmarks\n\nnew run\n")
    assert "old run" not in text and "new run" in text
    assert text.index(kept) < text.index(measured)
    assert text.count(official.KEPT_BEGIN) == 1 and text.count(cluster.MARK_BEGIN) == 1


def test_the_checked_in_page_has_both_kept_sections() -> None:
    page = (Path(official.ROOT) / "docs" / "benchmarks.md").read_text()
    for marker in (official.KEPT_BEGIN, official.KEPT_END, cluster.MARK_BEGIN, cluster.MARK_END):
        assert page.count(marker) == 1, marker
