"""Opening a session: what a caller asks for, checked before anything happens, and the
Opener that makes the session (a process from the supply, registered, leased, audited)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hotsvc import logs
from hotsvc.errors import InvalidRequest, ProfileNotFound, clip
from hotsvc.options import SessionOptions, check, effective

if TYPE_CHECKING:
    from hotsvc.audit import AuditLog
    from hotsvc.ownership import Ownership
    from hotsvc.principal import Principal
    from hotsvc.profiles import Profile
    from hotsvc.registry import Registry
    from hotsvc.session import OnProgress, Session
    from hotsvc.settings import ServiceConfig
    from hotsvc.snapshot import Start
    from hotsvc.store import LeaseKeeper
    from hotsvc.supply import ProcessSupply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenRequest:
    session_id: str = ""  # empty: a new session
    profile: str = ""
    # With session_id: create the session under that id when it does not exist.
    create_if_missing: bool = False
    # The caller's Claude Code options for a new session (the profile's caller_may_set).
    options: SessionOptions = field(default_factory=SessionOptions)


def check_session_id(session_id: str) -> None:
    """Session ids are canonical UUIDs: one spelling per session."""
    try:
        canonical = str(uuid.UUID(session_id)) == session_id
    except ValueError:
        canonical = False
    if not canonical:
        raise InvalidRequest(
            f"session_id {clip(session_id)!r} is not a UUID; leave it empty to open a new "
            "session, or pass the id from SessionOpened (ids are canonical UUIDs: lowercase "
            "8-4-4-4-12 hex digits, e.g. 123e4567-e89b-12d3-a456-426614174000)",
            field="session_id",
            metadata={"sessionId": clip(session_id)},
        )


class Opener:
    """New sessions, for the manager's opens, creates and forks."""

    def __init__(
        self,
        config: ServiceConfig,
        supply: ProcessSupply,
        sessions: Registry,
        ownership: Ownership,
        leases: LeaseKeeper,
        audit: AuditLog,
    ) -> None:
        self._config = config
        self._supply = supply
        self._sessions = sessions
        self._ownership = ownership
        self._leases = leases
        self._audit = audit

    async def open(
        self,
        profile_name: str,
        principal: Principal,
        progress: OnProgress | None,
        session_id: str = "",
        options: SessionOptions | None = None,
        fork_of: Session | None = None,
    ) -> tuple[Session, Start]:
        """A new session: under `session_id` (chosen by the caller) or a fresh id; with
        the caller's options, or a fork's copy of its source's."""
        profile = self._config.profile(profile_name)
        if profile is None:
            known = ", ".join(sorted(self._config.profiles))
            raise ProfileNotFound(
                f"unknown profile {clip(profile_name)!r}; known profiles: {known}",
                metadata={"profile": clip(profile_name), "knownProfiles": known},
            )
        options = options or SessionOptions()
        if fork_of is None:
            check(options, profile)  # a fork keeps what its source was allowed
        with self._ownership.opening(principal, session_id):
            session, start = await self._start(
                profile, options, principal.name, progress, session_id, fork_of
            )
        self._audit.record(
            "session.opened", principal=principal.name, session=session.id, profile=profile.name
        )
        return session, start

    async def _start(
        self,
        base: Profile,
        options: SessionOptions,
        owner: str,
        progress: OnProgress | None,
        session_id: str,
        fork_of: Session | None,
    ) -> tuple[Session, Start]:
        first_turn_done = asyncio.Event()
        profile = effective(base, options)
        new = await self._supply.new(profile, progress, session_id, fork_of, first_turn_done)
        process, start, source = new.process, new.start, new.forked_from
        try:
            session = await self._sessions.create(
                process,
                profile,
                owner,
                first_turn_done,
                turns=fork_of.turns if source and fork_of else 0,
                options=options,
                forked_from=source,
                session_id=session_id,
            )
            await self._leases.acquire(session.id)
        except BaseException:
            first_turn_done.set()
            process.retire()
            raise
        self._sessions.add(session)
        process.workspace = None  # the session's from now on, not the process's to remove
        logs.bind(session_id=session.id, profile=profile.name)  # the opening stream's lines
        log.info(
            "session %s opened %s (pid %d, profile %s)",
            session.id,
            start.value,
            process.pid,
            profile.name,
        )
        return session, start
