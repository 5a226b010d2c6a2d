"""The service assembled: store, launcher, sessions, the gRPC server and (with
--http-listen) the HTTP face, in that order.

Start-up runs top to bottom in `_run`; shutdown runs the steps in `_shutdown` in order,
each one even when an earlier one failed, and reports every failure together.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.audit import AuditLog
from hotsvc.auth.authenticator import Authenticator
from hotsvc.auth.tokens import TokenFileError
from hotsvc.capacity import Capacity
from hotsvc.claude import launch
from hotsvc.containment import Containment, become_subreaper
from hotsvc.grpc.api import HotSessionAPI
from hotsvc.grpc.auth import AuthInterceptor, server_credentials
from hotsvc.grpc.requests import add_servicer
from hotsvc.grpc.servicer import HotSessionServicer
from hotsvc.http.auth import check_config as check_http
from hotsvc.launcher import Launcher
from hotsvc.layout import check_layout
from hotsvc.manager import SessionManager
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig
from hotsvc.store import default_replica_id, open_store, store_url
from hotsvc.tmpdirs import ChildTmpDirs

if TYPE_CHECKING:
    from hotsvc.http.server import HttpFace

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HotSession"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ShutdownFailed(Exception):
    """One or more shutdown steps failed; each was logged."""


class Service:
    """A running hotsvc: `async with Service(config) as service`, or start() then stop()."""

    def __init__(self, config: ServiceConfig) -> None:
        """Raises ConfigError for a configuration that cannot be served safely."""
        self.config = config
        check_layout(config)
        launch.check_sandbox(config.profiles.values())
        self.authenticator = Authenticator.from_config(config)
        check_http(config, self.authenticator)
        credentials = server_credentials(config)
        self.audit = AuditLog(config.audit_log)
        self.interceptor = AuthInterceptor(self.authenticator, self.audit)
        # Past --max-turn-bytes, so the turn's own check answers first, naming the limit.
        receive = config.max_turn_bytes + 1024 * 1024
        self.server = grpc.aio.server(
            interceptors=[self.interceptor],
            options=[("grpc.max_receive_message_length", receive)],
        )
        if credentials is None:
            self.port = self.server.add_insecure_port(config.listen)
        else:
            self.port = self.server.add_secure_port(config.listen, credentials)
        if not self.port:
            raise OSError(f"cannot listen on {config.listen}")
        url = store_url(config.store, config.data_dir)
        self.store = open_store(
            url,
            config.replica_id or default_replica_id(url, self.port),
            config.lease_seconds,
            config.recover_store,
        )
        data_dir = config.data_dir
        self.containment = Containment(
            str(data_dir.resolve()) if data_dir else "", config.containment
        )
        tmpdirs = ChildTmpDirs(data_dir / "tmp" if data_dir else None)
        self.launcher = Launcher(config, self.store, self.containment, tmpdirs)
        self.manager = SessionManager(
            config, self.store, self.launcher, Capacity(config.max_sessions), self.audit
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # untyped re-export
        self.api = HotSessionAPI(self.manager, self.store)
        add_servicer(
            HotSessionServicer(self.api), pb.DESCRIPTOR.services_by_name["HotSession"], self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.http = self._http_face(config)
        self._started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http_task: asyncio.Task[None] | None = None

    def _http_face(self, config: ServiceConfig) -> HttpFace | None:
        if not config.http_listen:
            return None
        try:
            from hotsvc.http.server import HttpFace
        except ImportError as exc:
            raise ConfigError(
                f"--http-listen needs the http extra: pip install 'hotsvc[http]' ({exc})"
            ) from exc
        return HttpFace(config, self.api, self.authenticator, self.audit)

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
        await self.store.open()
        log.info("session store %s (replica %s)", self.store.describe(), self.store.replica_id)
        try:
            async with asyncio.TaskGroup() as tasks:
                if swept := await self.store.sweep_orphans() + self.containment.sweep():
                    log.warning("ended %d processes left by a previous run", swept)
                tasks.create_task(self.launcher.run(), name="launcher")
                manager_started = asyncio.Event()
                tasks.create_task(self.manager.run(manager_started), name="sessions")
                await manager_started.wait()
                await self._set_health(NOT_SERVING)
                await self.server.start()
                if self.http is not None:
                    self._http_task = tasks.create_task(self.http.run(), name="http")
                ready = tasks.create_task(self._serve_when_ready(), name="readiness")
                self._started.set()
                await self._stopping.wait()
                ready.cancel()
                await self._shutdown()
        finally:
            if self.http is not None:
                self.http.close()
            self.containment.close()
            await self.store.close()
            self.audit.close()
        log.info("hotsvc stopped")

    def reload_tokens(self) -> None:
        """SIGHUP: read --auth-tokens again; a bad file keeps the old table, and says why."""
        path = self.config.auth_tokens
        if path is None:
            log.info("SIGHUP: no --auth-tokens file to read again")
            return
        try:
            principals = self.authenticator.reload_tokens()
        except TokenFileError as exc:
            log.error("kept the previous bearer tokens: %s", exc)
            self.audit.record("tokens.reload_failed", file=str(path), error=str(exc))
            return
        log.info("reloaded bearer tokens from %s: %d principals", path, principals)
        self.audit.record("tokens.reloaded", file=str(path), principals=principals)

    async def _serve_when_ready(self) -> None:
        await self.manager.wait_ready()
        await self._set_health(SERVING)
        log.info("hotsvc serving on %s (warm pools filled)", self.address)

    async def _stop_http(self) -> None:
        """Stop accepting, let requests in flight end (hypercorn's grace), then return."""
        if self.http is not None and self._http_task is not None:
            self.http.stop()
            await asyncio.shield(self._http_task)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _shutdown(self) -> None:
        grace = self.config.shutdown_grace
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("stop accepting", self.health.enter_graceful_shutdown),
            ("drain running turns", lambda: self.manager.drain(grace)),
            ("stop the gRPC server", lambda: self.server.stop(grace=1.0)),
            ("stop the HTTP server", self._stop_http),
            ("end sessions and pools", self.manager.stop),
            ("end leftover processes", _call(self.launcher.stop)),
            ("release leases", self.manager.leases.release_all),
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
    become_subreaper()
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload_tokens)
    async with service:
        # One parseable line for scripts and tests that bind port 0 (and one for HTTP).
        print(f"hotsvc listening on {service.address}", flush=True)
        if service.http is not None:
            print(f"hotsvc http listening on {service.http.address}", flush=True)
        await stop.wait()
        log.info("signal received: draining")
