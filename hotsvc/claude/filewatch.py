"""Waiting until a transcript holds an entry: a cheap check, then inotify, never a poll.

With `--session-mirror` Claude Code has written a turn's entries before it prints the
turn's `result`, so the first check nearly always passes; without it (or on a slow disk)
CLI 2.1.197 writes them 40-90 ms later, and the wait wakes on the file's own writes.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from pathlib import Path
from types import TracebackType

IN_MODIFY = 0x002
IN_CREATE = 0x100
IN_MOVED_TO = 0x080
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_libc = ctypes.CDLL(None, use_errno=True)


def holds(path: Path, marker: bytes, offset: int = 0) -> bool:
    """Whether `path` has `marker` at or after byte `offset`."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return marker in file.read()
    except FileNotFoundError:
        return False


class DirectoryWatch:
    """Wakes whenever a file in `directory` is created, moved in or written."""

    def __init__(self, directory: Path) -> None:
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = IN_MODIFY | IN_CREATE | IN_MOVED_TO
        if _libc.inotify_add_watch(self._fd, os.fsencode(directory), mask) < 0:
            errno = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(errno, f"inotify_add_watch {directory}")

    def __enter__(self) -> DirectoryWatch:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        os.close(self._fd)

    async def changed(self, max_wait: float) -> bool:
        """True when something changed within `max_wait` seconds."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        loop.add_reader(self._fd, wake)
        try:
            await asyncio.wait_for(woken, max_wait)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self._fd)
        try:
            while os.read(self._fd, 4096):  # drain the events: only the wake-up counts
                pass
        except BlockingIOError:
            pass
        return True


async def wait_until_holds(path: Path, marker: bytes, offset: int, max_wait: float) -> bool:
    """Whether `path` came to hold `marker` (after `offset`) within `max_wait` seconds."""
    if holds(path, marker, offset):
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    with DirectoryWatch(path.parent) as watch:  # before the check: no write slips between
        while not holds(path, marker, offset):
            left = deadline - loop.time()
            if left <= 0 or not await watch.changed(left):
                return holds(path, marker, offset)
    return True
