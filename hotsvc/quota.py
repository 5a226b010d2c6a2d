"""Per-principal quotas: sessions held (`--max-sessions-per-principal`) and a token bucket
of turns (`--turns-per-minute-per-principal`). One principal past its quota is refused
with QuotaExceeded (RESOURCE_EXHAUSTED, QuotaFailure, RetryInfo); nobody else notices.

A principal holds every session it opened and has not closed, live or stopped: a stopped
session resumes on its next turn without asking, so counting only live ones would let a
principal hold any number by letting them idle out. The limits apply to admins too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hotsvc.audit import AuditLog
from hotsvc.errors import QuotaExceeded
from hotsvc.principal import Principal

# A refused open may succeed once the principal closes a session; as for capacity.
SESSIONS_RETRY_AFTER = 1.0


class TokenBucket:
    """`rate` tokens a second, up to `capacity` saved; starts full."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def give_back(self) -> None:
        self.tokens = min(self.capacity, self.tokens + 1.0)


class Quotas:
    def __init__(
        self,
        max_sessions: int,
        turns_per_minute: int,
        audit: AuditLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sessions = max_sessions  # 0: no limit
        self.turns_per_minute = turns_per_minute  # 0: no limit
        self._audit = audit
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check_sessions(self, principal: Principal, held: int) -> None:
        """Refuse a new session to a principal already holding `held` at the limit."""
        limit = self.max_sessions
        if limit and held >= limit:
            self._audit.record(
                "quota.refused", principal=principal.name, quota="sessions", limit=limit
            )
            raise QuotaExceeded(
                f"principal {principal.name} holds {held} sessions, its limit "
                f"(--max-sessions-per-principal {limit}); delete one (DeleteSession) or "
                "re-attach to one instead of opening another",
                subject=principal.subject,
                retry_after=SESSIONS_RETRY_AFTER,
                metadata={"principal": principal.name, "quota": "sessions", "limit": limit},
            )

    def take_turn(self, principal: Principal) -> None:
        """Spend one of the principal's turns, or refuse with the time until the next."""
        limit = self.turns_per_minute
        if not limit:
            return
        now = self._clock()
        bucket = self._buckets.get(principal.name)
        if bucket is None:
            bucket = self._buckets[principal.name] = TokenBucket(limit, limit / 60.0, now)
        wait = bucket.take(now)
        if wait:
            self._audit.record(
                "quota.refused", principal=principal.name, quota="turns", limit=limit
            )
            raise QuotaExceeded(
                f"principal {principal.name} sent more than {limit} turns a minute "
                f"(--turns-per-minute-per-principal); the next is accepted in {wait:.1f}s",
                subject=principal.subject,
                retry_after=wait,
                metadata={"principal": principal.name, "quota": "turns", "limit": limit},
            )

    def give_back_turn(self, principal: Principal) -> None:
        """A turn taken for a request that was refused for another reason."""
        if bucket := self._buckets.get(principal.name):
            bucket.give_back()
