"""A model-based test of PairingSessionService on the real server (hypothesis stateful).

Hypothesis drives synchronous rules; each machine runs the async service on an event loop of
its own, closed (with the client) in ``teardown``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from pairing import PairingSessionService, keys
from pairing.store import connect
from tests.support.redis_server import RedisProcess
from tests.support.store_state import snapshot

T = TypeVar("T")

APPS = st.sampled_from([f"app-{i}" for i in range(5)])
RUNNERS = st.sampled_from([f"runner-{i}" for i in range(3)])


class SessionMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = connect(self.url)
        self.svc = PairingSessionService(self.client)
        self.model: dict[str, str] = {}  # app -> runner
        self.run(self.client.flushdb())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.client.flushdb())
            self.run(self.client.aclose())
        finally:
            self.loop.close()

    def apps_of(self, runner: str) -> list[str]:
        return sorted(a for a, r in self.model.items() if r == runner)

    # -- rules -----------------------------------------------------------------------------

    @rule(app=APPS, runner=RUNNERS)
    def create_session(self, app: str, runner: str) -> None:
        self.run(self.svc.create_session(app, runner))
        self.model[app] = runner

    @rule(app=APPS, runner=RUNNERS)
    def pair(self, app: str, runner: str) -> None:
        previous = self.run(self.svc.pair(app, runner))
        assert previous == self.model.get(app)
        self.model[app] = runner

    @rule(app=APPS)
    def remove_session(self, app: str) -> None:
        self.run(self.svc.remove_session(app))
        self.model.pop(app, None)

    @rule(app=APPS)
    def unpair(self, app: str) -> None:
        previous = self.run(self.svc.unpair(app))
        assert previous == self.model.pop(app, None)

    @rule(runner=RUNNERS)
    def remove_all_sessions_for_runner(self, runner: str) -> None:
        expected = self.apps_of(runner)
        removed = self.run(self.svc.remove_all_sessions_for_runner(runner))
        assert removed == expected
        for app in expected:
            del self.model[app]

    @rule(app=APPS)
    def get_session(self, app: str) -> None:
        session = self.run(self.svc.get_session(app))
        if app in self.model:
            assert session is not None
            assert (session.app_session_id, session.runner_id) == (app, self.model[app])
            assert session.is_active
        else:
            assert session is None

    @rule(runner=RUNNERS)
    def get_apps_by_runner_id(self, runner: str) -> None:
        assert self.run(self.svc.get_apps_by_runner_id(runner)) == self.apps_of(runner)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        snap = self.run(snapshot(self.client))
        # every session key holds the model's runner, and there are no others
        assert snap.sessions == self.model
        # every runner's set is exactly the model's apps of that runner (no empty sets left)
        expected_sets: dict[str, set[str]] = {}
        for app, runner in self.model.items():
            expected_sets.setdefault(runner, set()).add(app)
        assert snap.sets == expected_sets
        # a session key and its runner's set never disagree
        assert snap.problems() == []

    @invariant()
    def session_json_has_its_four_fields(self) -> None:
        for app in self.model:
            raw = self.run(self.client.get(keys.session(app)))
            assert raw is not None
            body = json.loads(raw)
            assert set(body) == {"appSessionId", "runnerId", "pairedAt", "isActive"}
            assert body["appSessionId"] == app and body["isActive"] is True


def test_session_service_matches_model(redis_proc: RedisProcess) -> None:
    SessionMachine.url = redis_proc.url
    run_state_machine_as_test(
        SessionMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
