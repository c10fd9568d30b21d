"""Prometheus metrics, on a registry per application so several can live in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected_apps = Gauge(
            "gateway_connected_apps", "App sockets connected to this replica", registry=r
        )
        self.connected_runners = Gauge(
            "gateway_connected_runners",
            "Registered runner sockets connected to this replica",
            registry=r,
        )
        self.pairings = Counter(
            "gateway_pairing_changes_total",
            "Pairing changes made by this replica",
            ["change"],
            registry=r,
        )
        self.pairings_by_mode = Counter(
            "gateway_pairings_by_mode_total",
            "Pairings by what the app's first app:command after app:pair was: end-to-end "
            "encrypted (e2e) or not (plain)",
            ["mode"],
            registry=r,
        )
        for mode in ("e2e", "plain"):
            self.pairings_by_mode.labels(mode)
        self.events = Counter(
            "gateway_events_total",
            "Client events handled, by event name and result (success or error code)",
            ["event", "result"],
            registry=r,
        )
        self.ack_latency = Histogram(
            "gateway_ack_latency_seconds",
            "Time from receiving an event to its ack",
            ["event"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors_total",
            "Store operations that failed or timed out",
            ["where"],
            registry=r,
        )
        self.sweeper_actions = Counter(
            "gateway_sweeper_actions_total",
            "Sweeper runs and what they did",
            ["action"],
            registry=r,
        )
        self.resumed = Counter(
            "gateway_resumed_messages_total",
            "Held messages replayed to a client that resumed with lastSeq",
            ["event"],
            registry=r,
        )
        self.recoveries = Counter(
            "gateway_connection_recoveries_total",
            "CONNECTs presenting a Socket.IO pid: recovered (same sid, missed events sent) or "
            "new (a new session: unknown or expired pid, or what it missed is no longer held)",
            ["result"],
            registry=r,
        )
        self.resume_gaps = Counter(
            "gateway_resume_gaps_total",
            "terminal:gap events sent: seqs a client asked for that the hold no longer had",
            registry=r,
        )
        self.slow_reader_cuts = Counter(
            "gateway_slow_reader_cuts_total",
            "Connections whose transport was cut for having too much output waiting",
            registry=r,
        )
        self.protocol_errors = Counter(
            "gateway_protocol_errors_total",
            "Client input refused as malformed or out of protocol, by kind",
            ["kind"],
            registry=r,
        )
        self.registrations_refused = Counter(
            "gateway_runner_registrations_refused_total",
            "runner:register refused UNAUTHORIZED (takeover attempts of a bound runnerId, "
            "missing keys, bad tokens), by reason",
            ["reason"],
            registry=r,
        )
        self._event_children: dict[tuple[str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}

    def record_event(self, event: str, result: str, seconds: float) -> None:
        """Count one handled event and its ack latency.

        Runs once per client event, so the labelled children are cached: ``labels()``
        takes a lock and builds a tuple on every call. Both label sets are bounded (known
        event names or "unknown", success or an error code).
        """
        counter = self._event_children.get((event, result))
        if counter is None:
            counter = self._event_children[(event, result)] = self.events.labels(event, result)
        counter.inc()
        latency = self._latency_children.get(event)
        if latency is None:
            latency = self._latency_children[event] = self.ack_latency.labels(event)
        latency.observe(seconds)

    def track_fanout(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Expose the fan-out's own delivery counters, read at scrape time.

        The fan-out counts in plain ints on its per-message path; this reads them when
        Prometheus asks instead of updating a Counter per delivered message.
        """
        self.registry.register(_FanoutCollector(counts))


class _FanoutCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "gateway_fanout_messages",
            "Deliveries by path: local (no Redis) or published to another replica",
            labels=["path"],
        )
        for path, count in self._counts().items():
            family.add_metric([path], count)
        yield family
