"""A hot session: one conversation on one Claude Code process, its turns run one at a time.

A turn is driven by its own task, not by the RPC that sent it, so a caller that goes away
mid-turn never leaves the process half way through a reply: the driver always reads up
to the turn's `result` (interrupting first if the caller asked), and only then lets the
next turn write.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hotsvc import background, protocol
from hotsvc.config import Profile
from hotsvc.process import ClaudeProcess, ControlError, ProcessExited, ProcessGone
from hotsvc.protocol import ControlRequest, Event, Result

log = logging.getLogger(__name__)

INTERRUPT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class TurnStarted(protocol.Event):
    """hotsvc's own event: the turn left the queue and was written to the process."""

    text: str


class TurnState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class Turn:
    """One user message and the events it produced, ending with exactly one Result."""

    def __init__(self, text: str, turn_id: str) -> None:
        self.id = turn_id or f"turn-{uuid.uuid4().hex[:12]}"
        self.text = text
        self.state = TurnState.QUEUED
        self.interrupt_requested = False
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._process: ClaudeProcess | None = None

    async def events(self) -> AsyncIterator[Event]:
        """The turn's events as they come, up to and including its Result."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Result):
                return

    def interrupt(self) -> None:
        """Stop this turn: at once if running, before it starts if still queued."""
        if self.state is TurnState.DONE or self.interrupt_requested:
            return
        self.interrupt_requested = True
        if self.state is TurnState.RUNNING and self._process is not None:
            background.spawn(_send_interrupt(self._process))

    def deliver(self, event: Event) -> None:
        self._events.put_nowait(event)
        if isinstance(event, Result):
            self.state = TurnState.DONE


async def _send_interrupt(process: ClaudeProcess) -> None:
    try:
        async with asyncio.timeout(INTERRUPT_TIMEOUT_SECONDS):
            await process.request("interrupt")
    except (ProcessGone, ControlError, TimeoutError) as exc:
        log.warning("interrupt of pid %d failed: %s", process.pid, exc)


def hotsvc_result(subtype: str, text: str) -> Result:
    """An error result for a turn that ended without the CLI's own `result`."""
    return Result(text=text, is_error=True, subtype=subtype)


class Session:
    """A conversation bound to its process; at most one stream attached at a time."""

    def __init__(self, profile: Profile, process: ClaudeProcess,
                 first_turn_done: asyncio.Event | None = None) -> None:
        self.id = process.session_id
        self.profile = profile
        self.process = process
        self.created_at = time.time()
        self.last_active_at = self.created_at
        self.turns_completed = 0
        self.attached = False
        self.closed = False
        self._lock = asyncio.Lock()
        self._running: Turn | None = None
        self.first_turn_done = first_turn_done or asyncio.Event()
        self._drivers: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        return self._running is not None

    def submit(self, text: str, turn_id: str = "") -> Turn:
        """Accept a turn; it runs after every turn submitted before it."""
        turn = Turn(text, turn_id)
        driver = asyncio.create_task(self._drive(turn), name=f"turn-{turn.id}")
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)
        return turn

    async def idle(self) -> None:
        """Wait until every submitted turn has its result."""
        while self._drivers:
            await asyncio.gather(*self._drivers, return_exceptions=True)

    async def _drive(self, turn: Turn) -> None:
        async with self._lock:  # FIFO: turns run in the order they were submitted
            self._running = turn
            try:
                turn.deliver(await self._run(turn))
            except Exception as exc:  # a bug here must still end the turn
                log.exception("turn %s of session %s failed", turn.id, self.id)
                turn.deliver(hotsvc_result("internal_error", f"hotsvc failed the turn: {exc}"))
            finally:
                self._running = None
                self.first_turn_done.set()
                self.turns_completed += 1
                self.last_active_at = time.time()

    async def _run(self, turn: Turn) -> Result:
        """Write the turn and forward its events; returns the Result that ends it."""
        if self.closed:
            return hotsvc_result("session_closed", f"session {self.id} was closed")
        if turn.interrupt_requested:
            return hotsvc_result("interrupted", "interrupted before it reached Claude")
        process = self.process
        turn._process = process
        turn.state = TurnState.RUNNING
        turn.deliver(TurnStarted(turn.text))
        try:
            await process.send(protocol.user_message(turn.text))
        except ProcessGone:
            return await self._exited_result(process)
        if turn.interrupt_requested:  # asked while we were writing
            background.spawn(_send_interrupt(process))
        while True:
            event = await process.next_event()
            if isinstance(event, Result):
                return event
            if isinstance(event, ProcessExited):
                return self._describe_exit(event)
            if isinstance(event, ControlRequest):
                await self._answer(process, event)
                continue
            turn.deliver(event)

    async def _exited_result(self, process: ClaudeProcess) -> Result:
        await process.wait_exited()
        event = await process.next_event()
        assert isinstance(event, ProcessExited)
        return self._describe_exit(event)

    def _describe_exit(self, exited: ProcessExited) -> Result:
        tail = exited.stderr_tail or "(no stderr)"
        return hotsvc_result(
            "process_exited",
            f"Claude Code (pid {self.process.pid}) exited with code {exited.returncode} "
            f"during the turn; stderr tail:\n{tail}",
        )

    async def _answer(self, process: ClaudeProcess, request: ControlRequest) -> None:
        """Answer the CLI's own questions so it never waits on us forever."""
        if request.subtype == "can_use_tool":
            tool = request.request.get("tool_name", "?")
            response = {
                "behavior": "deny",
                "message": f"hotsvc does not relay permission prompts; allow {tool} in the "
                           "session's profile (allowed_tools or permission_mode) instead",
            }
        else:
            response = {}
            log.warning("session %s: unanswerable control request %r", self.id, request.subtype)
        # If the process is gone, its exit shows up as ProcessExited on the next read.
        with contextlib.suppress(ProcessGone):
            await process.send(protocol.control_success(request.request_id, response))

    async def close(self) -> int:
        """End the session: queued turns end with an error result, the process exits."""
        self.closed = True
        return await self.process.close()
