"""A hot session: one conversation on one Claude Code process, its turns run one at a time.

The session's own task runs its turns, not the RPC that sent them, so a caller that goes
away mid-turn never leaves the process half way through a reply: the runner always reads
up to the turn's `result` (interrupting first if asked), and only then writes the next.
The process's reader hands each event straight to the running turn (`_route`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hotsvc import control_requests, logs, metrics
from hotsvc.audit import AuditLog
from hotsvc.claude import protocol
from hotsvc.claude.content import user_content
from hotsvc.claude.events import (
    AssistantMessage,
    ControlCancel,
    ControlRequest,
    Event,
    ProcessExited,
    Result,
    SystemEvent,
    ToolResult,
    TranscriptMirror,
    UserMessage,
)
from hotsvc.claude.process import ClaudeProcess, ControlError, ProcessGone
from hotsvc.durability import Durability, Written
from hotsvc.errors import CapacityExhausted, ServiceError, SessionNotFound, TranscriptLost
from hotsvc.exits import exit_result, transcript_lost
from hotsvc.framing import Framing
from hotsvc.options import SessionOptions
from hotsvc.permissions import Permissions
from hotsvc.profiles import Profile
from hotsvc.recycling import recycle_reason
from hotsvc.settings import ServiceConfig
from hotsvc.store.transcripts import size_of
from hotsvc.succession import Succession
from hotsvc.turn import Turn, TurnStarted, TurnState, hotsvc_result
from hotsvc.watchdog import INTERRUPT_TIMEOUT_SECONDS, Watchdog

if TYPE_CHECKING:
    from hotsvc.attachment import Attachment
    from hotsvc.store import TurnRecord

log = logging.getLogger(__name__)

# Told how a wait for a process is getting on (e.g. a place in the queue for a slot).
OnProgress = Callable[[str], Awaitable[None]]


class ProcessSource(Protocol):
    """Where a session gets a new process when its old one is gone (the manager)."""

    async def resume_process(
        self, session: Session, progress: OnProgress | None = None
    ) -> ClaudeProcess: ...

    def count_turn(self, session: Session, result: Result) -> TurnRecord: ...

    async def turn_ended(self, session: Session) -> None: ...


class Session:
    """A conversation; its process may come and go, the conversation stays (`--resume`)."""

    def __init__(
        self,
        session_id: str,
        profile: Profile,
        config: ServiceConfig,
        source: ProcessSource,
        process: ClaudeProcess | None = None,
        *,
        durability: Durability,
        owner: str = "",
        cwd: str = "",
        created_at: float | None = None,
        turns: int = 0,
        lost: bool = False,
        first_turn_done: asyncio.Event | None = None,
        options: SessionOptions | None = None,
        forked_from: str = "",
        model: str = "",
        audit: AuditLog | None = None,
        claude_id: str = "",
    ) -> None:
        self.id = session_id
        # The id Claude Code knows the conversation by: its transcript's name, what
        # --resume takes. A warm process taken for a caller's id keeps its own.
        self.claude_id = claude_id or session_id
        self.profile = profile  # the effective one: the caller's options applied
        self.options = options or SessionOptions()
        self.forked_from = forked_from  # a fork's source, until its first turn
        self.model = model  # as Claude Code last reported it (system/init)
        self.owner = owner
        # Where its processes run: every resume too (CLI 2.1.197 resumes only there). A
        # new session's is its first process's: a workspace of its own, if it has one.
        self.cwd = cwd or (process.cwd if process else "") or profile.cwd or os.getcwd()
        self.lost = lost  # its transcript is gone everywhere: it cannot resume
        self.created_at = created_at or time.time()
        self.last_active_at = time.time()
        self.turns = turns  # turns that reached a process, across processes
        self.process_turns = 0  # turns on the current process, for recycling
        self.last_turn_id = ""
        self.last_result: Result | None = None
        self.first_turn_done = first_turn_done or asyncio.Event()
        self.attachment: Attachment | None = None  # the one stream attached, if any
        self._config = config
        self._source = source
        self._queue: asyncio.Queue[Turn] = asyncio.Queue(config.max_pending_turns)
        self._running: Turn | None = None
        self._ended: asyncio.Future[Result | ProcessExited] | None = None
        self._turn_process: ClaudeProcess | None = None  # the running turn was written to it
        self._tasks: asyncio.TaskGroup | None = None
        self._watchdog = Watchdog(config, self._send_interrupt)
        self._durability = durability
        self._transcript: Path | None = None  # as the CLI names it (--session-mirror)
        self._marker = ""  # uuid of the running turn's last transcript entry so far
        self._framing = Framing()  # of the current process's turns
        # Permission prompts waiting for the caller (a profile's permission_prompts).
        self.permissions = Permissions(
            session_id,
            owner,
            audit or AuditLog(None),
            profile.permission_timeout,
            profile.caller_may_persist_permissions,
        )
        self._processes = Succession(session_id, self._adopt, process)

    @property
    def process(self) -> ClaudeProcess | None:
        """The process it runs on now, if any."""
        return self._processes.current

    @property
    def closed(self) -> bool:
        return self._processes.closed

    @property
    def busy(self) -> bool:
        return self._running is not None

    @property
    def attached(self) -> bool:
        return self.attachment is not None and self.attachment.attached

    @property
    def live(self) -> bool:
        return self.process is not None and self.process.alive

    @property
    def evictable(self) -> bool:
        """Holds a process nobody is using: it may end, and resume when needed."""
        return self.live and not self.attached and not self.busy and self._queue.empty()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def parkable(self) -> bool:
        """Nothing uses it and no process of its is still ending (a new one must not start
        beside it): it may be kept as its record alone (registry.py)."""
        in_use = self.attached or self.busy or self.pending
        return not in_use and self._processes.freed

    # -- turns ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run submitted turns one at a time, in order; owned by the manager."""
        logs.bind(session_id=self.id, profile=self.profile.name, principal=self.owner)
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            while True:
                turn = await self._queue.get()
                turn.mark("dequeued")
                with logs.bound(turn_id=turn.id):
                    await self._drive(turn)
                self._queue.task_done()

    def submit(self, turn: Turn) -> None:
        """Accept a turn; it runs after every turn submitted before it."""
        if self.lost:
            raise self.lost_error()
        if self.closed:
            raise SessionNotFound(
                f"session {self.id} was closed; open a new session", metadata={"sessionId": self.id}
            )
        try:
            self._queue.put_nowait(turn)
        except asyncio.QueueFull:
            limit = self._config.max_pending_turns
            raise CapacityExhausted(
                f"session {self.id} already has {limit} turns waiting; wait for a result "
                "before sending more, or raise --max-pending-turns",
                metadata={"sessionId": self.id, "maxPendingTurns": limit},
            ) from None

    async def idle(self) -> None:
        """Wait until every submitted turn has its result."""
        await self._queue.join()

    def interrupt(self, turn: Turn) -> None:
        """Stop a turn: at once if running, before it starts if still queued."""
        if turn.state is TurnState.DONE or turn.interrupt_requested:
            return
        turn.interrupt_requested = True
        if turn is self._running and turn.state is TurnState.RUNNING and self.process:
            self._send_interrupt(self.process)

    async def _drive(self, turn: Turn) -> None:
        self._running = turn
        written: Written | None = None
        try:
            result, written = await self._run(turn)
        except asyncio.CancelledError:
            turn.finish(hotsvc_result("shutdown", "hotsvc stopped before the turn ended"))
            raise
        except Exception as exc:  # a bug here must still end the turn
            log.exception("turn %s of session %s failed", turn.id, self.id)
            result = hotsvc_result("internal_error", f"hotsvc failed the turn: {exc}")
        finally:
            self._running = self._ended = self._turn_process = None
        if turn.state is TurnState.RUNNING:
            self.turns += 1
            self.process_turns += 1
        self.last_turn_id = turn.id
        self.last_active_at = time.time()
        try:  # recorded before the caller hears of it
            record = self._source.count_turn(self, result)
            result = await self._durability.keep(self.id, result, record, written)
            await self._source.turn_ended(self)
        except Exception:
            log.exception("session %s: turn %s not recorded", self.id, turn.id)
        finally:
            # Kept without its line (~2 KB a session): only the turn's own stream sends it.
            self.last_result = dataclasses.replace(result, line="")
            turn.finish(result)
            self.first_turn_done.set()
        untrusted = self._framing.untrusted
        if reason := recycle_reason(self.process, self._config, self.process_turns, untrusted):
            log.info("session %s: recycling its process (%s)", self.id, reason)
            metrics.evicted("recycle")
            await self.stop()

    async def _run(self, turn: Turn) -> tuple[Result, Written | None]:
        """Write the turn and let its events flow; returns the Result that ends it and,
        when Claude Code answered it, where its transcript entries are."""
        if self.closed:
            return hotsvc_result("session_closed", f"session {self.id} was closed"), None
        if turn.interrupt_requested:
            return hotsvc_result("interrupted", "interrupted before it reached Claude"), None
        # A process that died between turns may not have been noticed yet: if it ends
        # without echoing our message, the turn never reached Claude and runs once more.
        # (Not "without output after the write": what it wrote before dying may still be
        # read after the write, and a turn that reached Claude must not run twice.)
        for attempt in (1, 2):
            try:
                resumed = await self.ensure_process()
            except TranscriptLost as exc:
                return hotsvc_result("transcript_lost", exc.message), None
            except ServiceError as exc:
                message = f"could not restart session {self.id}: {exc}"
                return hotsvc_result("resume_failed", message), None
            process = self.process
            assert process is not None
            self._ended = asyncio.get_running_loop().create_future()
            self._turn_process = process
            if turn.state is TurnState.QUEUED:
                turn.state = TurnState.RUNNING
                await _emit(turn, TurnStarted(turn.text))
            if resumed:
                await _emit(
                    turn,
                    SystemEvent("resumed", status=f"conversation resumed in pid {process.pid}"),
                )
            # Our user message's uuid: its echo opens the turn (--replay-user-messages), its
            # transcript entry is the turn's first durability marker.
            self._marker = self._framing.begin()
            offset = size_of(self.transcript_path())
            turn.mark("writing")
            with contextlib.suppress(ProcessGone):  # its exit arrives as ProcessExited
                content = user_content(turn.text, turn.content)
                await process.send(protocol.user_message(content, self._marker))
            turn.mark("written")
            if turn.interrupt_requested:  # asked while we were writing
                self._send_interrupt(process)
            ending = await self._watchdog.watch(
                process, self._ended, functools.partial(_emit, turn)
            )
            if isinstance(ending, Result):
                turn.mark("result")
                return ending, Written(self.transcript_path(), self._marker, offset)
            if attempt == 2 or self.closed or self._framing.echoed:
                died = await exit_result(
                    self.id,
                    process.pid,
                    ending,
                    closed=self.closed,
                    turns=self.turns,
                    restorable=functools.partial(
                        self._durability.restorable, self.id, self.transcript_path()
                    ),
                )
                return died, None
            log.info(
                "session %s: pid %d was gone before the turn reached it; resuming",
                self.id,
                process.pid,
            )
        raise AssertionError("unreachable")

    def _route(self, process: ClaudeProcess, event: Event) -> Awaitable[None] | None:
        """The process's listener: events to the running turn, its end to the runner."""
        if isinstance(event, ControlRequest):
            assert self._tasks is not None
            self._tasks.create_task(self._answer(process, event))
            return None
        if isinstance(event, ControlCancel):  # a prompt withdrawn (say, by an interrupt)
            self.permissions.cancel(event.request_id)
            return None
        if isinstance(event, ProcessExited):  # nobody waits on its prompts' answers now
            self.permissions.cancel_all(process)
        if isinstance(event, SystemEvent) and event.model:
            self.model = event.model
        ended, turn = self._ended, self._running
        if ended is None or turn is None or process is not self._turn_process:
            if isinstance(event, Result):
                log.warning("session %s: dropped a result no turn was waiting for", self.id)
            return None  # between turns, or a released process's last words
        if isinstance(event, Result) and not self._framing.ends_turn(
            event, self._watchdog.tools_running, self.id
        ):
            return None
        if isinstance(event, Result | ProcessExited):
            if not ended.done():
                ended.set_result(event)
            return None
        if isinstance(event, UserMessage) and self._framing.is_echo(event):
            return None  # the echo of our own message: the turn has begun
        if isinstance(event, TranscriptMirror):
            self._transcript = Path(event.path)
            return None
        if event.uuid and isinstance(event, AssistantMessage | ToolResult | UserMessage):
            self._marker = event.uuid
        self._watchdog.observe(event)
        return turn.emit(event) if event.visible else None

    def transcript_path(self) -> Path:
        if self._transcript is None:
            self._transcript = self._durability.path(self.claude_id, self.profile, self.cwd)
        return self._transcript

    def lost_error(self) -> TranscriptLost:
        return transcript_lost(self.id, self.turns)

    def _send_interrupt(self, process: ClaudeProcess) -> None:
        """Interrupt the running turn, from a task of its own so the caller need not wait."""
        assert self._tasks is not None
        self._tasks.create_task(self._interrupt(process, self._running))

    async def _interrupt(self, process: ClaudeProcess, turn: Turn | None) -> None:
        # Checked right before the write, with no await in between: an interrupt meant for
        # a turn that has just ended must not reach the next one.
        if turn is None or self._running is not turn or self._turn_process is not process:
            return
        try:
            async with asyncio.timeout(INTERRUPT_TIMEOUT_SECONDS):
                await process.request("interrupt")
        except (ProcessGone, ControlError, TimeoutError) as exc:
            log.info("interrupt of pid %d failed: %s", process.pid, exc)

    async def _answer(self, process: ClaudeProcess, request: ControlRequest) -> None:
        if request.subtype == "can_use_tool":
            body = await self.permissions.ask(
                request,
                self.attachment,
                self._running.id if self._running else "",
                process,
                relay=self.profile.permission_prompts == "caller",
            )
            if body is None:  # withdrawn: the CLI expects no answer
                return
            answer = protocol.control_success(request.request_id, body)
        else:
            answer = control_requests.answer(self.id, request)
        # If the process is gone, its exit shows up as ProcessExited anyway.
        with contextlib.suppress(ProcessGone):
            await process.send(answer)

    # -- the process ---------------------------------------------------------------

    def _adopt(self, process: ClaudeProcess) -> None:
        self.process_turns = 0
        self._framing = Framing()
        process.listener = functools.partial(self._route, process)

    async def ensure_process(self, progress: OnProgress | None = None) -> bool:
        """A live process, resuming the conversation in a new one if needed; True if new."""
        return await self._processes.ensure(lambda: self._source.resume_process(self, progress))

    def release_process(self) -> ClaudeProcess | None:
        """Take the process from the session at once (succession.py); the caller ends it."""
        return self._processes.release()

    async def stop(self) -> None:
        """End the process, keep the conversation (idle timeout, recycling, shutdown)."""
        self.first_turn_done.set()  # no first turn on this process to keep the refill for
        await self._processes.end(close=False)

    async def close(self) -> int:
        """End the session for good: turns still queued end with an error result. Returns
        the process's exit code once all it held is free again (CloseSession: its uid is
        back)."""
        self.first_turn_done.set()
        return await self._processes.end(close=True)


async def _emit(turn: Turn, event: Event) -> None:
    if (pending := turn.emit(event)) is not None:
        await pending
