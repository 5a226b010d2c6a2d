"""A conversation's processes, one after another: never two at once.

A conversation outlives its processes. One is released (evicted, recycled, its lease lost)
and goes on exiting while the session is free again; the next resumes the transcript. Two
processes must never share a transcript, nor its directories, nor a uid, so the next one
starts only once the last is given back. Starting and ending hold one lock: an end that
comes while a process is starting ends that process too, and after a close none starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hotsvc.claude.process import ClaudeProcess
from hotsvc.errors import SessionNotFound


class Succession:
    """The process session `session_id` runs on, if any, and the one still ending."""

    def __init__(
        self,
        session_id: str,
        adopt: Callable[[ClaudeProcess], None],
        process: ClaudeProcess | None = None,
    ) -> None:
        self._session_id = session_id
        self._adopt = adopt  # the session takes a process on: its listener, its counts
        self.current: ClaudeProcess | None = None
        self.closed = False  # for good: no process starts again
        self._retiring: ClaudeProcess | None = None  # released, maybe still exiting
        self._changing = asyncio.Lock()
        if process is not None:
            self._take(process)

    @property
    def freed(self) -> bool:
        """No process of it is still ending: a new one may start without meeting it."""
        return all(p.freed for p in (self.current, self._retiring) if p is not None)

    def _take(self, process: ClaudeProcess) -> None:
        self.current = process
        self._adopt(process)

    async def ensure(self, start: Callable[[], Awaitable[ClaudeProcess]]) -> bool:
        """A live process, from `start` if there is none; True if it is new."""
        async with self._changing:
            if self.closed:  # a late caller (a control, say) must not revive it
                raise SessionNotFound(
                    f"session {self._session_id} was closed",
                    metadata={"sessionId": self._session_id},
                )
            if self.current is not None and self.current.alive:
                return False
            if self._retiring is not None:
                await self._retiring.wait_given_back()
                self._retiring = None
            self._take(await start())
            return True

    def release(self) -> ClaudeProcess | None:
        """Take the process away at once (the conversation resumes later); the caller
        ends it. Synchronous on purpose: from this moment no open or turn can pick the
        process up, even before it has finished exiting."""
        process, self.current = self.current, None
        if process is not None:
            self._retiring = process
        return process

    async def end(self, *, close: bool) -> int:
        """End the process (for good if `close`): its exit code (0 if there was none),
        once all it held is free."""
        self.closed = self.closed or close
        async with self._changing:  # a process still starting is ended too, not leaked
            process = self.release()
        if process is None:
            return 0
        code = await process.close()
        await process.wait_given_back()
        return code
