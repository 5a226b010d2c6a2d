"""The service assembled: registry, launcher, sessions and the gRPC server, in that order.

Start-up runs top to bottom in `_run`; shutdown runs the steps in `_shutdown` in order,
each one even when an earlier one failed, and reports every failure together.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.capacity import Capacity
from hotsvc.grpc.requests import add_servicer
from hotsvc.grpc.servicer import HotSessionServicer
from hotsvc.launcher import Launcher
from hotsvc.manager import SessionManager
from hotsvc.registry import Registry
from hotsvc.settings import ServiceConfig
from hotsvc.tmpdirs import ChildTmpDirs

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HotSession"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ShutdownFailed(Exception):
    """One or more shutdown steps failed; each was logged."""


class Service:
    """A running hotsvc: `async with Service(config) as service`, or start() then stop()."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        data_dir = config.data_dir
        self.registry = Registry(data_dir / "registry.sqlite3" if data_dir else None)
        tmpdirs = ChildTmpDirs(data_dir / "tmp" if data_dir else None)
        self.launcher = Launcher(config, self.registry, tmpdirs)
        self.manager = SessionManager(
            config, self.registry, self.launcher, Capacity(config.max_sessions)
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # untyped re-export
        self.server = grpc.aio.server()
        add_servicer(
            HotSessionServicer(self.manager),
            pb.DESCRIPTOR.services_by_name["HotSession"],
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(config.listen)
        if not self.port:
            raise OSError(f"cannot listen on {config.listen}")
        self._started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start serving; returns once the server accepts calls (health: NOT_SERVING
        until the warm pools are filled)."""
        self._task = asyncio.create_task(self._run(), name="hotsvc")
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait((self._task, started), return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._task.done():
            await self._task  # start-up failed: raise its error

    async def stop(self) -> None:
        """Refuse new sessions, let running turns finish within the grace, end every child."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                if swept := self.registry.sweep_orphans():
                    log.warning("ended %d Claude Code processes left by a previous run", swept)
                tasks.create_task(self.launcher.run(), name="launcher")
                manager_started = asyncio.Event()
                tasks.create_task(self.manager.run(manager_started), name="sessions")
                await manager_started.wait()
                await self._set_health(NOT_SERVING)
                await self.server.start()
                ready = tasks.create_task(self._serve_when_ready(), name="readiness")
                self._started.set()
                await self._stopping.wait()
                ready.cancel()
                await self._shutdown()
        finally:
            self.registry.close()
        log.info("hotsvc stopped")

    async def _serve_when_ready(self) -> None:
        await self.manager.wait_ready()
        await self._set_health(SERVING)
        log.info("hotsvc serving on %s (warm pools filled)", self.address)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _shutdown(self) -> None:
        grace = self.config.shutdown_grace
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("stop accepting", self.health.enter_graceful_shutdown),
            ("drain running turns", lambda: self.manager.drain(grace)),
            ("stop the gRPC server", lambda: self.server.stop(grace=1.0)),
            ("end sessions and pools", self.manager.stop),
            ("end leftover processes", _call(self.launcher.stop)),
        ]
        failures: list[str] = []
        for name, step in steps:
            try:
                await step()
            except Exception as exc:
                log.exception("shutdown step %r failed", name)
                failures.append(f"{name}: {exc!r}")
        if failures:
            raise ShutdownFailed("; ".join(failures))


def _call(function: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        function()

    return step


async def serve(config: ServiceConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with service:
        # One parseable line for scripts and tests that bind port 0.
        print(f"hotsvc listening on {service.address}", flush=True)
        await stop.wait()
        log.info("signal received: draining")
