"""Processes starting at once, bounded: a burst of new sessions is started a few at a time.

A Claude Code process burns ~0.4 s of CPU starting up. Started all at once on a small
machine (a burst of 32 opens), every one of them, and every hot turn beside them, slows
to a crawl; started `--max-concurrent-spawns` at a time (the core count by default), each
is ready sooner and the burst as a whole ends sooner. Callers wait in one FIFO line, told
their place as it changes; pool refills wait behind every caller.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

# Told a place in line: (place, how many wait), 1-based.
OnPlace = Callable[[int, int], Awaitable[None]]


class _Waiter:
    __slots__ = ("granted", "wake")

    def __init__(self) -> None:
        self.granted = False
        self.wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def notify(self) -> None:
        if not self.wake.done():
            self.wake.set_result(None)


class SpawnQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._callers: collections.deque[_Waiter] = collections.deque()
        self._refills: collections.deque[_Waiter] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._callers) + len(self._refills)

    @contextlib.asynccontextmanager
    async def place(
        self, on_place: OnPlace | None = None, refill: bool = False
    ) -> AsyncIterator[None]:
        """Hold one of the `limit` places while a process starts."""
        await self._acquire(on_place, refill)
        try:
            yield
        finally:
            self.running -= 1
            self._advance()

    async def _acquire(self, on_place: OnPlace | None, refill: bool) -> None:
        ahead = self.waiting if refill else len(self._callers)
        if self.running < self.limit and not ahead:
            self.running += 1
            return
        waiter = _Waiter()
        (self._refills if refill else self._callers).append(waiter)
        try:
            while not waiter.granted:
                if on_place is not None:
                    await on_place(self._place_of(waiter), self.waiting)
                if not waiter.granted:
                    await waiter.wake
                    waiter.wake = asyncio.get_running_loop().create_future()
        except BaseException:
            if waiter.granted:  # granted as it was cancelled: give the place on
                self.running -= 1
            else:
                (self._refills if refill else self._callers).remove(waiter)
            self._advance()
            raise

    def _place_of(self, waiter: _Waiter) -> int:
        line = [*self._callers, *self._refills]
        return line.index(waiter) + 1 if waiter in line else 1

    def _advance(self) -> None:
        """Grant free places in order; tell everyone still waiting that the line moved."""
        while self.running < self.limit and (self._callers or self._refills):
            waiter = (self._callers or self._refills).popleft()
            waiter.granted = True
            self.running += 1
            waiter.notify()
        for waiter in itertools.chain(self._callers, self._refills):
            waiter.notify()
