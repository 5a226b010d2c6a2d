"""One stream attached to a session: the turns it sent, and the events on their way to it.

The attachment owns the stream's side of a session: it submits the turns the caller sends,
routes their events into a bounded outbox (a caller that stops reading stops the session's
reader, and the pipe pushes back on the CLI instead of on our memory), adds heartbeats
and the go-away notice, and on detach applies the disconnect policy to its turns.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from hotsvc.claude.content import UserBlock
from hotsvc.claude.events import Event, Result
from hotsvc.errors import ServiceError
from hotsvc.permissions import Decision
from hotsvc.principal import Principal
from hotsvc.quota import Quotas
from hotsvc.session import Session
from hotsvc.settings import ServiceConfig
from hotsvc.turn import Turn, TurnState

log = logging.getLogger(__name__)

# Events held for a stream that is not reading; past either bound the session's reader
# waits (a few large events are held back as surely as many small ones).
OUTBOX_EVENTS = 256
OUTBOX_BYTES = 4 * 1024 * 1024
EVENT_OVERHEAD_BYTES = 256  # an event's own objects, beside its line


@dataclass(frozen=True, slots=True)
class Heartbeat(Event):
    visible: ClassVar[bool] = True

    turn_running: bool


@dataclass(frozen=True, slots=True)
class GoAway(Event):
    visible: ClassVar[bool] = True

    time_left: float
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """A request refused without ending the stream (e.g. a turn past the pending limit)."""

    visible: ClassVar[bool] = True

    error: ServiceError


class StreamEnded(Exception):
    """The session ended under the stream (e.g. CloseSession); carries the caller's error."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


Item = tuple[str, Event]  # (turn id, event); turn id "" for the stream's own notices
_END = Event()  # no more items


class Outbox:
    """Events for one stream, in order. `put` returns an awaitable once `bound` events are
    waiting (the producer's cue to stop until the stream catches up); results and notices
    (`put_nowait`) never wait. No asyncio.Queue: one deque and at most one waiter a side,
    so an event costs an append and, when the stream is idle, one wake-up."""

    def __init__(self, bound: int, byte_bound: int = OUTBOX_BYTES) -> None:
        self._items: collections.deque[tuple[str, Event, int]] = collections.deque()
        self._counted = 0  # events from `put` still waiting: what the bound limits
        self._bytes = 0  # and their size (lines as the CLI wrote them)
        self._bound = bound
        self._byte_bound = byte_bound
        self._reader: asyncio.Future[None] | None = None  # the stream, waiting for items
        self._room: asyncio.Future[None] | None = None  # the producer, waiting for room
        self.closed = False
        self.last_sent = time.monotonic()

    def put(self, turn_id: str, event: Event) -> asyncio.Future[None] | None:
        """Queue an event; an awaitable when the producer should wait before the next."""
        if self.closed:
            return None
        size = len(event.line) + EVENT_OVERHEAD_BYTES
        self._items.append((turn_id, event, size))
        self._counted += 1
        self._bytes += size
        self._wake_reader()
        if self._counted < self._bound and self._bytes < self._byte_bound:
            return None
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        return self._room

    def put_nowait(self, turn_id: str, event: Event) -> None:
        if not self.closed:
            self._items.append((turn_id, event, 0))
            self._wake_reader()

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Item:
        while not self._items:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        turn_id, event, size = self._items.popleft()
        if size:
            self._counted -= 1
            self._bytes -= size
            if self._counted <= self._bound // 2 and self._bytes <= self._byte_bound // 2:
                self._free_room()
        self.last_sent = time.monotonic()
        return turn_id, event

    def close(self) -> None:
        """Drop everything from now on, and free any producer waiting for room."""
        self.closed = True
        self._items.clear()
        self._counted = self._bytes = 0
        self._free_room()

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _free_room(self) -> None:
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        self._room = None


