"""The HTTP face assembled: one ASGI app on `--http-listen`, served by hypercorn.

    /hotsession.v1.HotSession/*   HotSession over Connect (JSON or protobuf; unary,
                                  server-streaming Ask, and Prompt over HTTP/2)
    /sessions/{id}/hot-prompt     the seed's plain routes (hotsvc.http.routes)
    /hot/status

Hypercorn speaks HTTP/1.1, h2c and h2 over TLS (ALPN), in the service's own event loop:
`run()` is a task of the service's TaskGroup and returns once `stop()` was called and the
requests in flight ended (bounded by the grace). The listening socket is bound in the
constructor, so a port 0 is known before the service starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from typing import Any

from hotsession.v1.hotsession_connect import HotSessionASGIApplication
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.middleware.cors import CORSMiddleware

from hotsvc.audit import AuditLog
from hotsvc.auth.authenticator import Authenticator
from hotsvc.grpc.api import HotSessionAPI
from hotsvc.http.auth import Authenticating
from hotsvc.http.connect import ConnectHotSession
from hotsvc.http.routes import PlainRoutes
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig

log = logging.getLogger(__name__)

# Room past --max-turn-bytes for the rest of a request, so the turn's own check answers
# first and names the limit.
REQUEST_HEADROOM = 1024 * 1024


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--http-listen {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


# What a browser's Connect client (connect-web) sends and must be able to read.
CORS_REQUEST_HEADERS = (
    "authorization",
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-accept-encoding",
    "connect-content-encoding",
    "hotsvc-session-id",
    "traceparent",
    "x-user-agent",
)
CORS_RESPONSE_HEADERS = (
    "connect-content-encoding",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
)


def cors(app: Any, origins: tuple[str, ...]) -> Any:  # any ASGI app
    """Outside authentication: a preflight carries no credentials and must be answered."""
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=list(CORS_REQUEST_HEADERS),
        expose_headers=list(CORS_RESPONSE_HEADERS),
        max_age=7200,
    )


class HttpFace:
    def __init__(
        self,
        config: ServiceConfig,
        api: HotSessionAPI,
        authenticator: Authenticator,
        audit: AuditLog,
    ) -> None:
        host, port = split_address(config.http_listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            listener = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise OSError(f"cannot listen on --http-listen {config.http_listen}: {exc}") from exc
        self.host = host
        self.port = listener.getsockname()[1]
        self._fd: int | None = listener.detach()  # hypercorn owns the socket from run() on
        read_max = config.max_turn_bytes + REQUEST_HEADROOM
        connect = HotSessionASGIApplication(ConnectHotSession(api), read_max_bytes=read_max)
        plain = PlainRoutes(api, read_max).app()

        async def dispatch(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith(connect.path + "/"):
                await connect(scope, receive, send)
            else:
                await plain(scope, receive, send)

        self.app = cors(Authenticating(dispatch, authenticator, audit), config.http_cors_origins)
        self._config = self._hypercorn(config)
        self._stop = asyncio.Event()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _hypercorn(self, config: ServiceConfig) -> Config:
        hc = Config()
        hc.bind = [f"fd://{self._fd}"]
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hotsvc.http.hypercorn")
        hc.graceful_timeout = 1.0  # as the gRPC server's stop grace: turns drained before
        if config.tls_cert is not None and config.tls_key is not None:
            hc.certfile, hc.keyfile = str(config.tls_cert), str(config.tls_key)
            if config.tls_client_ca is not None:
                hc.ca_certs = str(config.tls_client_ca)
                hc.verify_mode = ssl.CERT_REQUIRED
        return hc

    async def run(self) -> None:
        """Serve until stop(); owned by the service's TaskGroup."""
        self._fd = None
        app: Any = self.app  # hypercorn's types want its own scope classes
        await serve(app, self._config, shutdown_trigger=self._stop.wait, mode="asgi")

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Release the socket if run() never took it (start-up failed before)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
