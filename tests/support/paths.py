"""Where the repository's files are, for tests in any folder."""

from __future__ import annotations

from pathlib import Path

#: The repository's root (holds config.yaml, deploy/, docs/, examples/).
ROOT = Path(__file__).resolve().parents[2]
