"""The turn watchdog: a turn silent for too long is interrupted, then its process killed.

Silence while a tool runs (a `tool_use` whose `tool_result` has not come yet) is a build
or a test doing its work, not a hung CLI: it gets --tool-timeout instead of
--turn-inactivity-timeout, and the caller gets a `tool_running` progress event every
heartbeat interval meanwhile. Every step is bounded, so a stuck turn ends within its
timeout plus a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from hotsvc import metrics
from hotsvc.claude.events import (
    AssistantMessage,
    Event,
    ProcessExited,
    Result,
    SystemEvent,
    ToolResult,
    ToolUseBlock,
)
from hotsvc.claude.process import ClaudeProcess
from hotsvc.settings import ServiceConfig
from hotsvc.turn import hotsvc_result

log = logging.getLogger(__name__)

# How long an interrupt may take to end a turn before the process is killed.
INTERRUPT_TIMEOUT_SECONDS = 3.0
KILL_TIMEOUT_SECONDS = 2.0

Emit = Callable[[Event], Awaitable[None]]
Ending = Result | ProcessExited


class Watchdog:
    def __init__(self, config: ServiceConfig, interrupt: Callable[[ClaudeProcess], None]) -> None:
        self._config = config
        self._interrupt = interrupt
        self._tools: dict[str, str] = {}  # running tool_use id -> tool name
        self._tools_changed: asyncio.Future[None] | None = None  # wakes watch() to re-plan

    @property
    def tools_running(self) -> bool:
        return bool(self._tools)

    def observe(self, event: Event) -> None:
        """Keep track of the tools running in the turn (called for each of its events)."""
        running = bool(self._tools)
        if isinstance(event, AssistantMessage):
            for block in event.content:
                if isinstance(block, ToolUseBlock):
                    self._tools[block.id] = block.name
        elif isinstance(event, ToolResult):
            self._tools.pop(event.tool_use_id, None)
        changed = self._tools_changed
        if bool(self._tools) != running and changed is not None and not changed.done():
            changed.set_result(None)

    async def watch(
        self, process: ClaudeProcess, ended: asyncio.Future[Ending], emit: Emit
    ) -> Ending:
        """The turn's end, or the watchdog's after stopping a silent turn.

        One wake-up future and one timer per quiet window, not per event: the process
        stamps `last_output` as lines come, and the timer, when it fires, re-arms from
        the last stamp if the turn was not quiet after all."""
        self._tools.clear()
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        interval = self._config.heartbeat_interval
        next_progress = started + interval
        while True:
            now = time.monotonic()
            quiet_since = max(process.last_output, started)
            limit = self._limit()
            if quiet_since + limit <= now:
                return await self._stop(process, ended, emit, limit)
            wake_at = quiet_since + limit
            if self._tools:
                wake_at = min(wake_at, next_progress)
            woken = self._tools_changed = loop.create_future()
            timer = loop.call_at(loop.time() + max(0.0, wake_at - now), _wake, woken)
            ended.add_done_callback(woken_by_end := _waker(woken))
            try:
                await woken
            finally:
                timer.cancel()
                ended.remove_done_callback(woken_by_end)
            if ended.done():
                return ended.result()
            if self._tools and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + interval
                names = ", ".join(sorted(set(self._tools.values())))
                quiet = time.monotonic() - quiet_since
                await emit(
                    SystemEvent("tool_running", status=f"{names} running, quiet for {quiet:.0f}s")
                )

    def _limit(self) -> float:
        if self._tools:
            return self._config.tool_timeout
        return self._config.turn_inactivity_timeout

    async def _stop(
        self, process: ClaudeProcess, ended: asyncio.Future[Ending], emit: Emit, limit: float
    ) -> Result:
        what = "a tool" if self._tools else "Claude Code"
        await emit(SystemEvent("watchdog", status=f"no output for {limit:g}s: interrupting"))
        self._interrupt(process)
        done, _ = await asyncio.wait((ended,), timeout=INTERRUPT_TIMEOUT_SECONDS)
        if done and isinstance(ending := ended.result(), Result):
            return ending
        process.kill()
        metrics.watchdog_killed()
        log.warning(
            "pid %d: %s silent for %gs did not answer an interrupt: killed; stderr tail:\n%s",
            process.pid,
            what,
            limit,
            process.stderr_tail() or "(empty)",
        )
        await asyncio.wait((ended,), timeout=KILL_TIMEOUT_SECONDS)
        return hotsvc_result(
            "watchdog_timeout",
            f"{what} (pid {process.pid}) produced no output for {limit:g}s and Claude Code did "
            "not answer an interrupt, so it was killed; the next turn resumes the conversation",
        )


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _waker(future: asyncio.Future[None]) -> Callable[[asyncio.Future[Ending]], None]:
    return lambda _: _wake(future)
