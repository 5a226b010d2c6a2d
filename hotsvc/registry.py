"""The sessions this replica knows, live or stopped, each with the task that runs its turns.

A stopped session has no process; it resumes on its next open or turn. Sessions come from
the store at start (a single host's), or one by one when asked for (a fleet's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping

from hotsvc.claude.process import ClaudeProcess
from hotsvc.durability import Durability
from hotsvc.options import SessionOptions, effective
from hotsvc.profiles import Profile
from hotsvc.session import ProcessSource, Session
from hotsvc.settings import ServiceConfig
from hotsvc.store import SessionRecord, SessionStore, StoredState

log = logging.getLogger(__name__)


class Registry(Mapping[str, Session]):
    def __init__(
        self,
        config: ServiceConfig,
        store: SessionStore,
        durability: Durability,
        source: ProcessSource,
    ) -> None:
        self._config = config
        self._store = store
        self._durability = durability
        self._source = source
        self._sessions: dict[str, Session] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._tasks: asyncio.TaskGroup | None = None

    def __getitem__(self, session_id: str) -> Session:
        return self._sessions[session_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Run sessions' turns in `tasks` from now on; restore a single host's sessions."""
        self._tasks = tasks
        if self._store.shared:  # a fleet's: each replica loads what it is asked for
            return
        for record in await self._store.sessions():
            profile = self._config.profile(record.profile)
            if profile is None:
                log.warning(
                    "session %s needs profile %r, which is no longer configured",
                    record.id,
                    record.profile,
                )
                continue
            self.add(self.stopped(profile, record))
        if self._sessions:
            log.info("restored %d sessions; each resumes on its next open", len(self._sessions))

    async def load(self, session_id: str) -> None:
        """A session this replica has not seen yet, from the store (a fleet's)."""
        if session_id in self._sessions:
            return
        record = await self._store.get(session_id)
        profile = self._config.profile(record.profile) if record is not None else None
        if record is not None and profile is not None and session_id not in self._sessions:
            self.add(self.stopped(profile, record))

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
    ) -> Session:
        """A new session on `process` (`profile` the effective one), recorded in the
        store; not yet added."""
        session = Session(
            process.session_id,
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
        )
        await self._store.save(
            SessionRecord(
                session.id,
                profile.name,
                owner,
                session.cwd,
                session.created_at,
                session.last_active_at,
                turns=turns,
                model=profile.model,
                options=options,
                forked_from=forked_from,
            )
        )
        return session

    def stopped(self, profile: Profile, was: SessionRecord | Session) -> Session:
        """A session with no process, resumed on its next open or turn: restored from
        its record, or in place of a closed one."""
        session = Session(
            was.id,
            effective(profile, was.options),
            self._config,
            self._source,
            durability=self._durability,
            owner=was.owner,
            cwd=was.cwd,
            created_at=was.created_at,
            turns=was.turns,
            lost=was.state is StoredState.LOST if isinstance(was, SessionRecord) else was.lost,
            options=was.options,
            forked_from=was.forked_from,
            model=was.model,
        )
        session.last_active_at = (
            was.last_used_at if isinstance(was, SessionRecord) else was.last_active_at
        )
        return session

    def add(self, session: Session) -> None:
        assert self._tasks is not None, "start() first"
        self._sessions[session.id] = session
        self._runners[session.id] = self._tasks.create_task(
            session.run(), name=f"session-{session.id}"
        )

    def remove(self, session_id: str) -> Session | None:
        """Take a session out (its runner goes on until `stop_runner`); None if gone."""
        return self._sessions.pop(session_id, None)

    def stop_runner(self, session_id: str) -> None:
        if (runner := self._runners.pop(session_id, None)) is not None:
            runner.cancel()

    def stop_runners(self) -> None:
        for runner in self._runners.values():
            runner.cancel()
