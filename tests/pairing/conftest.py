"""Fixtures of the pairing services' tests."""

from __future__ import annotations

import pytest

from pairing import PairingSessionService
from pairing.store import Redis


@pytest.fixture
def sessions(store: Redis) -> PairingSessionService:
    """PairingSessionService on ``store`` (the real server, then the embedded store)."""
    return PairingSessionService(store)
