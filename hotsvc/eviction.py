"""Ending processes nobody uses: to make room for a waiting open, or after --idle-timeout.

Only the process ends; its session stays and resumes when it is needed again. A stopped
session left alone past --idle-timeout is parked (kept as its record alone, registry.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hotsvc import metrics
from hotsvc.pool import WarmPool

if TYPE_CHECKING:
    from hotsvc.registry import Registry

log = logging.getLogger(__name__)


class Eviction:
    def __init__(self, sessions: Registry, pools: Mapping[str, WarmPool]) -> None:
        self._sessions = sessions
        self._pools = pools

    def make_room(self) -> bool:
        """Free a slot for a waiting open: a warm process first, else the LRU idle session."""
        for pool in sorted(self._pools.values(), key=lambda p: p.size, reverse=True):
            if pool.give_way():
                return True
        idle = [s for s in self._sessions.sessions() if s.evictable]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_active_at)
        log.info("evicting the process of idle session %s to make room", victim.id)
        process = victim.release_process()  # now: no re-attach may pick it up meanwhile
        if process is not None:
            metrics.evicted("capacity")
            process.retire()
        return True

    async def reap_idle(self, idle_seconds: float) -> None:
        """End the processes of sessions left unattached and idle past `idle_seconds`,
        and park them."""
        while True:
            await asyncio.sleep(min(idle_seconds / 2, 5.0))
            now = time.time()
            expired = [
                s for s in self._sessions.sessions() if s.last_active_at < now - idle_seconds
            ]
            idle = [s for s in expired if s.evictable]
            for session in idle:
                log.info(
                    "session %s idle for %.0fs: ending its process",
                    session.id,
                    now - session.last_active_at,
                )
                metrics.evicted("idle")
            # At once: after a burst, many expire together, and each close takes a while.
            async with asyncio.TaskGroup() as stops:
                for session in idle:
                    stops.create_task(session.stop())
            for session in expired:
                self._sessions.park(session)  # unless it is in use again meanwhile
