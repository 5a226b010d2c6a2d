"""A profile's warm pool: idle, primed processes waiting for a new session to take one."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from hotsvc.capacity import Capacity, Slot
from hotsvc.claude.events import Event, ProcessExited
from hotsvc.claude.process import ClaudeProcess, Listener
from hotsvc.errors import ServiceError
from hotsvc.launcher import Launcher
from hotsvc.profiles import Profile

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
REFILL_HOLD_SECONDS = 2.0
# The elastic pool's memory: its target is the new sessions asked of it this long ago or
# later (between pool_min and pool_max), so a sustained burst finds processes warm.
DEMAND_WINDOW_SECONDS = 10.0


class WarmPool:
    """Keeps `target` idle processes ready; refills in the background.

    Elastic between the profile's pool_min and pool_max: every new session asked of the
    pool (warm or not) counts for DEMAND_WINDOW_SECONDS, and the target is that count,
    bounded; past a burst the pool shrinks back, one idle process at a time.
    """

    def __init__(self, profile: Profile, launcher: Launcher, capacity: Capacity) -> None:
        self.profile = profile
        self.low, self.high = profile.pool_bounds()
        self.target = self.low
        self._demand: collections.deque[float] = collections.deque()  # when sessions asked
        self._launcher = launcher
        self._capacity = capacity
        self._idle: list[ClaudeProcess] = []
        self._closed = False
        self._spawning = 0
        self._failures = 0  # consecutive failed spawns, for backoff
        self._hold: asyncio.Event | None = None  # a first turn the refill waits for
        self._wake = asyncio.Event()
        self.filled = asyncio.Event()  # set once the pool first reached its target
        capacity.observe(self._wake.set)

    @property
    def size(self) -> int:
        return len(self._idle)

    def idle_pids(self) -> list[int]:
        return [p.pid for p in self._idle]

    async def run(self) -> None:
        """Refill until cancelled; spawns under way belong to this task's group."""
        if self.low == 0:
            self.filled.set()
        async with asyncio.TaskGroup() as spawns:
            while True:
                await self._wait_for_hold()
                self._wake.clear()
                self._retarget()
                while self._wanted() > 0 and (slot := self._capacity.try_acquire()):
                    self._spawning += 1
                    spawns.create_task(self._spawn_one(slot))
                if len(self._idle) > self.target:  # the burst is over: one fewer
                    self._idle.pop(0).retire()
                if self.target > self.low or len(self._idle) > self.target:
                    # the demand ages out of the window: look again then
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._next_change())
                else:
                    await self._wake.wait()

    def _wanted(self) -> int:
        """How many more processes to start now (none once closed)."""
        return 0 if self._closed else self.target - len(self._idle) - self._spawning

    def _retarget(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        while self._demand and self._demand[0] <= now - DEMAND_WINDOW_SECONDS:
            self._demand.popleft()
        self.target = min(self.high, max(self.low, len(self._demand)))

    def _next_change(self) -> float:
        if not self._demand:
            return DEMAND_WINDOW_SECONDS
        return max(0.01, self._demand[0] + DEMAND_WINDOW_SECONDS - time.monotonic())

    async def _wait_for_hold(self) -> None:
        """A session's first turn runs before the refill's start-up burst slows it down."""
        hold, self._hold = self._hold, None
        if hold is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hold.wait(), REFILL_HOLD_SECONDS)

    def take(self, hold_refill: asyncio.Event | None = None) -> ClaudeProcess | None:
        """An idle live process, or None; dead ones are dropped, never handed out.

        `hold_refill` defers the refill until it is set (at most REFILL_HOLD_SECONDS):
        on a small machine a spawn's start-up burst would otherwise slow down the very
        first turn the warm process was kept for.
        """
        if self.high > self.low:
            self._demand.append(time.monotonic())
            self._retarget()
        while self._idle:
            process = self._idle.pop()
            if process.alive:
                self._hold = hold_refill
                self._wake.set()
                return process
        self._wake.set()
        return None

    def give_way(self) -> bool:
        """Retire one idle process so a session can have its slot; False if none is idle."""
        while self._idle:
            process = self._idle.pop()
            if process.alive:
                process.retire()
                return True
        return False

    def close(self) -> None:
        """Retire every idle process, and each refill under way once it is ready (the
        refill task is cancelled by its owner, after the sessions have stopped)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for process in idle:
            process.retire()

    async def _spawn_one(self, slot: Slot) -> None:
        try:
            process = await self._launcher.spawn(self.profile, slot, prime=True, refill=True)
        except ServiceError as exc:
            if self._launcher.stopping:  # shutting down: expected, not an error
                log.info("warm pool %r: no refill while stopping", self.profile.name)
                return
            self._failures += 1
            delay = min(0.5 * 2 ** (self._failures - 1), MAX_BACKOFF_SECONDS)
            log.error("warm pool %r: %s (retrying in %.1fs)", self.profile.name, exc, delay)
            # Holding this spawn's place while backing off keeps a broken command from spinning.
            await asyncio.sleep(delay)
        else:
            self._failures = 0
            if self._closed:  # a refill that started before close() is not kept
                process.retire()
                return
            process.listener = self._listener(process)
            self._idle.append(process)
            self._capacity.changed()  # an open waiting for a slot may reclaim this one
            if len(self._idle) >= self.low:
                self.filled.set()
        finally:
            self._spawning -= 1
            self._wake.set()

    def _listener(self, process: ClaudeProcess) -> Listener:
        def on_event(event: Event) -> None:
            if isinstance(event, ProcessExited) and process in self._idle:
                self._idle.remove(process)
                self._launcher.stats.replaced += 1
                log.warning(
                    "warm process %d died while idle (exit %d%s); replacing it",
                    process.pid,
                    event.returncode,
                    f", stderr: {event.stderr_tail[-500:]}" if event.stderr_tail else "",
                )
                self._wake.set()

        return on_event
