"""`--otel`: OpenTelemetry spans for every RPC and every turn, exported over OTLP.

Imported only with `--otel` (it needs `pip install 'hotsvc[otel]'`). An RPC's span comes
from opentelemetry-instrumentation-grpc's server interceptor, which continues the W3C
trace context (`traceparent`) the caller sent in its metadata. A turn runs in its
session's task, not the RPC's, so it keeps the RPC's context from where it was accepted
(hotsvc.observe) and its spans are made when it ends, from the times it noted
(hotsvc.turn.TurnTimes): `hotsvc.turn` with `queue wait`, `process` (a resume, if one
was needed), `write`, `first token`, `result` and `transcript sync` under it.

The exporter follows the standard OTEL_EXPORTER_OTLP_* variables; OTEL_SERVICE_NAME
names the service (default `hotsvc`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from hotsvc import observe

if TYPE_CHECKING:
    from hotsvc.claude.events import Result
    from hotsvc.turn import Turn

log = logging.getLogger(__name__)

TRACER_NAME = "hotsvc"


class StreamingInterceptor(OpenTelemetryAioServerInterceptor):
    """The instrumentation's aio interceptor, also for streaming handlers that write with
    `context.write` (a coroutine, like Prompt and Ask), which it iterates as if they were
    generators (open-telemetry/opentelemetry-python-contrib#3066): those get the unary
    wrapper, which awaits them under the same span."""

    def _intercept_aio_server_stream(
        self, behavior: Callable[..., Any], handler_call_details: Any
    ) -> Callable[..., Any]:
        # The base class is untyped.
        if inspect.isasyncgenfunction(behavior):
            stream = super()._intercept_aio_server_stream
            return stream(behavior, handler_call_details)  # type: ignore[no-untyped-call,no-any-return]
        unary = self._intercept_aio_server_unary
        return unary(behavior, handler_call_details)  # type: ignore[no-untyped-call,no-any-return]


def provider_from_environment() -> TracerProvider:
    """Spans batched to the OTLP/gRPC exporter the OTEL_* variables configure."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "hotsvc"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class Tracing:
    """The RPC interceptor and the turn tracer of one service; `close` flushes."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider or provider_from_environment()
        self._tracer = self.provider.get_tracer(TRACER_NAME)
        rpc_tracer = self.provider.get_tracer("opentelemetry.instrumentation.grpc")
        self.interceptor = StreamingInterceptor(rpc_tracer)  # type: ignore[no-untyped-call]

    def start(self) -> None:
        observe.set_tracer(self)

    def close(self) -> None:
        observe.set_tracer(None)
        self.provider.shutdown()  # exports what is still batched

    # -- observe.TurnTracer ------------------------------------------------------------

    def capture(self) -> object:
        return otel_context.get_current()

    def turn_finished(self, turn: Turn, result: Result) -> None:
        t = turn.times
        parent = turn.trace_parent if isinstance(turn.trace_parent, otel_context.Context) else None
        usage = result.usage
        span = self._tracer.start_span(
            "hotsvc.turn",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            start_time=t.ns(t.accepted),
            attributes={
                "hotsvc.session_id": turn.session_id,
                "hotsvc.turn_id": turn.id,
                "hotsvc.profile": turn.profile,
                "hotsvc.result.subtype": result.subtype,
                "hotsvc.result.durable": result.durable,
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
            },
        )
        inside = trace.set_span_in_context(span)
        answered = t.first_token or t.written
        steps = (
            ("queue wait", t.accepted, t.dequeued),
            ("process", t.dequeued, t.writing),
            ("write", t.writing, t.written),
            ("first token", t.written, t.first_token),
            ("result", answered, t.result),
            ("transcript sync", t.result, t.finished),
        )
        for name, start, end in steps:
            if start and end and end >= start:
                step = self._tracer.start_span(name, context=inside, start_time=t.ns(start))
                step.end(end_time=t.ns(end))
        if result.is_error:
            span.set_status(Status(StatusCode.ERROR, result.subtype))
        span.end(end_time=t.ns(t.finished))
