"""The built pages and bundles (``gateway/web/static``, made by ``make web``), held in memory.

Each file is read once at start-up with its gzip form (made once, level 9) and an ETag; the
bundles under ``assets/`` carry a content hash in their names, so they are served as
immutable and a new build is a new URL.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")

#: Smaller files gain nothing from compression.
_MIN_GZIP = 512
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


class MissingBuild(RuntimeError):
    """The package has no built pages (``make web`` was not run)."""


class Assets:
    """Every file of the build, by its path relative to the static folder."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        if not (root / "index.html").is_file():
            raise MissingBuild(f"{root} holds no built pages: run `make web`")
        self.files: dict[str, Asset] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.files[path.relative_to(root).as_posix()] = _load(path)

    def get(self, name: str) -> Asset | None:
        return self.files.get(name)


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    content_type = _TYPES.get(path.suffix) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    gzipped = None
    if len(body) >= _MIN_GZIP and not content_type.startswith("image/png"):
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        if len(packed) < len(body):
            gzipped = packed
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body=body, gzipped=gzipped, content_type=content_type, etag=etag)
