"""gRPC server metrics under the names operators already chart (go-grpc-prometheus,
py-grpc-prometheus): started, handled by code, handling time, messages each way.

`MetricsInterceptor` goes first in the server's interceptors, so a call the
authentication refuses is counted too (grpc_code="Unauthenticated"). Codes are spelled as
Go spells them ("OK", "Canceled", "ResourceExhausted"), as those dashboards expect.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from hotsvc.grpc.handlers import Handler, Interceptor, grpc_type, rewrap
from hotsvc.metrics import REGISTRY

LABELS = ["grpc_type", "grpc_service", "grpc_method"]

STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server",
    LABELS,
    registry=REGISTRY,
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status",
    [*LABELS, "grpc_code"],
    registry=REGISTRY,
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "time from an RPC's start to its status on the server (a stream: its whole life)",
    LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
    registry=REGISTRY,
)
RECEIVED = Counter(
    "grpc_server_msg_received_total",
    "request messages received",
    LABELS,
    registry=REGISTRY,
)
SENT = Counter(
    "grpc_server_msg_sent_total",
    "response messages sent",
    LABELS,
    registry=REGISTRY,
)

# grpc.StatusCode as Go's codes.Code.String() spells it.
GO_CODE_NAMES = {
    code: "Canceled"
    if code is grpc.StatusCode.CANCELLED
    else "OK"
    if code is grpc.StatusCode.OK
    else code.name.title().replace("_", "")
    for code in grpc.StatusCode
}


class _Call:
    """One method's series, looked up once per call rather than once per message."""

    def __init__(self, kind: str, service: str, method: str) -> None:
        self.kind = kind
        self.labels = (kind, service, method)
        self.received = RECEIVED.labels(*self.labels)
        self.sent = SENT.labels(*self.labels)


class MetricsInterceptor(Interceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED itself
            return handler
        service, _, method = handler_call_details.method.strip("/").rpartition("/")
        return rewrap(
            handler, functools.partial(_wrap, call=_Call(grpc_type(handler), service, method))
        )


class _CountingContext:
    """The call's context, counting what the handler writes and reads through it."""

    def __init__(self, context: Any, call: _Call) -> None:
        self._context = context
        self._call = call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._call.sent.inc()

    async def read(self) -> Any:
        message = await self._context.read()
        if message is not grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from grpc-stubs
            self._call.received.inc()
        return message


async def _counted(requests: AsyncIterator[Any], call: _Call) -> AsyncIterator[Any]:
    async for request in requests:
        call.received.inc()
        yield request


def _wrap(behavior: Callable[..., Any], call: _Call) -> Callable[..., Any]:
    """`behavior` counted; an async generator stays one (grpc.aio tells writers from
    generators by their kind, see hotsvc.grpc.handlers.rewrap)."""
    streaming_requests = call.kind in ("client_stream", "bidi_stream")

    def begin(request: Any, context: Any) -> tuple[Any, _CountingContext]:
        STARTED.labels(*call.labels).inc()
        if streaming_requests:
            return _counted(request, call), _CountingContext(context, call)
        call.received.inc()
        return request, _CountingContext(context, call)

    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            request, counting = begin(request, context)
            code = grpc.StatusCode.OK
            try:
                async for response in behavior(request, counting):
                    yield response
                    call.sent.inc()
            except BaseException as exc:
                code = _code_of(exc, context)
                raise
            else:
                code = context.code() or grpc.StatusCode.OK
            finally:
                _handled(call, code, started)

        return generator

    async def coroutine(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        request, counting = begin(request, context)
        code = grpc.StatusCode.OK
        try:
            response = await behavior(request, counting)
        except BaseException as exc:
            code = _code_of(exc, context)
            raise
        else:
            code = context.code() or grpc.StatusCode.OK
            if call.kind in ("unary", "client_stream"):
                call.sent.inc()
            return response
        finally:
            _handled(call, code, started)

    return coroutine


def _code_of(exc: BaseException, context: Any) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED  # the caller went away (or cancelled)
    code = context.code()  # set by abort / abort_with_status
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _handled(call: _Call, code: grpc.StatusCode, started: float) -> None:
    HANDLED.labels(*call.labels, GO_CODE_NAMES[code]).inc()
    HANDLING_SECONDS.labels(*call.labels).observe(time.perf_counter() - started)
