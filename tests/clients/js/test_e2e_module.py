"""The E2E JavaScript module's own tests (``node --test`` in clients/js: the CPace draft's
vectors, the protocol's vectors byte for byte with Python, records, channels, the outbox)
and its JSDoc types (``tsc --checkJs``), run as part of the Python suite."""

from __future__ import annotations

import re
import subprocess

from tests.support.js_e2e import PACKAGE, node_env


def _run(argv: list[str], what: str) -> str:
    done = subprocess.run(
        argv, cwd=PACKAGE, capture_output=True, text=True, timeout=600, env=node_env(), check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{output[-6000:]}"
    return output


def test_node_test_suite(e2e_node: str) -> None:
    tests = sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "test").glob("*.test.js"))
    assert {"test/cpace.test.js", "test/e2e-vectors.test.js", "test/records.test.js"} <= set(tests)
    output = _run([e2e_node, "--test", *tests], "node --test")
    # Every test ran and passed: none skipped, none marked todo.
    assert "# fail 0" in output and "# skipped 0" in output and "# todo 0" in output, output


def test_types_check(e2e_node: str) -> None:
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    _run([e2e_node, str(tsc), "-p", "jsconfig.json"], "tsc --checkJs")


def test_core_is_browser_safe() -> None:
    """The modules a browser page bundles import no Node built-ins."""
    node_only = re.compile(
        r'from "(node:|fs"|crypto"|path"|os")|\brequire\(|\bBuffer\.|\bprocess\.'
    )
    for path in sorted((PACKAGE / "src").glob("*.js")):
        found = node_only.search(path.read_text())
        assert found is None, f"{path.name} uses {found.group(0)!r}"
