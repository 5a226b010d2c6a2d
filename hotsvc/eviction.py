"""Ending processes nobody uses: to make room for a waiting open, or after --idle-timeout.

Only the process ends; its session stays and resumes when it is needed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from hotsvc.pool import WarmPool
from hotsvc.session import Session

log = logging.getLogger(__name__)


class Eviction:
    def __init__(self, sessions: Mapping[str, Session], pools: Mapping[str, WarmPool]) -> None:
        self._sessions = sessions
        self._pools = pools

    def make_room(self) -> bool:
        """Free a slot for a waiting open: a warm process first, else the LRU idle session."""
        for pool in sorted(self._pools.values(), key=lambda p: p.size, reverse=True):
            if pool.give_way():
                return True
        idle = [s for s in self._sessions.values() if s.evictable]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_active_at)
        log.info("evicting the process of idle session %s to make room", victim.id)
        process = victim.release_process()  # now: no re-attach may pick it up meanwhile
        if process is not None:
            process.retire()
        return True

    async def reap_idle(self, idle_seconds: float) -> None:
        """End the processes of sessions left unattached and idle past `idle_seconds`."""
        while True:
            await asyncio.sleep(min(idle_seconds / 2, 5.0))
            cutoff = time.time() - idle_seconds
            for session in list(self._sessions.values()):
                if session.evictable and session.last_active_at < cutoff:
                    log.info(
                        "session %s idle for %.0fs: ending its process",
                        session.id,
                        time.time() - session.last_active_at,
                    )
                    await session.stop()
