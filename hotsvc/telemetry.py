"""What one service adds for its operators: the gRPC metrics interceptor, `/metrics`
(--metrics-listen) and, with --otel, traces (hotsvc.tracing, imported only then)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hotsvc import metrics
from hotsvc.exposition import MetricsServer, SnapshotCollector, registry_for
from hotsvc.grpc.metrics import MetricsInterceptor
from hotsvc.memory import MIB
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig
from hotsvc.snapshot import Snapshot

if TYPE_CHECKING:
    from hotsvc.tracing import Tracing

log = logging.getLogger(__name__)


class Telemetry:
    def __init__(self, config: ServiceConfig, tracer_provider: Any = None) -> None:
        """`tracer_provider`: an OpenTelemetry SDK TracerProvider to use instead of the
        OTLP one --otel makes (tests export to memory). Raises ConfigError for --otel
        without the otel extra."""
        self._config = config
        self.tracing = _tracing(tracer_provider) if config.otel else None
        self.metrics_server: MetricsServer | None = None
        metrics.prepare(config.profiles)

    def interceptors(self) -> list[Any]:
        """Before authentication, so refused calls are counted and traced too."""
        tracing = [self.tracing.interceptor] if self.tracing is not None else []
        return [MetricsInterceptor(), *tracing]

    def start(self, snapshot: Callable[[], Snapshot]) -> None:
        """Serve /metrics (gauges from `snapshot`, run on this event loop) and trace turns."""
        if self.tracing is not None:
            self.tracing.start()
        if self._config.metrics_listen:
            budget = self._config.session_memory_mb * MIB
            collector = SnapshotCollector(snapshot, asyncio.get_running_loop(), budget)
            server = MetricsServer(self._config.metrics_listen, registry_for(collector))
            try:
                server.start()
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot serve metrics on --metrics-listen {self._config.metrics_listen}: {exc}"
                ) from exc
            self.metrics_server = server
            log.info("metrics on http://%s/metrics", server.address)

    def stop(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.tracing is not None:
            self.tracing.close()


def _tracing(provider: Any) -> Tracing:
    try:
        from hotsvc.tracing import Tracing
    except ImportError as exc:
        raise ConfigError(
            f"--otel needs the otel extra: pip install 'hotsvc[otel]' ({exc})"
        ) from exc
    return Tracing(provider)
