"""Which principal may use which session, and how many sessions each one holds.

A session belongs to the principal that opened it (recorded in the registry, so it
survives restarts). Only that principal, or an admin, may re-attach to it, drive it or
close it; a non-admin is told the same thing whether a session is someone else's or does
not exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hotsvc.audit import AuditLog
from hotsvc.errors import PermissionDenied, SessionBusy, SessionNotFound
from hotsvc.principal import Principal
from hotsvc.quota import Quotas
from hotsvc.session import Session

if TYPE_CHECKING:
    from hotsvc.registry import Registry


class Ownership:
    def __init__(self, sessions: Registry, quotas: Quotas, audit: AuditLog) -> None:
        self._sessions = sessions  # the manager's
        self._quotas = quotas
        self._audit = audit
        self._opening: dict[str, int] = {}  # opens under way per principal
        self._creating: set[str] = set()  # caller-chosen ids being opened now
        self._ending: set[str] = set()  # sessions being closed or deleted

    @contextlib.contextmanager
    def ending(self, session_id: str) -> Iterator[None]:
        """While a session ends (its process, its record), requests naming it are told
        to retry, not that it does not exist."""
        self._ending.add(session_id)
        try:
            yield
        finally:
            self._ending.discard(session_id)

    def refuse_if_ending(self, session_id: str) -> None:
        if session_id in self._ending:
            raise SessionBusy(
                f"session {session_id} is being closed or deleted; retry in a moment",
                metadata={"sessionId": session_id},
            )

    def known(self, session_id: str) -> bool:
        """Whether the caller-chosen `session_id` names a session already; SessionBusy
        while it is being opened, closed or deleted."""
        self.refuse_if_ending(session_id)
        if session_id in self._creating:
            raise SessionBusy(
                f"session {session_id} is being opened by another stream; retry "
                "in a moment to attach to it",
                metadata={"sessionId": session_id},
            )
        return session_id in self._sessions

    def attachable(self, session_id: str, principal: Principal) -> Session:
        """The session, if `principal` may attach a stream to it now (one at a time)."""
        session = self.session_for(session_id, principal, "attach")
        if session.lost:
            raise session.lost_error()
        if session.attached:
            raise SessionBusy(
                f"session {session_id} already has a stream attached; one "
                "stream per session: end that stream first",
                metadata={"sessionId": session_id},
            )
        return session

    def session_for(self, session_id: str, principal: Principal, action: str) -> Session:
        """The session, if `principal` may use it: PERMISSION_DENIED for a non-admin
        whether it is someone else's or unknown; NOT_FOUND (unknown) only for an admin."""
        self.refuse_if_ending(session_id)
        owner = self._sessions.owner_of(session_id)  # not made a Session for a stranger
        if owner is not None and principal.may_use(owner):
            session = self._sessions.get(session_id)
            assert session is not None
            return session
        if principal.admin:
            hint = (
                "nothing to close"
                if action == "close"
                else "it was closed or never existed; open a new session with an empty session_id"
            )
            raise SessionNotFound(
                f"no session {session_id}; {hint}", metadata={"sessionId": session_id}
            )
        self._audit.record(
            "session.denied", principal=principal.name, session=session_id, action=action
        )
        raise PermissionDenied(
            f"session {session_id} does not exist or is not yours (principal "
            f"{principal.name}); use a session you opened, or open a new one with an empty "
            "session_id",
            metadata={"sessionId": session_id, "principal": principal.name},
        )

    def held(self, principal: Principal) -> int:
        """Sessions the principal holds, live or stopped, and opens of its under way."""
        return self._sessions.owned_by(principal.name) + self._opening.get(principal.name, 0)

    @contextlib.contextmanager
    def opening(self, principal: Principal, session_id: str = "") -> Iterator[None]:
        """Around opening a session: refused past the principal's session quota, and
        counted while it opens so concurrent opens cannot overshoot it together; a
        caller-chosen `session_id` is not `known` meanwhile, but busy."""
        if self._quotas.max_sessions:  # counting walks every session this replica knows
            self._quotas.check_sessions(principal, self.held(principal))
        name = principal.name
        self._opening[name] = self._opening.get(name, 0) + 1
        if session_id:
            self._creating.add(session_id)
        try:
            yield
        finally:
            self._creating.discard(session_id)
            self._opening[name] -= 1
            if not self._opening[name]:
                del self._opening[name]
