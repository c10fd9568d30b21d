"""The committed build (gateway/web/static) is what web/'s sources and lock file make.

The pages ship prebuilt so that the gateway runs without Node; this test rebuilds them into a
temporary folder (``npm ci`` in web/ first when its node_modules is missing) and compares
every file, so a change to web/src without ``make web`` fails here.
"""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

from gateway.web.assets import STATIC_DIR
from tests.support.js import npm_installed
from tests.support.paths import ROOT

WEB = ROOT / "web"


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def test_committed_build_matches_the_sources(tmp_path: Path) -> None:
    node = npm_installed(WEB, "esbuild/package.json")
    out = tmp_path / "static"
    subprocess.run([node, "build.mjs", str(out)], cwd=WEB, check=True, timeout=300)
    built, committed = _files(out), _files(STATIC_DIR)
    assert sorted(built) == sorted(committed), "run `make web` and commit gateway/web/static"
    differing = [n for n in built if not filecmp.cmp(built[n], committed[n], shallow=False)]
    assert not differing, f"run `make web` and commit gateway/web/static: {differing} differ"


def test_the_package_ships_the_build() -> None:
    """pyproject's package-data names every folder of the build."""
    text = (ROOT / "pyproject.toml").read_text()
    folders = {p.parent.relative_to(ROOT / "gateway").as_posix() for p in STATIC_DIR.rglob("*")}
    for folder in folders:
        if any(f.is_file() for f in (ROOT / "gateway" / folder).iterdir()):
            assert f'"{folder}/*"' in text, folder
