"""grpc.aio method handlers: their types, and rebuilding one around a wrapped behaviour.

The interceptors (metrics, authentication) and the servicer's registration all make
handlers of the four kinds; this is the one place that knows how.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:  # generic only in grpc-stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor

Behavior = Callable[..., Any]

# (request_streaming, response_streaming) -> the grpc factory of that kind of handler.
MAKERS: dict[tuple[bool, bool], Callable[..., Handler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def grpc_type(handler: Handler) -> str:
    """The kind as go-grpc-prometheus labels it."""
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def rewrap(handler: Handler, wrap: Callable[[Behavior], Behavior]) -> Handler:
    """`handler` of the same kind and codec with its behaviour replaced by `wrap(behaviour)`.

    grpc.aio tells a handler that writes with `context.write` (a coroutine function) from
    one that yields (an async generator function) by its kind, so `wrap` must return a
    behaviour of the kind it was given.
    """
    behavior = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    assert behavior is not None
    make = MAKERS[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(
        wrap(behavior),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
