"""A graceful stop: no new sessions, every stream told to go, running turns given a grace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from hotsvc.errors import Draining

if TYPE_CHECKING:
    from hotsvc.registry import Registry

log = logging.getLogger(__name__)


class Drain:
    def __init__(self, sessions: Registry) -> None:
        self._sessions = sessions
        self.active = False
        self._deadline = 0.0

    def refuse_new(self) -> None:
        """Draining refuses to open or resume sessions, telling the caller where to go."""
        if self.active:
            raise Draining(
                "hotsvc is shutting down and opens no sessions; retry on another "
                "instance or after it restarts",
                metadata={"drainSecondsLeft": f"{self.time_left():.1f}"},
            )

    def time_left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    async def run(self, grace: float) -> None:
        """Stop opening sessions, tell the streams, give running turns `grace` seconds."""
        self._deadline = time.monotonic() + grace
        self.active = True
        for session in self._sessions.sessions():
            if session.attachment is not None:
                session.attachment.go_away(
                    grace,
                    "hotsvc is shutting down: running turns may finish, then streams "
                    "close; re-attach after it restarts",
                )
        busy = [s for s in self._sessions.sessions() if s.busy]
        if busy:
            log.info("draining: up to %.1fs for the turns of %d sessions", grace, len(busy))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.idle() for s in busy)), grace)
