"""Refused input is logged escaped, truncated, at WARNING, and rate-limited per address."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.engine import refusals
from gateway.logs import JsonFormatter


@given(st.one_of(st.text(), st.binary()))
def test_escaped_is_printable_ascii_and_bounded(value: str | bytes) -> None:
    text = refusals.escaped(value)
    assert text.isascii() and text.isprintable(), text
    # a char escapes to at most 10 (\U0010ffff), plus the "..." of a cut
    assert len(text) <= refusals.DETAIL_MAX * 10 + 3


def test_escaped_keeps_short_text_readable_and_marks_a_cut() -> None:
    assert refusals.escaped("Invalid session abc") == "Invalid session abc"
    assert refusals.escaped("a\x00b") == "a\\x00b"
    assert refusals.escaped(b"\xff7") == "\\\\xff7"  # backslashreplace, then escaped
    assert refusals.escaped("x" * 500) == "x" * refusals.DETAIL_MAX + "..."


def test_budget_allows_a_burst_then_one_per_refill_and_reports_the_suppressed() -> None:
    now = [0.0]
    budget = refusals.RefusalLog(clock=lambda: now[0])
    assert [budget.allow("a") for _ in range(refusals.BURST)] == [0] * refusals.BURST
    assert budget.allow("a") is None
    assert budget.allow("a") is None
    assert budget.allow("b") == 0  # another address has its own budget
    now[0] += refusals.REFILL_S
    assert budget.allow("a") == 2  # the line says how many were not logged
    assert budget.allow("a") is None


def test_budget_remembers_a_bounded_number_of_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refusals, "MAX_ADDRESSES", 3)
    budget = refusals.RefusalLog(clock=lambda: 0.0)
    for i in range(10):
        budget.allow(f"10.0.0.{i}")
    assert len(budget._budgets) == 3


class _Server:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def on_protocol_error(self, kind: str) -> None:
        self.kinds.append(kind)


def test_refused_counts_every_time_and_logs_one_json_warning_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refusals, "_log_budget", refusals.RefusalLog(clock=lambda: 0.0))
    server = _Server()
    with caplog.at_level(logging.DEBUG, logger="gateway.protocol"):
        for _ in range(50):
            refusals.refused(server, refusals.ENGINEIO_PACKET, "a bad packet", "\x00" * 1000)
    assert server.kinds == [refusals.ENGINEIO_PACKET] * 50
    records = [r for r in caplog.records if r.name == "gateway.protocol"]
    assert len(records) == refusals.BURST
    assert {r.levelno for r in records} == {logging.WARNING}
    line = JsonFormatter().format(records[0])
    assert "\x00" not in line and "\n" not in line
    entry: dict[str, Any] = json.loads(line)
    assert entry["kind"] == "engineio_packet" and entry["client"] == "unknown"
    assert entry["detail"].startswith("\\x00") and len(entry["detail"]) < 500


class _Request:
    def __init__(self, remote: str, forwarded: list[str]) -> None:
        from multidict import CIMultiDict

        self.remote = remote
        self.headers = CIMultiDict([("X-Forwarded-For", f) for f in forwarded])


def test_client_of_is_the_peer_or_behind_trusted_proxies_the_forwarded_hop() -> None:
    from gateway.addresses import parse_networks

    trusted = parse_networks(["10.0.0.0/8"])
    assert refusals.client_of(_Request("203.0.113.9", ["1.2.3.4"]), []) == "203.0.113.9"
    assert refusals.client_of(_Request("203.0.113.9", ["1.2.3.4"]), trusted) == "203.0.113.9"
    assert refusals.client_of(_Request("10.0.0.2", ["1.2.3.4, 10.0.0.7"]), trusted) == "1.2.3.4"
