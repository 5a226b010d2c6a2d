"""A profile's warm pool: idle, primed processes waiting for a new session to take one."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hotsvc import background
from hotsvc.config import Profile
from hotsvc.errors import ServiceError
from hotsvc.launcher import Launcher
from hotsvc.process import ClaudeProcess

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
REFILL_HOLD_SECONDS = 2.0


class WarmPool:
    """Keeps `profile.pool_size` idle processes ready; refills in the background."""

    def __init__(self, profile: Profile, launcher: Launcher) -> None:
        self.profile = profile
        self.target = profile.pool_size
        self._launcher = launcher
        self._idle: list[ClaudeProcess] = []
        self._spawning = 0
        self._failures = 0  # consecutive failed spawns, for backoff
        self._wake = asyncio.Event()
        self._refill_task: asyncio.Task[None] | None = None
        self._spawn_tasks: set[asyncio.Task[None]] = set()
        self.filled = asyncio.Event()  # set once the pool first reached its target

    @property
    def size(self) -> int:
        return len(self._idle)

    def idle_processes(self) -> list[ClaudeProcess]:
        return list(self._idle)

    def start(self) -> None:
        if self.target == 0:
            self.filled.set()
        self._refill_task = asyncio.create_task(self._refill(), name=f"pool-{self.profile.name}")

    def take(self, hold_refill: asyncio.Event | None = None) -> ClaudeProcess | None:
        """An idle live process, or None; dead ones are dropped, never handed out.

        `hold_refill` defers the refill until it is set (at most REFILL_HOLD_SECONDS):
        on a small machine a spawn's start-up burst would otherwise slow down the very
        first turn the warm process was kept for.
        """
        while self._idle:
            process = self._idle.pop()
            if process.alive:
                background.spawn(self._refill_after(hold_refill))
                return process
        self._wake.set()
        return None

    async def _refill_after(self, hold: asyncio.Event | None) -> None:
        if hold is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hold.wait(), REFILL_HOLD_SECONDS)
        self._wake.set()

    def give_way(self) -> bool:
        """Close one idle process so a session can have its slot; False if none is idle."""
        process = self.take()  # its slot goes to a session: refilling at once is moot
        if process is None:
            return False
        background.spawn(process.close())
        return True

    async def close(self) -> None:
        if self._refill_task:
            self._refill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill_task
        for task in list(self._spawn_tasks):
            task.cancel()
        await asyncio.gather(*self._spawn_tasks, return_exceptions=True)
        idle, self._idle = self._idle, []
        await asyncio.gather(*(p.close() for p in idle))

    async def _refill(self) -> None:
        while True:
            self._wake.clear()
            deficit = self.target - len(self._idle) - self._spawning
            if deficit > 0 and self._launcher.pool_may_spawn():
                self._spawning += 1
                task = asyncio.create_task(self._spawn_one())
                self._spawn_tasks.add(task)
                task.add_done_callback(self._spawn_tasks.discard)
                continue
            await self._changed()

    async def _changed(self) -> None:
        """Wait until a process is taken, spawned or dies, or a slot frees up."""
        wake = asyncio.create_task(self._wake.wait())
        room = asyncio.create_task(self._launcher.changed.wait())
        try:
            await asyncio.wait({wake, room}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            room.cancel()
        self._launcher.changed.clear()

    async def _spawn_one(self) -> None:
        try:
            process = await self._launcher.spawn(self.profile, for_pool=True)
        except ServiceError as exc:
            self._failures += 1
            delay = min(0.5 * 2 ** (self._failures - 1), MAX_BACKOFF_SECONDS)
            log.error("warm pool %r: %s (retrying in %.1fs)", self.profile.name, exc, delay)
            # Holding this spawn's place while backing off keeps a broken command from spinning.
            await asyncio.sleep(delay)
        else:
            self._failures = 0
            self._idle.append(process)
            self._launcher.changed.set()  # a session waiting for a slot may reclaim it
            background.spawn(self._replace_when_dead(process))
            if len(self._idle) >= self.target:
                self.filled.set()
        finally:
            self._spawning -= 1
            self._wake.set()

    async def _replace_when_dead(self, process: ClaudeProcess) -> None:
        await process.wait_exited()
        if process in self._idle:
            self._idle.remove(process)
            self._launcher.stats.replaced += 1
            log.warning("warm process %d died while idle; replacing it", process.pid)
            self._wake.set()
