"""`--metrics-listen`: `/metrics` over HTTP, in the Prometheus text format.

prometheus-client's own WSGI server runs in a thread of its own, so a scrape never waits
on the event loop for more than a snapshot. What it serves: the process-wide counters and
histograms (hotsvc.metrics, hotsvc.grpc.metrics), this service's gauges read from its
snapshot at scrape time (`SnapshotCollector`), and the process's own (process_*).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_wsgi_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotsvc import metrics
from hotsvc.snapshot import SessionState, Snapshot, resident_bytes

log = logging.getLogger(__name__)

SCRAPE_SNAPSHOT_TIMEOUT = 5.0


class SnapshotCollector(Collector):
    """The gauges of one service, from its snapshot taken on the service's event loop
    (a scrape runs in the HTTP server's thread; the domain is not thread-safe)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        loop: asyncio.AbstractEventLoop,
        session_memory_bytes: int,
    ) -> None:
        self._snapshot = snapshot
        self._loop = loop
        self._budget = session_memory_bytes

    def _take(self) -> Snapshot | None:
        async def take() -> Snapshot:
            return self._snapshot()

        try:
            future = asyncio.run_coroutine_threadsafe(take(), self._loop)
            return future.result(SCRAPE_SNAPSHOT_TIMEOUT)
        except Exception as exc:  # a loop stopping or stuck: this scrape has no gauges
            log.info("metrics: no snapshot for this scrape: %r", exc)
            return None

    def collect(self) -> Iterator[Metric]:
        snapshot = self._take()
        if snapshot is not None:
            yield from gauges(snapshot, self._budget)


def gauges(snapshot: Snapshot, session_memory_bytes: int) -> Iterator[Metric]:
    """The snapshot as gauge families (every state and profile, 0s included)."""
    sessions = GaugeMetricFamily(
        "hotsvc_sessions", "sessions this replica knows, by state", labels=["state"]
    )
    for state in SessionState:
        sessions.add_metric([state.value], sum(1 for s in snapshot.sessions if s.state is state))
    yield sessions
    idle = GaugeMetricFamily(
        "hotsvc_pool_idle", "idle warm processes, by profile", labels=["profile"]
    )
    target = GaugeMetricFamily(
        "hotsvc_pool_target", "the warm pool's target size, by profile", labels=["profile"]
    )
    for pool in snapshot.pools:
        idle.add_metric([pool.profile], pool.size)
        target.add_metric([pool.profile], pool.target)
    yield idle
    yield target
    warm = sum(resident_bytes(pid) for pool in snapshot.pools for pid in pool.idle_pids)
    yield GaugeMetricFamily(
        "hotsvc_child_rss_bytes",
        "resident memory of every Claude Code process (sessions and warm pools), summed",
        value=warm + sum(s.rss_bytes for s in snapshot.sessions),
    )
    yield GaugeMetricFamily(
        "hotsvc_max_sessions",
        "the cap on live processes (--max-sessions); 0 = no cap",
        value=snapshot.max_sessions,
    )
    yield GaugeMetricFamily(
        "hotsvc_session_memory_budget_bytes",
        "the memory one session is expected to need (--session-memory-mb)",
        value=session_memory_bytes,
    )


class _Forward(Collector):
    """Another registry's metrics, as one collector of this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


def registry_for(snapshot: Collector) -> CollectorRegistry:
    """What one service's /metrics serves."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(metrics.REGISTRY))
    registry.register(snapshot)
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """/metrics on `listen` (HOST:PORT; port 0 picks one, see `address`)."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]") or "0.0.0.0"
        self._port = int(port)
        self._registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Raises OSError when the address cannot be bound."""
        self._server, self._thread = start_wsgi_server(
            self._port, self._host, registry=self._registry
        )

    @property
    def address(self) -> str:
        assert self._server is not None
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
