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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hotsvc import background, protocol
from hotsvc.config import Profile, ServiceConfig
from hotsvc.errors import ServiceError
from hotsvc.process import ClaudeProcess, ControlError, ProcessExited, ProcessGone
from hotsvc.protocol import ControlRequest, Event, Result, SystemEvent

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

    async def next_event(self) -> Event:
        """The turn's next event; the last one is its Result. Safe to cancel and retry."""
        return await self._events.get()

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


class ProcessSource(Protocol):
    """Where a session gets a new process when its old one is gone (the manager)."""

    async def resume_process(self, session: Session) -> ClaudeProcess: ...

    def turn_ended(self, session: Session) -> None: ...


class Session:
    """A conversation; its process may come and go, the conversation stays (`--resume`)."""

    def __init__(self, session_id: str, profile: Profile, config: ServiceConfig,
                 source: ProcessSource, process: ClaudeProcess | None = None, *,
                 owner: str = "", created_at: float | None = None, turns: int = 0,
                 first_turn_done: asyncio.Event | None = None) -> None:
        self.id = session_id
        self.profile = profile
        self.owner = owner
        self.process = process
        self.created_at = created_at or time.time()
        self.last_active_at = time.time()
        self.turns_completed = turns
        self.process_turns = 0  # turns on the current process, for recycling
        # The attached stream, as "is it still there?"; a stream whose RPC already ended
        # (say, at its deadline) no longer holds the session, even before its handler
        # has unwound, so the caller's immediate re-attach is not refused.
        self.attachment: Callable[[], bool] | None = None
        self.closed = False
        self.last_turn_id = ""
        self.last_result: Result | None = None
        self.first_turn_done = first_turn_done or asyncio.Event()
        self._config = config
        self._source = source
        self._lock = asyncio.Lock()
        self._spawning = asyncio.Lock()
        self._running: Turn | None = None
        self._drivers: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        return self._running is not None

    @property
    def attached(self) -> bool:
        return self.attachment is not None and self.attachment()

    @property
    def live(self) -> bool:
        return self.process is not None and self.process.alive

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

    async def ensure_process(self) -> tuple[ClaudeProcess, bool]:
        """The live process, resuming the conversation in a new one if needed; True if new."""
        async with self._spawning:
            if self.process is not None and self.process.alive:
                return self.process, False
            self.process = await self._source.resume_process(self)
            self.process_turns = 0
            return self.process, True

    async def _drive(self, turn: Turn) -> None:
        async with self._lock:  # FIFO: turns run in the order they were submitted
            self._running = turn
            try:
                result = await self._run(turn)
            except Exception as exc:  # a bug here must still end the turn
                log.exception("turn %s of session %s failed", turn.id, self.id)
                result = hotsvc_result("internal_error", f"hotsvc failed the turn: {exc}")
            self.last_turn_id, self.last_result = turn.id, result
            turn.deliver(result)
            self._running = None
            self.first_turn_done.set()
            self.turns_completed += 1
            self.process_turns += 1
            self.last_active_at = time.time()
            self._source.turn_ended(self)
            if reason := self._recycle_reason():
                log.info("session %s: recycling its process (%s)", self.id, reason)
                await self.stop()

    async def _run(self, turn: Turn) -> Result:
        """Write the turn and forward its events; returns the Result that ends it."""
        if self.closed:
            return hotsvc_result("session_closed", f"session {self.id} was closed")
        if turn.interrupt_requested:
            return hotsvc_result("interrupted", "interrupted before it reached Claude")
        try:
            process, resumed = await self.ensure_process()
        except ServiceError as exc:
            return hotsvc_result("resume_failed", f"could not restart session {self.id}: {exc}")
        turn._process = process
        turn.state = TurnState.RUNNING
        turn.deliver(TurnStarted(turn.text))
        if resumed:
            status = f"conversation resumed in pid {process.pid}"
            turn.deliver(SystemEvent("resumed", status=status))
        try:
            await process.send(protocol.user_message(turn.text))
        except ProcessGone:
            return await self._exited_result(process)
        if turn.interrupt_requested:  # asked while we were writing
            background.spawn(_send_interrupt(process))
        while True:
            try:
                async with asyncio.timeout(self._config.turn_inactivity_timeout):
                    event = await process.next_event()
            except TimeoutError:
                return await self._unstick(process, turn)
            if isinstance(event, Result):
                return event
            if isinstance(event, ProcessExited):
                return self._describe_exit(process, event)
            if isinstance(event, ControlRequest):
                await self._answer(process, event)
                continue
            turn.deliver(event)

    async def _unstick(self, process: ClaudeProcess, turn: Turn) -> Result:
        """The watchdog: a silent turn is interrupted, and if that gets no result, killed."""
        quiet = self._config.turn_inactivity_timeout
        turn.deliver(SystemEvent("watchdog", status=f"no output for {quiet:g}s: interrupting"))
        background.spawn(_send_interrupt(process))
        try:
            async with asyncio.timeout(INTERRUPT_TIMEOUT_SECONDS):
                while not isinstance(event := await process.next_event(), Result | ProcessExited):
                    turn.deliver(event)
            if isinstance(event, Result):
                return event
        except TimeoutError:
            process.kill()
            await process.wait_exited()
        return hotsvc_result(
            "watchdog_timeout",
            f"Claude Code (pid {process.pid}) produced no output for {quiet:g}s and did not "
            "answer an interrupt, so it was killed; the next turn resumes the conversation")

    def _recycle_reason(self) -> str:
        """Why the process should be replaced before the next turn, or "" to keep it."""
        process, config = self.process, self._config
        if process is None or not process.alive:
            return ""
        if config.recycle_after_turns and self.process_turns >= config.recycle_after_turns:
            return f"{self.process_turns} turns"
        age = time.monotonic() - process.started_at
        if config.recycle_after_seconds and age >= config.recycle_after_seconds:
            return f"{age:.0f}s old"
        rss_mb = resident_mb(process.pid)
        if config.recycle_above_rss_mb and rss_mb >= config.recycle_above_rss_mb:
            return f"{rss_mb} MB resident"
        return ""

    def release_process(self) -> ClaudeProcess | None:
        """Take the process from the session at once (it resumes later); the caller ends it.

        Synchronous on purpose: from this moment no open or turn can pick the process up,
        even before it has finished exiting.
        """
        process, self.process = self.process, None
        return process

    async def stop(self) -> None:
        """End the process, keep the conversation (idle timeout, recycling, shutdown)."""
        async with self._spawning:  # a process still starting is ended too, not leaked
            process = self.release_process()
        if process is not None:
            await process.close()

    async def _exited_result(self, process: ClaudeProcess) -> Result:
        await process.wait_exited()
        event = await process.next_event()
        assert isinstance(event, ProcessExited)
        return self._describe_exit(process, event)

    def _describe_exit(self, process: ClaudeProcess, exited: ProcessExited) -> Result:
        if self.closed:
            return hotsvc_result("session_closed", f"session {self.id} was closed mid-turn")
        tail = exited.stderr_tail or "(no stderr)"
        return hotsvc_result(
            "process_exited",
            f"Claude Code (pid {process.pid}) exited with code {exited.returncode} "
            f"during the turn; the next turn resumes the conversation. stderr tail:\n{tail}",
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
        """End the session for good: queued turns end with an error result."""
        self.closed = True
        async with self._spawning:
            process = self.release_process()
        return await process.close() if process is not None else 0


def resident_mb(pid: int) -> int:
    """Resident memory of `pid` in MB, 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
