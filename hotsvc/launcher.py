"""Starting Claude Code processes, and owning each one until it has exited.

Every process runs its reader under the launcher's TaskGroup and holds a capacity Slot
and its own TMPDIR until it is gone; the store records it meanwhile, so a service killed
without cleaning up can end its orphans at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass

from hotsvc import logs, metrics
from hotsvc.accounts import Accounts
from hotsvc.capacity import Slot
from hotsvc.claude import launch
from hotsvc.claude.process import ClaudeProcess, ControlError, ProcessGone
from hotsvc.containment import Cage, Containment
from hotsvc.errors import ServiceError, SpawnFailed
from hotsvc.placement import Place, Placement
from hotsvc.profiles import Profile
from hotsvc.settings import ServiceConfig
from hotsvc.spawnqueue import OnPlace, SpawnQueue
from hotsvc.store import SessionStore
from hotsvc.tmpdirs import ChildTmpDirs
from hotsvc.workspaces import Workspaces

log = logging.getLogger(__name__)


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
    def __init__(
        self,
        config: ServiceConfig,
        store: SessionStore,
        containment: Containment,
        tmpdirs: ChildTmpDirs,
        accounts: Accounts | None = None,
        workspaces: Workspaces | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._containment = containment
        self._tmpdirs = tmpdirs
        self.placement = Placement(
            config, accounts or Accounts(), workspaces or Workspaces(), tmpdirs
        )
        self.spawns = SpawnQueue(config.max_concurrent_spawns or os.cpu_count() or 2)
        self._processes: set[ClaudeProcess] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._stopped = asyncio.Event()
        self.stats = SpawnStats()

    async def run(self) -> None:
        """Own every process's reader until stop(); then kill whatever is left.

        Runs after the orphan sweeps, so no child of a previous run still uses the
        temporary directories it empties.
        """
        if swept := self._tmpdirs.open():
            log.info("removed %d temporary directories left by a previous run", swept)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._stopped.wait()
                for process in self._processes:
                    process.kill()
        finally:
            self._tmpdirs.close()

    def stop(self) -> None:
        self._stopped.set()

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def processes(self) -> list[ClaudeProcess]:
        return list(self._processes)

    async def spawn(
        self,
        profile: Profile,
        slot: Slot,
        *,
        session_id: str = "",
        resume: bool = False,
        prime: bool = False,
        fork_of: str = "",
        cwd: str = "",
        refill: bool = False,
        on_place: OnPlace | None = None,
    ) -> ClaudeProcess:
        """A new process holding `slot`, for `session_id` (a fresh id if empty); with
        `fork_of`, a copy of that session's conversation under the new id. It runs in
        `cwd` (a resumed session's directory), else in a new workspace or the profile's
        cwd (hotsvc.placement).

        Every spawn holds a place in the SpawnQueue until the CLI has started (answered
        `initialize`), so a burst of opens starts a few processes at a time; a caller
        waiting for a place is told it (`on_place`), pool refills (`refill`) wait behind
        every caller. Primed spawns (the warm pools') also load what a first turn would.
        """
        started = time.monotonic()
        self.stats.in_flight += 1
        try:
            async with self.spawns.place(on_place, refill):
                process = await self._start(
                    profile, slot, session_id or str(uuid.uuid4()), resume, fork_of, cwd
                )
                await self._prime(process, full=prime)
        except BaseException:
            self.stats.failed += 1
            if not self.stopping:  # a spawn cut short by shutdown is no failure to alert on
                metrics.spawn_failed(profile.name)
            raise
        finally:
            self.stats.in_flight -= 1
        ready = time.monotonic() - started
        self.stats.spawned += 1
        self.stats.total_ready_seconds += ready
        metrics.spawned(profile.name, ready)
        return process

    async def _start(
        self, profile: Profile, slot: Slot, session_id: str, resume: bool, fork_of: str, cwd: str
    ) -> ClaudeProcess:
        """Start a process the launcher owns from the moment it exists.

        Starting runs in the launcher's own task: a caller cancelled meanwhile (a client
        gone, a pool stopping) must not leave a child nobody owns; its process is retired.
        """
        if self._tasks is None or self._stopped.is_set():
            slot.release()
            raise SpawnFailed("hotsvc is stopping and starts no process")
        starting = self._tasks.create_task(
            _outcome(self._start_owned(profile, slot, session_id, resume, fork_of, cwd))
        )
        try:
            started = await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(_retire_if_started)
            raise
        if isinstance(started, Exception):
            raise started
        return started

    async def _start_owned(
        self,
        profile: Profile,
        slot: Slot,
        session_id: str,
        resume: bool,
        fork_of: str,
        cwd: str,
    ) -> ClaudeProcess:
        assert self._tasks is not None
        # The process's reader and owner tasks, started below, log with its ids.
        logs.bind(session_id=session_id, profile=profile.name)
        try:
            place = await self.placement.prepare(profile, session_id, cwd)
        except BaseException:
            slot.release()
            raise
        cage = self._containment.cage()
        command = launch.argv(self._config, profile, session_id, resume, fork_of, place.setpriv())
        env = launch.child_environment(self._config, profile, place.cwd, place.tmpdir)
        try:
            process = await ClaudeProcess.spawn(
                cage.wrap(command),
                session_id=session_id,
                env={**env, **cage.env},
                cwd=place.cwd,
                line_limit=self._config.max_line_bytes,
            )
        except OSError as exc:
            cage.remove()
            slot.release()
            await self.placement.release(place, place.workspace)
            claude = self._config.claude_cmd[0]
            raise SpawnFailed(
                f"cannot start Claude Code ({claude}): {exc}; check --claude-cmd / "
                "HOTSVC_CLAUDE_CMD and the profile's cwd",
                metadata={"profile": profile.name, "command": claude},
            ) from exc
        process.workspace = place.workspace
        self._processes.add(process)
        self._tasks.create_task(self._own(process, slot, cage, place), name=f"claude-{process.pid}")
        try:
            await self._store.process_started(process.pid)
        except ServiceError as exc:  # the process runs on; only a crash would orphan it
            log.warning("pid %d not recorded for the orphan sweep: %s", process.pid, exc)
        return process

    async def _own(self, process: ClaudeProcess, slot: Slot, cage: Cage, place: Place) -> None:
        try:
            await process.run()
        finally:
            try:
                # Tools the CLI started live in process groups of their own: none outlives it.
                cage.kill()
                self._processes.discard(process)
                self._containment.reap(cage)
                cage.remove()
                slot.release()
                # Its workspace too, if no session took it over meanwhile.
                await self.placement.release(place, process.workspace)
            finally:
                process.given_back()  # even if a step failed: nobody waits forever
            try:
                await self._store.process_ended(process.pid)
            except ServiceError as exc:  # the next start's sweep drops the row
                log.warning("pid %d's end not recorded: %s", process.pid, exc)

    async def _prime(self, process: ClaudeProcess, full: bool = True) -> None:
        """Have the CLI finish its start-up work now, not on the session's first turn.

        `initialize` is the SDK's handshake: an answer means the process is up. A
        `get_context_usage` summary then makes it load what a first turn would (measured
        here: a first turn ~117 ms instead of ~140 ms) with no API call and nothing added
        to the conversation. A CLI without it is still ready, just less primed. Only the
        handshake (`full=False`) for a caller's cold spawn, whose first turn follows.
        """
        try:
            async with asyncio.timeout(self._config.ready_timeout):
                await process.request("initialize", hooks=None)
                if not full:  # a caller's own spawn: its first turn comes right away
                    return
                with contextlib.suppress(ControlError):
                    await process.request("get_context_usage", detail="summary")
        except (ProcessGone, ControlError, TimeoutError) as exc:
            process.retire()
            await process.wait_done()  # for the whole stderr tail
            raise SpawnFailed(
                f"Claude Code process {process.pid} did not start: {exc}; "
                f"stderr: {process.stderr_tail() or '(empty)'}",
                metadata={"pid": process.pid},
            ) from exc
        except BaseException:
            process.retire()  # cancelled: no leaked child
            raise


async def _outcome(start: Awaitable[ClaudeProcess]) -> ClaudeProcess | Exception:
    """A start's process or its error: raised in the launcher's TaskGroup, a failed spawn
    (a bad --claude-cmd, a missing cwd) would end the group and every process with it."""
    try:
        return await start
    except Exception as exc:
        return exc


def _retire_if_started(starting: asyncio.Task[ClaudeProcess | Exception]) -> None:
    if not starting.cancelled() and isinstance(process := starting.result(), ClaudeProcess):
        process.retire()
