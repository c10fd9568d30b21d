"""Cross-cutting parts of the contract on one in-process replica: the pairing history,
metrics and health endpoints, and the UNAVAILABLE / INTERNAL error paths.

The per-event tests are in test_gateway_runner.py, test_gateway_app.py and
test_gateway_malformed.py.
"""

from __future__ import annotations

import re

import aiohttp

from gateway.app import FANOUT, GATEWAY
from pairing import HistoryEntry, PairingHistoryService
from tests.support.events import (
    SLOW_HEARTBEAT,
    app_id,
    assert_error,
    pair,
    register,
    stale_heartbeat,
    wait_until,
)


def _find(entries: list[HistoryEntry], **fields: str | None) -> list[HistoryEntry]:
    return [e for e in entries if all(getattr(e, k) == v for k, v in fields.items())]


async def test_history_records_pairing_changes(start_gateway, clients, redis) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    r1 = await clients(gw.url)
    r2 = await clients(gw.url)
    a = app_id("hist-a")
    b = app_id("hist-b")
    app_a = await clients(gw.url, auth={"appSessionId": a})
    app_b = await clients(gw.url, auth={"appSessionId": b})

    assert_error(await app_a.call("app:pair", {"pairingCode": "WRONG-1"}), "INVALID_CODE")
    code = (await register(r1, "r-h1"))["pairingCode"]
    await stale_heartbeat(redis, "r-h1")
    assert_error(await app_a.call("app:pair", {"pairingCode": code}), "RUNNER_OFFLINE")
    assert await r1.call("runner:heartbeat", {"runnerId": "r-h1"}) == {"success": True}
    await pair(app_a, code)  # paired a -> r-h1
    await pair(app_b, (await register(r1, "r-h1"))["pairingCode"])  # paired b -> r-h1
    await pair(app_a, (await register(r2, "r-h2"))["pairingCode"])  # moved a -> r-h2
    assert await app_a.call("app:unpair", {}) == {"success": True}  # unpaired a from r-h2
    await r1.close()  # runner r-h1 leaves: b unpaired
    assert (await app_b.next("pairing:unpaired"))["runnerId"] == "r-h1"

    history = PairingHistoryService(redis)

    async def disconnect_recorded() -> bool:
        return bool(_find(await history.recent(), event="runner_disconnected"))

    await wait_until(disconnect_recorded)
    entries = await history.recent()
    assert [e.at for e in entries] == sorted((e.at for e in entries), reverse=True)
    failed = _find(entries, event="pair_failed", app_session_id=a)
    assert {(e.runner_id, e.reason) for e in failed} == {
        (None, "INVALID_CODE"),
        ("r-h1", "RUNNER_OFFLINE"),
    }
    assert len(_find(entries, event="paired", app_session_id=a, runner_id="r-h1")) == 1
    assert len(_find(entries, event="paired", app_session_id=a, runner_id="r-h2")) == 1
    assert len(_find(entries, event="paired", app_session_id=b, runner_id="r-h1")) == 1
    moved = _find(entries, event="unpaired", app_session_id=a, runner_id="r-h1")
    assert len(moved) == 1 and moved[0].reason
    by_app = _find(entries, event="unpaired", app_session_id=a, runner_id="r-h2")
    assert len(by_app) == 1 and by_app[0].reason
    assert len(_find(entries, event="runner_disconnected", runner_id="r-h1")) == 1
    gone = _find(entries, event="unpaired", app_session_id=b, runner_id="r-h1")
    assert [e.reason for e in gone] == ["RUNNER_DISCONNECTED"]
    # Nothing about r-h2 leaving: it did not.
    assert not _find(entries, event="runner_disconnected", runner_id="r-h2")
    # Filters.
    only_b = await history.recent(app_session_id=b)
    assert only_b and all(e.app_session_id == b for e in only_b)


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.index("}")]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_count_events_by_result(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": app_id("metrics")})
    code = (await register(runner, "r-metrics"))["pairingCode"]
    assert_error(await app.call("app:pair", {"pairingCode": "WRONG-1"}), "INVALID_CODE")
    assert_error(await app.call("app:pair", {"pairingCode": "WRONG-2"}), "INVALID_CODE")
    await pair(app, code)
    assert_error(await app.call("no:such:event", {}), "INVALID_PAYLOAD")
    assert_error(await runner.call("runner:heartbeat", {"runnerId": "x"}), "NOT_REGISTERED")
    async with (
        aiohttp.ClientSession() as http,
        http.get(gw.url + "/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    events = "gateway_events_total"
    assert _sample(text, events, event="runner:register", result="success") == 1
    assert _sample(text, events, event="app:pair", result="INVALID_CODE") == 2
    assert _sample(text, events, event="app:pair", result="success") == 1
    assert _sample(text, events, event="runner:heartbeat", result="NOT_REGISTERED") == 1
    # An unknown name is one label value, not one per name a client invents.
    assert _sample(text, events, event="unknown", result="INVALID_PAYLOAD") == 1
    assert "no:such:event" not in text
    assert _sample(text, events, event="app:status", result="success") is None
    assert _sample(text, "gateway_ack_latency_seconds_count", event="app:pair") == 3
    # pairing:paired reached the runner on this replica: delivered locally, nothing published
    assert _sample(text, "gateway_fanout_messages_total", path="local") >= 1
    assert _sample(text, "gateway_fanout_messages_total", path="published") == 0


async def test_healthz_and_readyz(start_gateway) -> None:
    gw = await start_gateway()
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/healthz") as resp:
            assert resp.status == 200
        assert await gw.app[FANOUT].wait_connected(5)
        async with http.get(gw.url + "/readyz") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["store"] is True


async def test_store_down_is_unavailable_and_readyz_503(start_gateway, clients, own_redis):
    gw = await start_gateway({"redis_url": own_redis.url})
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": app_id("down")})
    await pair(app, (await register(runner, "r-down"))["pairingCode"])
    own_redis.stop()
    for ack in (
        await app.call("app:status"),
        await app.call("app:command", {"data": "ls"}),
        await runner.call("runner:heartbeat", {"runnerId": "r-down"}),
        await app.call("app:pair", {"pairingCode": "WRONG-1"}),
    ):
        assert_error(ack, "UNAVAILABLE")
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as resp:
        assert resp.status == 503
    # Payload errors need no store.
    assert_error(await app.call("app:pair"), "INVALID_PAYLOAD")
    # Back on the same port (empty: the test server keeps no data): events work again.
    own_redis.start()

    async def back() -> bool:
        return (await app.call("app:status")).get("success") is True

    await wait_until(back, timeout=10, every=0.1)


async def test_handler_bug_is_internal_and_not_leaked(start_gateway, clients, monkeypatch):
    gw = await start_gateway()
    app = await clients(gw.url, auth={"appSessionId": app_id("bug")})

    async def broken(*_: object) -> None:
        raise RuntimeError("secret detail of the bug")

    monkeypatch.setattr(gw.app[GATEWAY].sessions, "get_session_status", broken)
    ack = await app.call("app:status")
    assert_error(ack, "INTERNAL")
    assert "secret" not in ack["message"]
    # The connection and the other events keep working.
    assert_error(await app.call("app:pair", {"pairingCode": "WRONG-1"}), "INVALID_CODE")
    monkeypatch.undo()
    assert (await app.call("app:status"))["success"] is True
