"""Transport security and authentication at the boundary.

One server interceptor authenticates every HotSession call before its handler runs (health
checking and reflection stay open, so probes and `grpcurl list` work) and leaves the
principal in a context variable for the servicer, which hands it to the domain as a value.
Missing or bad credentials end the call with UNAUTHENTICATED and an ErrorInfo.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from hotsvc.audit import AuditLog
from hotsvc.auth.admission import admit
from hotsvc.auth.authenticator import Authenticator
from hotsvc.errors import Unauthenticated
from hotsvc.grpc.handlers import Handler, Interceptor, rewrap
from hotsvc.grpc.status import grpc_status
from hotsvc.principal import Principal
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig

log = logging.getLogger(__name__)

# Open to everyone: load balancers' probes and grpcurl's `list`/`describe`.
OPEN_SERVICES = frozenset(
    {health.SERVICE_NAME, reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"}
)

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("hotsvc_principal")

# grpc-stubs lack the aio context's abort_with_status and type metadata loosely.
Context = Any
Admit = Callable[[Context], Awaitable[None]]


def current_principal() -> Principal:
    """The principal of the call being handled; set by AuthInterceptor in the call's task."""
    try:
        return _principal.get()
    except LookupError:
        raise RuntimeError("no principal: the server was built without AuthInterceptor") from None


class AuthInterceptor(Interceptor):
    def __init__(self, authenticator: Authenticator, audit: AuditLog) -> None:
        self.authenticator = authenticator
        self._audit = audit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.strip("/").split("/")[0] in OPEN_SERVICES:
            return handler
        return guarded(handler, functools.partial(self._admit, method))

    async def _admit(self, method: str, context: Context) -> None:
        """Authenticate the call, or end it with UNAUTHENTICATED."""
        try:
            principal = admit(
                self.authenticator,
                self._audit,
                context.invocation_metadata() or (),
                context.auth_context(),
                context.peer(),
                method,
            )
        except Unauthenticated as refused:
            await context.abort_with_status(grpc_status(refused))
            raise  # abort_with_status raised already; this is for the type checker
        _principal.set(principal)  # the call's own task: no other call sees it


def guarded(handler: Handler, admit: Admit) -> Handler:
    """`handler` with `admit` run first."""
    return rewrap(handler, functools.partial(_wrap, admit=admit))


def _wrap(behavior: Callable[..., Any], admit: Admit) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: Context) -> Any:
            await admit(context)
            async for response in behavior(request, context):
                yield response

        return generator

    async def coroutine(request: Any, context: Context) -> Any:
        await admit(context)
        return await behavior(request, context)

    return coroutine


# -- TLS ---------------------------------------------------------------------------------


def server_credentials(config: ServiceConfig) -> grpc.ServerCredentials | None:
    """TLS from --tls-cert/--tls-key, requiring client certificates with --tls-client-ca;
    None for plaintext. The files are checked here so a mistake fails at start-up."""
    if config.tls_cert is None or config.tls_key is None:
        if config.tls_cert or config.tls_key or config.tls_client_ca:
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        return None
    chain = _read(config.tls_cert, "--tls-cert")
    key_pem = _read(config.tls_key, "--tls-key")
    try:
        certificate = x509.load_pem_x509_certificates(chain)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"--tls-cert {config.tls_cert} / --tls-key {config.tls_key}: {exc} "
            "(PEM files, the key unencrypted)"
        ) from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        raise ConfigError(f"--tls-key {config.tls_key} is not the key of {config.tls_cert}")
    client_ca = None
    if config.tls_client_ca is not None:
        client_ca = _read(config.tls_client_ca, "--tls-client-ca")
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError as exc:
            raise ConfigError(f"--tls-client-ca {config.tls_client_ca}: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key_pem, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror}") from None
