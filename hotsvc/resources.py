"""Sessions as resources (AIP-131/132/135): describe one, list them, read a conversation
back, fork one, delete one.

Live sessions come from the manager, what outlives them (owner, totals, state) from the
store, which also knows sessions this replica does not run. A caller sees the sessions it
owns; an admin sees all. Every per-session request goes through `manager.session_for` when
the session is not one the caller may see, so refusals read the same as everywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, TypeVar

from hotsvc import paging
from hotsvc.claude import launch
from hotsvc.claude.events import Usage
from hotsvc.claude.messages import Message, read_messages
from hotsvc.manager import SessionManager
from hotsvc.opening import check_session_id
from hotsvc.options import SessionOptions
from hotsvc.principal import Principal
from hotsvc.session import Session
from hotsvc.settings import ServiceConfig
from hotsvc.snapshot import SessionState, state_of_record, view_of
from hotsvc.store import SessionRecord, SessionStore, StoredState
from hotsvc.workspaces import Workspaces

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionResource:
    id: str
    owner: str
    profile: str
    state: SessionState
    created_at: float
    last_used_at: float
    turns: int
    model: str
    cwd: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    pid: int = 0  # admins only
    options: SessionOptions = field(default_factory=SessionOptions)
    replica_id: str = ""


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_token: str  # "" on the last page


class Catalog:
    def __init__(self, manager: SessionManager, store: SessionStore, config: ServiceConfig):
        self._manager = manager
        self._store = store
        self._config = config
        self._workspaces = Workspaces(config.keep_workspaces)

    # -- reading -------------------------------------------------------------------

    async def get(self, session_id: str, principal: Principal) -> SessionResource:
        session, record = await self._find(session_id, principal, "get")
        resource = self._describe(session, record, principal)
        if not resource.replica_id:
            lease = await self._store.lease(session_id)
            if lease is not None and lease.seconds_left > 0:
                resource = replace(resource, replica_id=lease.replica_id)
        return resource

    async def list(
        self, principal: Principal, page_size: int, page_token: str, filter_text: str
    ) -> Page[SessionResource]:
        """The sessions `principal` may see that match the filter, newest first."""
        condition = paging.parse_filter(filter_text)
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, filter_text)
        records = {r.id: r for r in await self._store.sessions()}
        live = {s.id: s for s in self._manager.sessions()}
        found = [
            self._describe(live.get(sid), records.get(sid), principal)
            for sid in records.keys() | live.keys()
        ]
        visible = sorted(
            (s for s in found if principal.may_use(s.owner) and condition.matches(s)),
            key=lambda s: (s.created_at, s.id),
            reverse=True,
        )
        if after is not None:
            visible = [s for s in visible if (s.created_at, s.id) < after]
        page = visible[:size]
        more = len(visible) > size
        token = paging.encode_token((page[-1].created_at, page[-1].id), filter_text) if more else ""
        return Page(page, token)

    async def messages(
        self, session_id: str, principal: Principal, page_size: int, page_token: str
    ) -> Page[Message]:
        """The conversation, oldest first, from the transcript (or the store's copy)."""
        session, record = await self._find(session_id, principal, "read")
        size = paging.page_size(page_size)
        start = paging.decode_offset(page_token, session_id)
        lines = await self._transcript(session, record, session_id)
        messages = await asyncio.to_thread(read_messages, lines)  # MBs of JSON, at times
        page = messages[start : start + size]
        more = start + size < len(messages)
        return Page(page, paging.encode_offset(start + size, session_id) if more else "")

    async def _transcript(
        self, session: Session | None, record: SessionRecord | None, session_id: str
    ) -> Sequence[bytes]:
        """The conversation's lines: the CLI's file, else the store's copy; a fork that
        has not run a turn yet shows what it copies."""
        forked_from = session.forked_from if session else record.forked_from if record else ""
        for sid in (session_id, forked_from):
            if not sid:
                continue
            path = await self._transcript_path(session, record, sid)
            with contextlib.suppress(FileNotFoundError):
                return (await asyncio.to_thread(path.read_bytes)).splitlines()
            if stored := await self._store.transcript(sid):
                return stored.splitlines()
        return []

    # -- changing ------------------------------------------------------------------

    async def fork(self, session_id: str, principal: Principal) -> SessionResource:
        """A new session of the caller's holding a copy of the conversation so far."""
        source = await self._manager.find(session_id, principal, "fork")
        forked = await self._manager.fork(source, principal)
        return await self.get(forked.id, principal)

    async def delete(self, session_id: str, principal: Principal) -> None:
        """End the session's process and remove its record, transcript and workspace."""

        async def remove(session: Session) -> None:
            files = launch.session_files(
                self._config, session.profile, session.claude_id, session.cwd
            )
            if self._config.session_uids and self._config.data_dir is not None:
                files.append(launch.session_home(self._config.data_dir, session.cwd))
            for path in files:
                try:
                    await asyncio.to_thread(launch.remove, path)
                except OSError as exc:  # the record is gone: nothing refers to it any more
                    log.warning("session %s deleted, but not %s: %s", session.id, path, exc)
            # Its workspace goes with it (CloseSession keeps it: the session resumes there).
            if self._workspaces.owns(session.profile.workspace_root, session.cwd):
                try:
                    await asyncio.to_thread(
                        self._workspaces.remove, Path(session.cwd), f"session {session.id} deleted"
                    )
                except OSError as exc:
                    log.warning("session %s deleted, but not its workspace: %s", session.id, exc)

        await self._manager.delete_session(session_id, principal, remove)

    # -- helpers -------------------------------------------------------------------

    async def _find(
        self, session_id: str, principal: Principal, action: str
    ) -> tuple[Session | None, SessionRecord | None]:
        """The live session (if this replica has it) and the stored record of a session
        `principal` may see; refused like every per-session RPC otherwise."""
        check_session_id(session_id)
        session = self._manager.session(session_id)
        record = await self._store.get(session_id)
        if session is not None or record is None or not principal.may_use(record.owner):
            session = await self._manager.find(session_id, principal, action)
        return session, record

    def _describe(
        self, session: Session | None, record: SessionRecord | None, principal: Principal
    ) -> SessionResource:
        if session is None:
            assert record is not None
            return _stored(record)
        view = view_of(session)
        state = view.state
        if record is not None and record.state is StoredState.LOST:
            state = SessionState.LOST
        held = self._manager.leases.holds(session.id)
        return SessionResource(
            id=session.id,
            owner=session.owner,
            profile=session.profile.name,
            state=state,
            created_at=session.created_at,
            last_used_at=session.last_active_at,
            turns=session.turns,
            model=session.model or (record.model if record else "") or session.profile.model,
            cwd=session.cwd,
            usage=record.usage if record else Usage(),
            cost_usd=record.cost_usd if record else 0.0,
            pid=view.pid if principal.admin else 0,
            options=session.options,
            replica_id=self._manager.leases.replica_id if held else "",
        )

    async def _transcript_path(
        self, session: Session | None, record: SessionRecord | None, session_id: str
    ) -> Path:
        """Where the CLI keeps the transcript of `session_id`: the session's own, or the
        source it forks (in the session's directory)."""
        if session is not None and session_id == session.id:
            return session.transcript_path()
        if record is None or record.id != session_id:  # a fork's source
            record = await self._store.get(session_id) or record
        claude_id = (record.claude_id if record and record.id == session_id else "") or session_id
        if session is not None:
            return launch.transcript_of(self._config, session.profile, claude_id, session.cwd)
        assert record is not None
        profile = self._config.profile(record.profile) or self._config.profile("")
        assert profile is not None
        return launch.transcript_of(self._config, profile, claude_id, record.cwd)


def _stored(record: SessionRecord) -> SessionResource:
    """A session this replica does not run, as the store knows it."""
    return SessionResource(
        id=record.id,
        owner=record.owner,
        profile=record.profile,
        state=state_of_record(record),
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        turns=record.turns,
        model=record.model,
        cwd=record.cwd,
        usage=record.usage,
        cost_usd=record.cost_usd,
        options=record.options,
    )
