"""A turn: one user message and the events it produces, ending in exactly one Result."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from hotsvc import observe
from hotsvc.claude.content import UserBlock
from hotsvc.claude.events import AssistantMessage, Event, Result, TextDelta


@dataclass(frozen=True, slots=True)
class TurnStarted(Event):
    """hotsvc's own event: the turn left the queue and was written to the process."""

    visible: ClassVar[bool] = True

    text: str


class TurnState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"  # written to the process
    DONE = "done"


@dataclass
class TurnTimes:
    """When a turn reached each step, in time.monotonic() seconds (0 = not reached);
    `wall_ns` is time.time_ns() at `accepted`, to place the steps on the wall clock."""

    accepted: float = field(default_factory=time.monotonic)
    wall_ns: int = field(default_factory=time.time_ns)
    dequeued: float = 0.0  # the session's runner took it (a resume may follow)
    writing: float = 0.0  # its process was ready: the write began
    written: float = 0.0  # the user message was written to the process
    first_token: float = 0.0  # the first text (a delta, else a whole message) came back
    result: float = 0.0  # its result came back (before the transcript sync)
    finished: float = 0.0  # the caller was given the result

    @property
    def began(self) -> float:
        """Where the turn's latency starts: the runner taking it, else its acceptance."""
        return self.dequeued or self.accepted

    def ns(self, at: float) -> int:
        """A monotonic time on the wall clock, in nanoseconds."""
        return self.wall_ns + int((at - self.accepted) * 1e9)


Step = Literal["dequeued", "writing", "written", "first_token", "result"]


class TurnSink(Protocol):
    """Where a turn's events go: the stream that sent it, while it is attached."""

    def emit(self, turn: Turn, event: Event) -> Awaitable[None] | None: ...

    def finished(self, turn: Turn, result: Result) -> None: ...


def hotsvc_result(subtype: str, text: str) -> Result:
    """An error result for a turn that ended without the CLI's own `result`."""
    return Result(text=text, is_error=True, subtype=subtype)


class Turn:
    def __init__(
        self,
        text: str,
        turn_id: str,
        sink: TurnSink,
        content: tuple[UserBlock, ...] = (),
        profile: str = "",
        session_id: str = "",
    ) -> None:
        self.id = turn_id or f"turn-{uuid.uuid4().hex[:12]}"
        self.text = text
        self.content = content  # blocks sent after the text (images, documents)
        self.state = TurnState.QUEUED
        self.interrupt_requested = False
        self.sink = sink
        self.profile = profile  # for the metrics' labels
        self.session_id = session_id  # for its logs and spans, never a metric's label
        self.times = TurnTimes()
        self.trace_parent: object = None  # with --otel, the caller's trace context
        observe.turn_accepted(self)

    def mark(self, step: Step | Literal["finished"]) -> None:
        """Note that the turn reached `step` (a TurnTimes field) now."""
        setattr(self.times, step, time.monotonic())

    def emit(self, event: Event) -> Awaitable[None] | None:
        """Pass an event on; the awaitable, if any, is the sink's backpressure."""
        if not self.times.first_token and isinstance(event, TextDelta | AssistantMessage):
            self.mark("first_token")
        return self.sink.emit(self, event)

    def finish(self, result: Result) -> None:
        self.state = TurnState.DONE
        self.mark("finished")
        observe.turn_finished(self, result)
        self.sink.finished(self, result)