class Attachment:
    def __init__(
        self,
        session: Session,
        config: ServiceConfig,
        alive: Callable[[], bool],
        principal: Principal,
        quotas: Quotas,
        interactive: bool = True,
    ) -> None:
        self.session = session
        self.alive = alive  # is the attaching RPC still there?
        self.principal = principal  # who attached: its turns count against its quota
        # False for Ask: the caller cannot answer a permission prompt on its stream, so
        # prompts follow the profile's no-answer policy as if no stream were attached.
        self.interactive = interactive
        self._quotas = quotas
        self._config = config
        self._outbox = Outbox(OUTBOX_EVENTS)
        self._turns: list[Turn] = []  # sent on this stream and not yet finished
        self._controls = 0  # controls relayed and not yet answered
        self._last_sent: Turn | None = None
        self._input_ended = False
        self._told_go_away = False
        self.ended: ServiceError | None = None
        if interactive:  # a re-attaching caller is asked what is still waiting
            for turn_id, ask in session.permissions.waiting():
                self.notify(turn_id, ask)

    @property
    def attached(self) -> bool:
        return not self._outbox.closed and self.alive()

    # -- what the caller sends -----------------------------------------------------

    def submit(self, text: str, turn_id: str, content: tuple[UserBlock, ...] = ()) -> Turn:
        """Queue a turn; QuotaExceeded past the principal's turn rate, CapacityExhausted
        past the session's pending limit (neither ends the stream)."""
        session = self.session
        turn = Turn(text, turn_id, self, content, session.profile.name, session.id)
        self._quotas.take_turn(self.principal)
        try:
            self.session.submit(turn)
        except BaseException:
            self._quotas.give_back_turn(self.principal)
            raise
        self._turns.append(turn)
        self._last_sent = turn
        return turn

    async def reject(self, turn_id: str, error: ServiceError) -> None:
        """Tell the caller a request was refused; counts against the outbox like an event."""
        if (room := self._outbox.put(turn_id, Rejected(error))) is not None:
            await room

    def decide(self, decision: Decision) -> None:
        """The caller's answer to a permission request; InvalidRequest (the stream stays)
        for a request that is not waiting."""
        self.session.permissions.decide(decision, self.principal)

    def notify(self, turn_id: str, event: Event) -> None:
        """Something the caller must answer (a permission request): queued like a
        result, it never waits for room."""
        self._outbox.put_nowait(turn_id, event)

    def interrupt(self) -> None:
        """Interrupt the most recently sent turn."""
        if self._last_sent is not None:
            self.session.interrupt(self._last_sent)

    def control_started(self) -> None:
        """A control is being relayed: the stream waits for its answer before it ends."""
        self._controls += 1

    def control_finished(self, outcome: Event) -> None:
        """The control's answer, queued like a result (it never waits for room)."""
        self._controls -= 1
        self._outbox.put_nowait("", outcome)
        self._end_if_done()

    def end_input(self, error: ServiceError | None = None) -> None:
        """No more requests: the stream ends once the turns already sent have results,
        with `error` if a bad request ended the input, else OK."""
        self._input_ended = True
        self.ended = self.ended or error
        self._end_if_done()

    # -- TurnSink: what the session sends ------------------------------------------

    def emit(self, turn: Turn, event: Event) -> Awaitable[None] | None:
        return self._outbox.put(turn.id, event)

    def finished(self, turn: Turn, result: Result) -> None:
        self._outbox.put_nowait(turn.id, result)
        if turn in self._turns:
            self._turns.remove(turn)
        self._end_if_done()

    # -- what the stream receives --------------------------------------------------

    async def events(self) -> AsyncIterator[Item]:
        """The stream's events until the caller's turns are done after a half-close."""
        while (item := await self._outbox.get())[1] is not _END:
            yield item
        if self.ended is not None:
            raise StreamEnded(self.ended)

    async def keep_alive(self) -> None:
        """A heartbeat whenever the stream has been silent for the heartbeat interval."""
        interval = self._config.heartbeat_interval
        while True:
            await asyncio.sleep(self._outbox.last_sent + interval - time.monotonic())
            if time.monotonic() - self._outbox.last_sent >= interval and self._outbox.empty():
                self._outbox.put_nowait("", Heartbeat(self.session.busy))
                self._outbox.last_sent = time.monotonic()

    def go_away(self, time_left: float, reason: str) -> None:
        if not self._told_go_away:
            self._told_go_away = True
            self._outbox.put_nowait("", GoAway(time_left, reason))

    def end(self, error: ServiceError) -> None:
        """The session is gone: end the stream with `error` after what is already queued."""
        self.ended = error
        self._outbox.put_nowait("", _END)

    def _end_if_done(self) -> None:
        if self._input_ended and not self._turns and not self._controls:
            self._outbox.put_nowait("", _END)

    # -- detaching -----------------------------------------------------------------

    def detach(self) -> None:
        """The stream is gone: its unfinished turns are interrupted (or left to finish)."""
        self._outbox.close()
        if self._config.interrupt_on_disconnect:
            for turn in self._turns:
                if turn.state is not TurnState.DONE:
                    self.session.interrupt(turn)
