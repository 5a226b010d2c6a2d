"""The sessions this replica knows, live or stopped.

A session in use is a `Session` with the task that runs its turns. A stopped one that
nothing uses is parked: kept as its record alone, with no object graph and no task (a
replica may know every conversation it ever ran), and made a `Session` again when
something asks for it (`get`). A stopped session resumes on its next open or turn.
Sessions come from the store at start (a single host's), or one by one when asked for
(a fleet's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection

from hotsvc.audit import AuditLog
from hotsvc.claude.process import ClaudeProcess
from hotsvc.durability import Durability
from hotsvc.options import SessionOptions, effective
from hotsvc.profiles import Profile
from hotsvc.session import ProcessSource, Session
from hotsvc.settings import ServiceConfig
from hotsvc.store import SessionRecord, SessionStore, StoredState

log = logging.getLogger(__name__)


class Registry:
    def __init__(
        self,
        config: ServiceConfig,
        store: SessionStore,
        durability: Durability,
        source: ProcessSource,
        audit: AuditLog | None = None,
    ) -> None:
        self._config = config
        self._audit = audit
        self._store = store
        self._durability = durability
        self._source = source
        self._sessions: dict[str, Session] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._parked: dict[str, SessionRecord] = {}
        self._tasks: asyncio.TaskGroup | None = None

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions or session_id in self._parked

    def get(self, session_id: str) -> Session | None:
        """The session, a parked one made a `Session` again (its runner started); None
        if this replica does not know it."""
        if (session := self._sessions.get(session_id)) is not None:
            return session
        record = self._parked.pop(session_id, None)
        if record is None:
            return None
        profile = self._config.profile(record.profile)
        assert profile is not None, "parked only with a configured profile"
        session = self._stopped(profile, record)
        self.add(session)
        return session

    def loaded(self, session_id: str) -> Session | None:
        """The session if it is one now (not parked)."""
        return self._sessions.get(session_id)

    def sessions(self) -> Collection[Session]:
        """The sessions that are `Session`s now: every live one, and stopped ones in use."""
        return self._sessions.values()

    def parked(self) -> Collection[SessionRecord]:
        return self._parked.values()

    def owner_of(self, session_id: str) -> str | None:
        if (session := self._sessions.get(session_id)) is not None:
            return session.owner
        record = self._parked.get(session_id)
        return record.owner if record is not None else None

    def owned_by(self, owner: str) -> int:
        """Sessions of `owner`'s this replica knows, live, stopped or parked."""
        return sum(1 for s in self._sessions.values() if s.owner == owner) + sum(
            1 for r in self._parked.values() if r.owner == owner
        )

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Run sessions' turns in `tasks` from now on; restore a single host's sessions."""
        self._tasks = tasks
        if self._store.shared:  # a fleet's: each replica loads what it is asked for
            return
        for record in await self._store.sessions():
            self._park_record(record)
        if self._parked:
            log.info("restored %d sessions; each resumes on its next open", len(self._parked))

    async def load(self, session_id: str) -> None:
        """A session this replica has not seen yet, from the store (a fleet's)."""
        if session_id in self:
            return
        record = await self._store.get(session_id)
        if record is not None and session_id not in self:
            self._park_record(record)

    def _park_record(self, record: SessionRecord) -> None:
        if self._config.profile(record.profile) is None:
            log.warning(
                "session %s needs profile %r, which is no longer configured",
                record.id,
                record.profile,
            )
            return
        self._parked[record.id] = record

    async def create(
        self,
        process: ClaudeProcess,
        profile: Profile,
        owner: str,
        first_turn_done: asyncio.Event,
        *,
        turns: int,
        options: SessionOptions,
        forked_from: str,
        session_id: str = "",
    ) -> Session:
        """A new session on `process` (`profile` the effective one), under `session_id` or
        the process's own id, recorded in the store; not yet added."""
        session = Session(
            session_id or process.session_id,
            profile,
            self._config,
            self._source,
            process,
            durability=self._durability,
            owner=owner,
            first_turn_done=first_turn_done,
            turns=turns,
            options=options,
            forked_from=forked_from,
            audit=self._audit,
            claude_id=process.session_id,
        )
        # Its model as configured, until Claude Code reports the one it runs.
        await self._store.save(dataclasses.replace(_record_of(session), model=profile.model))
        return session

    def _stopped(self, profile: Profile, record: SessionRecord) -> Session:
        """A session with no process, from its record: it resumes on its next open or turn."""
        session = Session(
            record.id,
            effective(profile, record.options),
            self._config,
            self._source,
            durability=self._durability,
            owner=record.owner,
            cwd=record.cwd,
            created_at=record.created_at,
            turns=record.turns,
            lost=record.state is StoredState.LOST,
            options=record.options,
            forked_from=record.forked_from,
            model=record.model,
            audit=self._audit,
            claude_id=record.claude_id,
        )
        session.last_active_at = record.last_used_at
        return session

    def park(self, session: Session) -> bool:
        """Keep a stopped session that nothing uses as its record alone; False (nothing
        done) while it has a process (even one still ending), a stream or turns, or once it
        is no longer here."""
        if self._sessions.get(session.id) is not session:
            return False  # closed or deleted meanwhile: not brought back
        if not session.parkable:
            return False
        del self._sessions[session.id]
        self.stop_runner(session.id)
        self.keep_closed(session)
        return True

    def keep_closed(self, session: Session) -> None:
        """In place of a closed session (already removed): its record, parked; the
        conversation stays and resumes on its next open."""
        self._durability.forget(session.id)
        self._parked[session.id] = _record_of(session)

    def add(self, session: Session) -> None:
        assert self._tasks is not None, "start() first"
        self._sessions[session.id] = session
        self._runners[session.id] = self._tasks.create_task(
            session.run(), name=f"session-{session.id}"
        )

    def remove(self, session_id: str) -> Session | None:
        """Take a session out (its runner goes on until `stop_runner`); None if gone."""
        self._parked.pop(session_id, None)
        return self._sessions.pop(session_id, None)

    def stop_runner(self, session_id: str) -> None:
        if (runner := self._runners.pop(session_id, None)) is not None:
            runner.cancel()

    def stop_runners(self) -> None:
        for runner in self._runners.values():
            runner.cancel()


def _record_of(session: Session) -> SessionRecord:
    """A session as the store and a parked entry keep it: all `_stopped` needs to make
    the session again."""
    return SessionRecord(
        session.id,
        session.profile.name,  # the base profile's: `effective` keeps the name
        session.owner,
        session.cwd,
        session.created_at,
        session.last_active_at,
        turns=session.turns,
        state=StoredState.LOST if session.lost else StoredState.RESUMABLE,
        model=session.model,
        options=session.options,
        forked_from=session.forked_from,
        claude_id=session.claude_id if session.claude_id != session.id else "",
    )
