"""The gRPC server: HotSession, health checking, reflection, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.config import ServiceConfig
from hotsvc.manager import SessionManager
from hotsvc.servicer import HotSessionServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HotSession"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Service:
    """A running hotsvc: start(), then stop() once; `port` is the bound port."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.manager = SessionManager(config)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # untyped re-export
        self.server = grpc.aio.server()
        pb_grpc.add_HotSessionServicer_to_server(HotSessionServicer(self.manager), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(config.listen)
        if not self.port:
            raise OSError(f"cannot listen on {config.listen}")
        self._ready_task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        await self._set_health(NOT_SERVING)
        await self.server.start()
        await self.manager.start()
        self._ready_task = asyncio.create_task(self._serve_when_ready())

    async def _serve_when_ready(self) -> None:
        await self.manager.wait_ready()
        await self._set_health(SERVING)
        log.info("hotsvc serving on %s (warm pools filled)", self.address)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self) -> None:
        """Refuse new sessions, let running turns finish within the grace, end every child."""
        if self._stopped:
            return
        self._stopped = True
        if self._ready_task:
            self._ready_task.cancel()
        await self.health.enter_graceful_shutdown()
        grace = self.config.shutdown_grace
        try:
            await self.manager.drain(grace)
            await self.server.stop(grace=1.0)
        finally:
            await self.manager.shutdown()
        log.info("hotsvc stopped")


async def serve(config: ServiceConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        # One parseable line for scripts and tests that bind port 0.
        print(f"hotsvc listening on {service.address}", flush=True)
        await stop.wait()
        log.info("signal received: draining")
    finally:
        with contextlib.suppress(Exception):
            await service.stop()
        service.manager.kill_all()  # belt and braces: nothing outlives the service
