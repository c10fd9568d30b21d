"""The pages' own modules that need no browser (web/test, node --test)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.paths import ROOT


def test_page_modules_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: web/test runs under Node.js (apt-get install nodejs)")
    done = subprocess.run(
        [node, "--test", "test/"],
        cwd=ROOT / "web",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout
