"""A turn: one user message and the events it produces, ending in exactly one Result."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from hotsvc.claude.content import UserBlock
from hotsvc.claude.protocol import Event, Result


@dataclass(frozen=True, slots=True)
class TurnStarted(Event):
    """hotsvc's own event: the turn left the queue and was written to the process."""

    visible: ClassVar[bool] = True

    text: str


class TurnState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"  # written to the process
    DONE = "done"


class TurnSink(Protocol):
    """Where a turn's events go: the stream that sent it, while it is attached."""

    def emit(self, turn: Turn, event: Event) -> Awaitable[None] | None: ...

    def finished(self, turn: Turn, result: Result) -> None: ...


def hotsvc_result(subtype: str, text: str) -> Result:
    """An error result for a turn that ended without the CLI's own `result`."""
    return Result(text=text, is_error=True, subtype=subtype)


class Turn:
    def __init__(
        self, text: str, turn_id: str, sink: TurnSink, content: tuple[UserBlock, ...] = ()
    ) -> None:
        self.id = turn_id or f"turn-{uuid.uuid4().hex[:12]}"
        self.text = text
        self.content = content  # blocks sent after the text (images, documents)
        self.state = TurnState.QUEUED
        self.interrupt_requested = False
        self.sink = sink

    def emit(self, event: Event) -> Awaitable[None] | None:
        """Pass an event on; the awaitable, if any, is the sink's backpressure."""
        return self.sink.emit(self, event)

    def finish(self, result: Result) -> None:
        self.state = TurnState.DONE
        self.sink.finished(self, result)
