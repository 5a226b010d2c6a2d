"""Slots for live processes under `--max-sessions`, and one fair queue for the opens that wait.

Every live process (warm or in a session) holds a Slot until it exits. An open that finds
no room waits in arrival order; it is woken by everything that can free room (a process
exits, a spawn finishes, a session detaches or closes) and asks the reclaim policy to
evict an idle process for it, so idle sessions give way before anyone is refused. A wait
ends by the caller's deadline at the latest, with CapacityExhausted. Warm pools take only
room that no open is waiting for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from hotsvc.errors import CapacityExhausted

log = logging.getLogger(__name__)

# Evicts one idle process (it exits soon, freeing its slot); False if nothing is evictable.
Reclaim = Callable[[], bool]
# Told the caller's place in the queue (1 = next) whenever it changes.
OnPlace = Callable[[int, int], Awaitable[None]]


class Slot:
    """One live process's place; released exactly once, when the process is gone."""

    def __init__(self, capacity: Capacity) -> None:
        self._capacity: Capacity | None = capacity

    def release(self) -> None:
        capacity, self._capacity = self._capacity, None
        if capacity is not None:
            capacity._released()


class _Waiter:
    def __init__(self) -> None:
        self.woken = asyncio.Event()


class Capacity:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0 = no cap
        self.live = 0
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._freeing = 0  # evicted processes not yet exited, each meant for a waiter
        self._observers: list[Callable[[], None]] = []

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def has_room(self) -> bool:
        return not self.limit or self.live < self.limit

    def observe(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever room may have freed up (warm pools refill on it)."""
        self._observers.append(callback)

    def try_acquire(self) -> Slot | None:
        """A slot now if there is room no waiting open needs, else None (for warm pools)."""
        if self._queue or not self.has_room():
            return None
        return self._take()

    async def acquire(
        self, max_wait: float, reclaim: Reclaim, on_place: OnPlace | None = None
    ) -> Slot:
        """A slot for a session: at once, or in turn within `max_wait` seconds."""
        if not self._queue and self.has_room():
            return self._take()
        waiter = _Waiter()
        self._queue.append(waiter)
        place = 0
        try:
            async with asyncio.timeout(max_wait):
                while True:
                    if self._queue[0] is waiter and self.has_room():
                        self._queue.popleft()
                        self.changed()  # the next one is at the head now
                        return self._take()
                    now = self._place(waiter)
                    # One eviction in flight per waiter ahead of and including this one.
                    if self._freeing < now and reclaim():
                        self._freeing += 1
                    if on_place is not None and place != now:
                        place = now
                        await on_place(place, len(self._queue))
                    waiter.woken.clear()
                    await waiter.woken.wait()
        except TimeoutError:
            raise CapacityExhausted(
                f"no session slot came free within {max_wait:g}s: all {self.limit} are held "
                "by busy or attached sessions; close an idle session with CloseSession, or "
                "retry later",
                metadata={
                    "maxSessions": self.limit,
                    "liveProcesses": self.live,
                    "waiting": len(self._queue),
                },
            ) from None
        finally:
            if waiter in self._queue:
                self._queue.remove(waiter)
                self.changed()

    def _place(self, waiter: _Waiter) -> int:
        return self._queue.index(waiter) + 1

    def changed(self) -> None:
        """Room may be free or reclaimable now: every waiter looks again."""
        for waiter in self._queue:
            waiter.woken.set()
        if not self._queue:
            for callback in self._observers:
                callback()

    def _take(self) -> Slot:
        self.live += 1
        return Slot(self)

    def _released(self) -> None:
        self.live -= 1
        self._freeing = max(0, self._freeing - 1)
        self.changed()


class StreamLimit:
    """`--max-streams`: the streams attached at once (0 = no cap); one more is refused
    with CapacityExhausted before it takes anything else."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.attached = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.limit and self.attached >= self.limit:
            raise CapacityExhausted(
                f"hotsvc already serves {self.limit} streams, its --max-streams; retry "
                "later, end a stream you hold, or use another replica",
                metadata={"maxStreams": self.limit},
            )
        self.attached += 1
        try:
            yield
        finally:
            self.attached -= 1
