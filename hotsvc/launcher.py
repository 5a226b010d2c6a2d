"""Starting Claude Code processes: command lines, the live-process cap, spawn statistics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from hotsvc import background
from hotsvc.config import BASE_ARGS, Profile, ServiceConfig
from hotsvc.errors import CapacityExhausted, SpawnFailed
from hotsvc.process import ClaudeProcess, ControlError, ProcessGone
from hotsvc.registry import Registry

log = logging.getLogger(__name__)

# Children die with the service even when it is SIGKILLed: the kernel's parent-death
# signal, set by util-linux's setpriv right before it execs the CLI (same pid), so no
# preexec_fn runs in a forked copy of this multi-threaded process.
_SETPRIV = shutil.which("setpriv")
PARENT_DEATH_SIGNAL: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()


@dataclass
class SpawnStats:
    spawned: int = 0
    failed: int = 0
    in_flight: int = 0
    replaced: int = 0
    warm_starts: int = 0
    cold_starts: int = 0
    total_ready_seconds: float = 0.0

    @property
    def mean_ready_seconds(self) -> float:
        return self.total_ready_seconds / self.spawned if self.spawned else 0.0


class Launcher:
    """Spawns processes for profiles; every live process holds one of `max_sessions` slots."""

    def __init__(self, config: ServiceConfig, registry: Registry) -> None:
        self._config = config
        self._registry = registry
        self._spawn_slots = asyncio.Semaphore(config.max_concurrent_spawns)
        self.live = 0
        self.stats = SpawnStats()
        # Set when a slot frees up or a warm process becomes ready.
        self.changed = asyncio.Event()
        self._sessions_waiting = 0
        # Asked to give up a warm process when a session needs its slot (set by the manager).
        self.reclaim: Callable[[], bool] = lambda: False

    @property
    def max_live(self) -> int:
        return self._config.max_sessions

    def has_room(self) -> bool:
        return not self.max_live or self.live < self.max_live

    def pool_may_spawn(self) -> bool:
        """Pools refill only into room no waiting session needs."""
        return self.has_room() and not self._sessions_waiting

    async def _reserve_slot(self, for_pool: bool) -> None:
        # A session may take the slot of an idle warm process: those give way first.
        while not self.has_room():
            # A warm process still starting will be reclaimable once ready: wait for it.
            if for_pool or not (self.reclaim() or self.stats.in_flight):
                raise CapacityExhausted(
                    f"all {self.max_live} session slots are in use by live sessions; "
                    "close an idle session with CloseSession or retry later",
                    metadata={"maxSessions": self.max_live, "liveProcesses": self.live,
                              "spawning": self.stats.in_flight},
                )
            self._sessions_waiting += 1
            try:
                self.changed.clear()
                await self.changed.wait()
            finally:
                self._sessions_waiting -= 1
        self.live += 1

    def argv(self, profile: Profile, session_id: str, resume: bool) -> list[str]:
        # --resume restores the transcript under the same id; a session with no turn yet
        # has no transcript, and starts afresh under its id.
        session = ["--resume" if resume else "--session-id", session_id]
        return [*PARENT_DEATH_SIGNAL, *self._config.claude_cmd, *BASE_ARGS, *session,
                *profile.cli_args()]

    async def spawn(self, profile: Profile, *, for_pool: bool, session_id: str = "",
                    resume: bool = False) -> ClaudeProcess:
        """A new process for `session_id` (a fresh id if empty), resuming its transcript.

        Pool spawns are bounded in number and primed (answer `initialize`) before they
        count as ready. A caller's cold spawn skips both: it is waited on, and its first
        turn does the start-up work anyway.
        """
        await self._reserve_slot(for_pool)
        started = time.monotonic()
        self.stats.in_flight += 1
        try:
            async with self._spawn_slots if for_pool else contextlib.nullcontext():
                process = await self._start_holding_slot(
                    profile, session_id or str(uuid.uuid4()), resume)
                if for_pool:
                    await self._prime(process)
        except BaseException:
            self.stats.failed += 1
            raise
        finally:
            self.stats.in_flight -= 1
        self.stats.spawned += 1
        self.stats.total_ready_seconds += time.monotonic() - started
        return process

    async def _start_holding_slot(self, profile: Profile, session_id: str,
                                  resume: bool) -> ClaudeProcess:
        """Start a process; its slot is released when it exits (or now, if it never ran)."""
        try:
            process = await self._start(profile, session_id, resume)
        except BaseException:
            self._release()
            raise
        self._registry.process_started(process.pid)
        background.spawn(self._release_on_exit(process))
        return process

    async def _start(self, profile: Profile, session_id: str, resume: bool) -> ClaudeProcess:
        argv = self.argv(profile, session_id, resume)
        try:
            return await ClaudeProcess.spawn(
                argv,
                session_id=session_id,
                env={**os.environ, **self._config.env, **profile.env},
                cwd=profile.cwd or None,
                line_limit=self._config.line_limit,
            )
        except OSError as exc:
            raise SpawnFailed(
                f"cannot start Claude Code ({argv[0]}): {exc}; check --claude-cmd / "
                "HOTSVC_CLAUDE_CMD and the profile's cwd",
                metadata={"profile": profile.name, "command": argv[0]},
            ) from exc

    async def _prime(self, process: ClaudeProcess) -> None:
        """Have the CLI finish its start-up work now, not on the session's first turn.

        `initialize` is the SDK's handshake: an answer means the process is up. A
        `get_context_usage` summary then makes it load what a first turn would (measured
        here: a first turn ~117 ms instead of ~140 ms) with no API call and nothing added
        to the conversation. A CLI without it is still ready, just less primed.
        """
        try:
            async with asyncio.timeout(self._config.ready_timeout):
                await process.request("initialize", hooks=None)
                with contextlib.suppress(ControlError):
                    await process.request("get_context_usage", detail="summary")
        except BaseException as exc:
            await asyncio.shield(process.close())  # failed or cancelled: no leaked child
            if not isinstance(exc, ProcessGone | ControlError | TimeoutError):
                raise
            raise SpawnFailed(
                f"Claude Code process {process.pid} did not start: {exc}; "
                f"stderr: {process.stderr_tail() or '(empty)'}",
                metadata={"pid": process.pid},
            ) from exc

    async def _release_on_exit(self, process: ClaudeProcess) -> None:
        await process.wait_exited()
        self._registry.process_ended(process.pid)
        self._release()

    def _release(self) -> None:
        self.live -= 1
        self.changed.set()
