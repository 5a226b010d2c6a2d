"""What a turn tells the metrics and, with --otel, the traces.

`Turn` calls `turn_accepted` where it is made (in the caller's RPC, whose trace context
the turn's spans continue) and `turn_finished` when it has its result. The tracer is
plugged in by hotsvc.tracing only when `--otel` is on: without it nothing here imports
OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from hotsvc import metrics

if TYPE_CHECKING:
    from hotsvc.claude.events import Result
    from hotsvc.turn import Turn


class TurnTracer(Protocol):
    def capture(self) -> object:
        """The current trace context, to parent a turn's spans."""
        ...

    def turn_finished(self, turn: Turn, result: Result) -> None: ...


_tracer: TurnTracer | None = None


def set_tracer(tracer: TurnTracer | None) -> None:
    global _tracer
    _tracer = tracer


def turn_accepted(turn: Turn) -> None:
    if _tracer is not None:
        turn.trace_parent = _tracer.capture()


def turn_finished(turn: Turn, result: Result) -> None:
    times = turn.times
    began = times.began
    metrics.turn_finished(
        turn.profile,
        result.subtype,
        times.finished - began,
        times.first_token - began if times.first_token else None,
    )
    if _tracer is not None:
        _tracer.turn_finished(turn, result)
