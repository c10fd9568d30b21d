"""Secrets a client keeps on disk (files of mode 0600 in a directory of mode 0700): the
runner's key, and the pairing key an app and a runner share after a pairing."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"))


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by this user only, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def load_runner_key(path: Path) -> tuple[str, bool]:
    """This runner's key, read from ``path`` or made there; and whether it was made now."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)  # 256 bits, 43 chars of the runnerKey alphabet
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this runner made it meanwhile
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key, True


class PairingStore:
    """Pairing keys by appSessionId, in memory and (with a path) in a JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._keys: dict[str, dict[str, Any]] = {}
        if path is not None:
            try:
                loaded = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                loaded = {}
            if isinstance(loaded, dict):
                self._keys = {k: v for k, v in loaded.items() if isinstance(v, dict)}

    def get(self, app_session_id: str) -> dict[str, Any] | None:
        return self._keys.get(app_session_id)

    def put(self, app_session_id: str, entry: dict[str, Any]) -> None:
        self._keys[app_session_id] = entry
        self._save()

    def drop(self, app_session_id: str) -> None:
        if self._keys.pop(app_session_id, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            write_private(self.path, json.dumps(self._keys))
