"""Where sessions' processes come from: a warm pool, a cold spawn once a slot is free,
or a resume of the conversation in a new process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hotsvc import metrics
from hotsvc.capacity import Capacity, Slot
from hotsvc.claude.process import ClaudeProcess
from hotsvc.durability import Durability
from hotsvc.launcher import Launcher
from hotsvc.pool import WarmPool
from hotsvc.profiles import Profile
from hotsvc.session import OnProgress, Session
from hotsvc.settings import ServiceConfig
from hotsvc.snapshot import Start
from hotsvc.spawnqueue import OnPlace
from hotsvc.store import LeaseKeeper, SessionStore, StoredState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewProcess:
    process: ClaudeProcess
    start: Start  # WARM or COLD
    forked_from: str  # the session whose conversation it holds a copy of, or ""


class ProcessSupply:
    def __init__(
        self,
        config: ServiceConfig,
        pools: Mapping[str, WarmPool],
        launcher: Launcher,
        capacity: Capacity,
        durability: Durability,
        store: SessionStore,
        leases: LeaseKeeper,
        make_room: Callable[[], bool],
    ) -> None:
        self._config = config
        self._pools = pools
        self._launcher = launcher
        self._capacity = capacity
        self._durability = durability
        self._store = store
        self._leases = leases
        self._make_room = make_room

    async def new(
        self,
        profile: Profile,
        progress: OnProgress | None,
        session_id: str,
        fork_of: Session | None,
        first_turn_done: asyncio.Event,
    ) -> NewProcess:
        """A process for a new session (`profile` is the effective one): warm when a
        pool has one, else spawned; a fork's holds a copy of its source's conversation."""
        # A fork copies a conversation: of its source, or of what an unrun fork copies.
        source = (fork_of.forked_from or fork_of.id) if fork_of and fork_of.turns else ""
        # Only a process started with the same arguments will do (pools are keyed by the
        # profile's signature, options included). A warm one keeps its own Claude Code
        # session id under a caller's id (Session.claude_id).
        pool = None if source else self._warm_pool(profile)
        process = pool.take(first_turn_done) if pool else None
        if process is not None:
            self._launcher.stats.warm_starts += 1
            return NewProcess(process, Start.WARM, source)
        workspace = None
        if source and fork_of is not None and profile.workspace_root:
            # A workspace of its own, a copy of its source's (what the history refers to).
            workspaces = self._launcher.placement.workspaces
            workspace = await asyncio.to_thread(
                workspaces.copy, Path(fork_of.cwd), profile.workspace_root, session_id or "fork"
            )
        try:
            cwd = str(workspace) if workspace else ""
            claude_source = ""
            if source:  # the history to copy must be on this host, where the fork runs
                claude_source = await self._claude_id(source)
                where = cwd or (fork_of.cwd if fork_of else "")
                await self._durability.restore(
                    source, self._durability.path(claude_source, profile, where)
                )
            slot = await self._slot(progress)
            # A fork's process has read the history once it answered `initialize` (prime).
            process = await self._launcher.spawn(
                profile,
                slot,
                session_id=session_id,
                fork_of=claude_source,
                prime=bool(source),
                cwd=cwd,
                on_place=self._on_place(progress),
            )
        except BaseException:
            if workspace is not None:
                await asyncio.to_thread(workspaces.remove, workspace, "its fork failed", False)
            raise
        process.workspace = workspace or process.workspace  # until a session takes it
        self._launcher.stats.cold_starts += 1
        return NewProcess(process, Start.COLD, source)

    async def resume(self, session: Session, progress: OnProgress | None) -> ClaudeProcess:
        """A new process for a session whose process is gone, with its conversation."""
        try:
            process = await self._resume(session, progress)
        except Exception:
            metrics.resumed("lost" if session.lost else "failed")
            raise
        metrics.resumed("ok")
        return process

    async def _resume(self, session: Session, progress: OnProgress | None) -> ClaudeProcess:
        await self._leases.acquire(session.id)  # no two replicas run one conversation
        # --resume needs the transcript: from the store when this host lacks it. A
        # session that never finished a turn may have none yet and starts afresh. A fork
        # that has not run a turn yet resumes its source's, under its own id.
        source = session.forked_from
        claude_source = await self._claude_id(source) if source else ""
        path = (
            self._durability.path(claude_source, session.profile, session.cwd)
            if source
            else session.transcript_path()
        )
        resume = await self._durability.restore(source or session.id, path)
        if not resume and session.turns > 0:
            session.lost = True
            await self._store.set_state(session.id, StoredState.LOST)
            log.warning(
                "session %s is lost: no transcript on this host or in the store", session.id
            )
            raise session.lost_error()
        slot = await self._slot(progress)
        process = await self._launcher.spawn(
            session.profile,
            slot,
            session_id=session.claude_id,
            resume=resume,
            fork_of=claude_source if resume else "",
            cwd=session.cwd,  # its own directory, where its conversation began
            on_place=self._on_place(progress),
        )
        log.info("session %s resumed in pid %d", session.id, process.pid)
        return process

    async def _claude_id(self, session_id: str) -> str:
        """The id Claude Code knows session `session_id`'s conversation by."""
        record = await self._store.get(session_id)
        return (record.claude_id if record else "") or session_id

    @staticmethod
    def _on_place(progress: OnProgress | None) -> OnPlace | None:
        if progress is None:
            return None

        async def on_place(place: int, waiting: int) -> None:
            await progress(f"waiting to start Claude Code: {place} of {waiting} in line")

        return on_place

    def _warm_pool(self, profile: Profile) -> WarmPool | None:
        signature = profile.signature()
        return next((p for p in self._pools.values() if p.profile.signature() == signature), None)

    async def _slot(self, progress: OnProgress | None) -> Slot:
        async def on_place(place: int, waiting: int) -> None:
            if progress is not None:
                await progress(f"waiting for a session slot: {place} of {waiting} in line")

        return await self._capacity.acquire(
            self._config.open_queue_timeout, self._make_room, on_place
        )
