"""What the clients keep on disk: private files, read back after a restart."""

from __future__ import annotations

import stat
from pathlib import Path

from pairing_client.state import PairingStore, load_runner_key, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_replaces_a_file_readable_by_its_user_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.json"
    write_private(path, "one")
    write_private(path, "two")
    assert path.read_text() == "two"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left


def test_pairing_keys_survive_a_restart_and_are_dropped_on_unpair(tmp_path: Path) -> None:
    path = tmp_path / "r.pairings.json"
    store = PairingStore(path)
    store.put("app-1", {"keyId": "aa", "key": "bb"})
    again = PairingStore(path)
    assert again.get("app-1") == {"keyId": "aa", "key": "bb"}
    assert mode(path) == 0o600
    again.drop("app-1")
    assert PairingStore(path).get("app-1") is None
    path.write_text("not json")
    assert PairingStore(path).get("app-1") is None  # a damaged file is no pairing, no crash


def test_runner_key_is_made_once(tmp_path: Path) -> None:
    path = tmp_path / "k" / "r.key"
    key, made = load_runner_key(path)
    assert made and len(key) >= 22 and mode(path) == 0o600
    assert load_runner_key(path) == (key, False)
