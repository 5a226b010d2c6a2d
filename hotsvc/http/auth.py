"""Who an HTTP request comes from: the same Authenticator as gRPC, run once per request.

The ASGI middleware authenticates every request before any route or Connect handler
runs and leaves the outcome (a Principal, or the Unauthenticated error) in a context
variable of the request's task; handlers call `caller()`, which raises the error where
the handler can answer it in its own protocol.

Callers are named by bearer tokens (`--auth-tokens`, `--jwt-public-key`). With
`--tls-client-ca` the HTTP server requires a client certificate signed by that CA too,
but hypercorn does not pass the certificate on, so it cannot name the caller: the
service refuses `--http-listen` with client certificates as the only method.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from hotsvc.audit import AuditLog
from hotsvc.auth.authenticator import Authenticator
from hotsvc.errors import Unauthenticated
from hotsvc.principal import Principal
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig

log = logging.getLogger(__name__)

_caller: contextvars.ContextVar[Principal | Unauthenticated] = contextvars.ContextVar(
    "hotsvc_http_caller"
)

Scope = dict[str, Any]
ASGIApp = Any


def caller() -> Principal:
    """The principal of the request being handled; raises Unauthenticated."""
    try:
        found = _caller.get()
    except LookupError:
        raise RuntimeError("no caller: the app was built without Authenticating") from None
    if isinstance(found, Unauthenticated):
        raise found
    return found


def check_config(config: ServiceConfig, authenticator: Authenticator) -> None:
    """Refuse an HTTP face that could not tell its callers apart."""
    if (
        config.http_listen
        and authenticator.client_certificates
        and not (authenticator.tokens or authenticator.jwt)
    ):
        raise ConfigError(
            "--http-listen with --tls-client-ca as the only authentication: the HTTP server "
            "verifies client certificates but cannot read their names, so it names callers "
            "by bearer tokens; add --auth-tokens or --jwt-public-key"
        )


class Authenticating:
    """ASGI middleware: authenticate each HTTP request, then run the app."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, audit: AuditLog) -> None:
        self._app = app
        self._authenticator = authenticator
        self._audit = audit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            _caller.set(self._authenticate(scope))
        await self._app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> Principal | Unauthenticated:
        metadata = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in scope.get("headers", ())
        ]
        client = scope.get("client")
        peer = f"http:{client[0]}:{client[1]}" if client else "http:?"
        method = f"{scope.get('method', '')} {scope.get('path', '')}"
        try:
            principal, via = self._authenticator.authenticate(metadata, {})
        except Unauthenticated as refused:
            log.info("refused %s from %s: %s", method, peer, refused.message)
            self._audit.record("auth.denied", peer=peer, method=method, reason=refused.message)
            return refused
        self._audit.record(
            "auth.ok",
            principal=principal.name,
            admin=principal.admin,
            via=via,
            peer=peer,
            method=method,
        )
        return principal
