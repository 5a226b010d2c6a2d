"""Running sessions in a fleet: which replica runs a conversation, and when it may.

A replica holds a session's lease while it uses the session: from an attach (or a turn
left running after one) until the session is idle and unattached again. Another replica
asked for a session held here answers UNAVAILABLE naming this one; once the lease is free
(idle here, or this replica gone for --lease-seconds) it takes the session over and
resumes it from the store. An idle process may outlive its lease: when this replica
claims the session again it first checks, against the store, that nobody carried the
conversation on elsewhere meanwhile, and starts over from the store if somebody did.
"""

from __future__ import annotations

import logging

from hotsvc.errors import ServiceError
from hotsvc.session import Session
from hotsvc.store import LeaseKeeper, SessionStore

log = logging.getLogger(__name__)


class Tenancy:
    def __init__(self, store: SessionStore, leases: LeaseKeeper) -> None:
        self._store = store
        self._leases = leases
        # Transcript lines each session had in the store when this replica last ran it.
        self._seen: dict[str, int] = {}

    async def claim(self, session: Session) -> None:
        """Hold the session's lease before running it; raises HeldElsewhere."""
        if self._leases.holds(session.id):
            return
        await self._leases.acquire(session.id)
        known = self._seen.get(session.id)
        if known is None or not session.live:
            return
        if await self._store.transcript_lines(session.id) > known:
            # Another replica ran turns meanwhile: this process holds an old conversation.
            log.info("session %s went on elsewhere: restarting it from the store", session.id)
            if (process := session.release_process()) is not None:
                process.retire()

    async def release_if_idle(self, session: Session) -> None:
        """Give the lease up once nothing here uses the session: another replica may
        take it over at once (after a load balancer moved the session, say)."""
        if (
            session.attached
            or session.busy
            or session.pending
            or not self._leases.holds(session.id)
        ):
            return
        try:
            self._seen[session.id] = await self._store.transcript_lines(session.id)
            await self._leases.release(session.id)
        except ServiceError as exc:  # the lease then expires by itself
            log.warning("session %s: lease not released: %s", session.id, exc)

    def forget(self, session_id: str) -> None:
        self._seen.pop(session_id, None)
