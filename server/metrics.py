"""Prometheus metrics at `GET /metrics`, for operators.

Served (`server/metrics_http.py`) on the API port to a request bearing `--metrics-token` (a
separate secret: an API key does not open it), and/or without a token on `--metrics-port`,
for a scraper on a private network. Neither set: `/metrics` answers 404.

Nearly every number is read when scraped from what the server keeps anyway (the pool's
`KernelStats`, the registry, the transcript's writer, the janitor's last sweep), so metrics
cost the round trip nothing; only the access log's request histogram is updated per request.
Names follow Prometheus conventions (`kss_` prefix, `_total`, `_seconds`, `_bytes`), and
no label names a tenant or a user: labels are states, statuses, reasons, routes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kernels.pool import KernelPool
from kernels.registry import SessionRegistry
from kernels.states import CellStatus, SessionState
from kernels.stats import Histogram as Buckets
from kernels.stats import LimitHit, Replaced
from transcript.transcript import Transcript

from .janitor import Janitor

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


class Sources(Protocol):
    """What the metrics read (the `AppState`)."""

    pool: KernelPool
    registry: SessionRegistry
    transcript: Transcript
    janitor: Janitor
    sockets: Sized

    @property
    def draining(self) -> bool: ...


class Metrics:
    """One server's metrics registry (its own, so several servers can share a process)."""

    def __init__(self, state: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(state))
        ProcessCollector(registry=self.registry)  # the server's memory, CPU, descriptors
        self.requests = Histogram(
            "kss_http_request_duration_seconds",
            "HTTP requests by method, route pattern and status, with their duration",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ServerCollector:
    """Reads the server's own counters and gauges at each scrape."""

    def __init__(self, state: Sources) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        stats = state.pool.stats
        sessions = state.registry.all()

        by_state = GaugeMetricFamily("kss_sessions", "Live sessions by state", labels=["state"])
        counts = {str(s): 0 for s in SessionState if s is not SessionState.CLOSED}
        for session in sessions:
            counts[str(session.state)] = counts.get(str(session.state), 0) + 1
        for name, n in counts.items():
            by_state.add_metric([name], n)
        yield by_state

        pool = GaugeMetricFamily(
            "kss_pool_kernels", "Spare kernels: started and waiting, or starting", labels=["state"]
        )
        pool.add_metric(["warm"], state.pool.status()["warm"])
        pool.add_metric(["starting"], state.pool.starting)
        yield pool

        yield _counter("kss_kernels_started", "Kernels started", stats.kernels_started)
        yield _counter(
            "kss_kernels_culled",
            "Sessions' kernels stopped for idleness or reclaimed for a new session",
            stats.kernels_culled,
        )
        yield _counter("kss_kernels_died", "Kernels that died on their own", stats.kernels_died)
        yield _by_label(
            "kss_kernels_replaced",
            "Kernels replaced by a fresh one, by reason",
            "reason",
            stats.kernels_replaced,
            [str(r) for r in Replaced],
        )
        yield _by_label(
            "kss_executions",
            "Executions finished, by status",
            "status",
            stats.executions,
            [str(s) for s in CellStatus if s not in (CellStatus.RUNNING, CellStatus.INTERRUPTED)],
        )
        yield _histogram(
            "kss_execution_duration_seconds",
            "Time from an execution's start to its end",
            stats.execution_seconds,
        )
        yield _gauge(
            "kss_execution_queue_depth",
            "Executions waiting behind a running one, over all sessions",
            sum(s.queued for s in sessions),
        )
        yield _counter(
            "kss_output_bytes", "Bytes of output executions sent to clients", stats.output_bytes
        )
        if state.janitor.file_bytes is not None:
            yield _gauge(
                "kss_file_bytes_stored",
                "Bytes in every user's work dir, as of the janitor's last sweep",
                state.janitor.file_bytes,
            )
        yield _histogram(
            "kss_store_write_duration_seconds",
            "Time to write one batch of the transcript to the store",
            state.transcript.write_seconds,
        )
        yield _gauge(
            "kss_store_backlog",
            "Transcript items handed over and not yet in the store",
            state.transcript.backlog,
        )
        yield _gauge("kss_websocket_connections", "Open WebSocket connections", len(state.sockets))
        yield _by_label(
            "kss_sandbox_limit_hits",
            "Executions stopped by a limit, by limit",
            "limit",
            stats.limit_hits,
            [str(h) for h in LimitHit],
        )
        yield _gauge("kss_draining", "1 while the server drains for a stop", int(state.draining))


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def _by_label(name: str, doc: str, label: str, counts: dict[str, int], known: list[str]) -> Metric:
    """A counter per label value; every known value shows, at 0 until it happens."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for value in dict.fromkeys([*known, *counts]):
        family.add_metric([value], counts.get(value, 0))
    return family


def _histogram(name: str, doc: str, buckets: Buckets) -> Metric:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], buckets.cumulative(), sum_value=buckets.total)
    return family
