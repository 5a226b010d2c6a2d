"""This replica's leases: taken when it runs a session, renewed in the background, and
reported the moment one is lost, so the replica ends that session's process at once.

A lease counts as lost when another replica took it over, when the session is gone, or
when renewals failed until its local deadline passed: past that moment another replica
may take the session over, so this one must stop running it even if it cannot tell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hotsvc.errors import HeldElsewhere, ServiceError
from hotsvc.store.base import LeaseInfo, SessionStore

log = logging.getLogger(__name__)

OnLost = Callable[[str], None]


class LeaseKeeper:
    """The leases this replica holds; `run()` (owned by the service) renews them."""

    def __init__(self, store: SessionStore, on_lost: OnLost) -> None:
        self._store = store
        self._on_lost = on_lost
        # Session id → monotonic time by which a renewal must have succeeded.
        self._deadlines: dict[str, float] = {}
        self.rounds = 0  # renewal rounds that reached the store

    @property
    def replica_id(self) -> str:
        return self._store.replica_id

    @property
    def interval(self) -> float:
        """Renew three times per lease period: one late renewal loses nothing."""
        return self._store.lease_seconds / 3

    def holds(self, session_id: str) -> bool:
        return session_id in self._deadlines

    def held(self) -> frozenset[str]:
        return frozenset(self._deadlines)

    async def acquire(self, session_id: str) -> None:
        """Hold the session's lease (again); raises HeldElsewhere naming the holder."""
        asked = time.monotonic()
        lease = await self._store.acquire_lease(session_id)
        if lease.replica_id != self.replica_id:
            raise held_elsewhere(lease)
        self._deadlines[session_id] = asked + self._store.lease_seconds

    async def release(self, session_id: str) -> None:
        """Give the lease up (the session closed, or its process ended for good)."""
        self._deadlines.pop(session_id, None)
        await self._store.release_lease(session_id)

    async def release_all(self) -> None:
        """At shutdown: other replicas may take these sessions over at once."""
        for session_id in list(self._deadlines):
            try:
                await self.release(session_id)
            except ServiceError as exc:
                log.warning("could not release the lease of %s: %s", session_id, exc)

    async def run(self) -> None:
        """Renew every held lease each `interval` until cancelled."""
        while True:
            wait = self.interval
            if self._deadlines:
                wait = min(wait, min(self._deadlines.values()) - time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            await self.renew()

    async def renew(self) -> None:
        """One round of renewals; lost leases are dropped and reported."""
        session_ids = list(self._deadlines)
        if not session_ids:
            return
        asked = time.monotonic()
        try:
            kept = await self._store.renew_leases(session_ids)
        except Exception as exc:  # the database is away (StoreUnavailable), or worse
            log.warning("could not renew %d leases: %r", len(session_ids), exc)
            overdue = [s for s in session_ids if self._deadlines.get(s, asked) <= asked]
            self._lose(overdue, "its lease could not be renewed in time")
            return
        self.rounds += 1
        for session_id in kept:
            if session_id in self._deadlines:  # not released meanwhile
                self._deadlines[session_id] = asked + self._store.lease_seconds
        self._lose(
            [s for s in session_ids if s not in kept and s in self._deadlines],
            "another replica took its lease over",
        )

    def _lose(self, session_ids: list[str], why: str) -> None:
        for session_id in session_ids:
            del self._deadlines[session_id]
            log.warning("lost the lease of session %s: %s", session_id, why)
            try:
                self._on_lost(session_id)
            except Exception:
                log.exception("ending session %s after its lease was lost failed", session_id)


def held_elsewhere(lease: LeaseInfo) -> HeldElsewhere:
    return HeldElsewhere(
        f"session {lease.session_id} runs on replica {lease.replica_id}; retry through the "
        "load balancer, which routes it there (or here, once that replica's lease of "
        f"{lease.seconds_left:.1f}s more has expired)",
        metadata={
            "sessionId": lease.session_id,
            "replicaId": lease.replica_id,
            "leaseSecondsLeft": f"{max(lease.seconds_left, 0.0):.1f}",
        },
    )
