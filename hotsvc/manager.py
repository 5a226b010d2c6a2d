"""The sessions, the warm pools behind them, and their lifecycle policies.

A session is a conversation; its process is a cache. Processes end (crash, idle timeout,
eviction to make room, recycling, a service restart) and the conversation resumes in a
new one with `--resume` on the next open or turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from hotsvc import logs, metrics
from hotsvc.attachment import Attachment
from hotsvc.audit import AuditLog
from hotsvc.capacity import Capacity, StreamLimit
from hotsvc.claude.events import Result
from hotsvc.claude.process import ClaudeProcess
from hotsvc.draining import Drain
from hotsvc.durability import Durability
from hotsvc.errors import SessionClosed, StoreUnavailable
from hotsvc.eviction import Eviction
from hotsvc.fleet import Tenancy
from hotsvc.launcher import Launcher
from hotsvc.opening import Opener, OpenRequest, check_session_id
from hotsvc.ownership import Ownership
from hotsvc.pool import WarmPool
from hotsvc.principal import Principal
from hotsvc.quota import Quotas
from hotsvc.registry import Registry
from hotsvc.session import OnProgress, Session
from hotsvc.settings import ServiceConfig
from hotsvc.snapshot import Opened, Snapshot, Start, opened_of, snapshot_of
from hotsvc.store import LeaseKeeper, SessionStore, TurnRecord
from hotsvc.store.turns import TurnTotals
from hotsvc.supply import ProcessSupply

log = logging.getLogger(__name__)


class SessionManager:
    def __init__(
        self,
        config: ServiceConfig,
        store: SessionStore,
        launcher: Launcher,
        capacity: Capacity,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self._store = store
        # A session's lease is held from its first process until it closes or the
        # service stops; a lost lease kills its process at once (`_lease_lost`).
        self.leases = LeaseKeeper(store, self._lease_lost)
        self._tenancy = Tenancy(store, self.leases)
        self._totals = TurnTotals()
        self._launcher = launcher
        self._capacity = capacity
        self._durability = Durability(config, store)
        self._audit = audit or AuditLog(None)
        self._quotas = Quotas(
            config.max_sessions_per_principal, config.turns_per_minute_per_principal, self._audit
        )
        self._pools = {
            name: WarmPool(profile, launcher, capacity) for name, profile in config.profiles.items()
        }
        self._sessions = Registry(config, store, self._durability, self, self._audit)
        self._ownership = Ownership(self._sessions, self._quotas, self._audit)
        self._eviction = Eviction(self._sessions, self._pools)
        self._supply = ProcessSupply(
            config,
            self._pools,
            launcher,
            capacity,
            self._durability,
            store,
            self.leases,
            self._eviction.make_room,
        )
        self._opener = Opener(
            config, self._supply, self._sessions, self._ownership, self.leases, self._audit
        )
        self._tasks: asyncio.TaskGroup | None = None
        self._pool_tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._drain = Drain(self._sessions)
        self._streams = StreamLimit(config.max_streams)

    # -- running -------------------------------------------------------------------

    async def run(self, started: asyncio.Event) -> None:
        """Own the pools', sessions', lease renewal's and idle reaper's tasks until stop()."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            await self._sessions.start(tasks)
            self._pool_tasks = [
                tasks.create_task(pool.run(), name=f"pool-{name}")
                for name, pool in self._pools.items()
            ]
            self._pool_tasks.append(tasks.create_task(self.leases.run(), name="leases"))
            if self.config.idle_timeout > 0:
                reaper = self._eviction.reap_idle(self.config.idle_timeout)
                self._pool_tasks.append(tasks.create_task(reaper, name="reaper"))
            started.set()
            await self._stopped.wait()
            for task in self._pool_tasks:
                task.cancel()
            self._sessions.stop_runners()

    async def wait_ready(self) -> None:
        """Until every pool first reached its target (at once for pool size 0)."""
        await asyncio.gather(*(pool.filled.wait() for pool in self._pools.values()))

    # -- opening and attaching -----------------------------------------------------

    @contextlib.asynccontextmanager
    async def attach(
        self,
        request: OpenRequest,
        principal: Principal,
        alive: Callable[[], bool],
        progress: OnProgress | None = None,
        interactive: bool = True,
    ) -> AsyncIterator[tuple[Attachment, Opened]]:
        """Open a new session or re-attach to one the principal may use, for the duration
        of a stream. The attachment carries the principal for its turns' quota; a stream
        that cannot answer permission prompts (Ask) is not `interactive`; past
        --max-streams, CapacityExhausted."""
        self._drain.refuse_new()
        with self._streams.hold():
            async with self._attach(request, principal, alive, progress, interactive) as found:
                yield found

    @contextlib.asynccontextmanager
    async def _attach(
        self,
        request: OpenRequest,
        principal: Principal,
        alive: Callable[[], bool],
        progress: OnProgress | None,
        interactive: bool,
    ) -> AsyncIterator[tuple[Attachment, Opened]]:

        def attachment_of(session: Session) -> Attachment:
            return Attachment(session, self.config, alive, principal, self._quotas, interactive)

        if request.session_id:
            await self._load(request.session_id)
        if request.session_id and request.create_if_missing and not self._known(request):
            session, start = await self._opener.open(
                request.profile, principal, progress, request.session_id, request.options
            )
            attachment = session.attachment = attachment_of(session)
        elif request.session_id:
            check_session_id(request.session_id)
            session = self._ownership.attachable(request.session_id, principal)
            attachment = session.attachment = attachment_of(session)
            try:  # claimed before any await: one stream per session
                await self._tenancy.claim(session)
                start = Start.RESUMED if await session.ensure_process(progress) else Start.ATTACHED
            except BaseException:
                session.attachment = None
                raise
            self._audit.record("session.attached", principal=principal.name, session=session.id)
        else:
            session, start = await self._opener.open(
                request.profile, principal, progress, options=request.options
            )
            attachment = session.attachment = attachment_of(session)
        logs.bind(session_id=session.id, profile=session.profile.name)
        metrics.session_started(start.value)
        try:
            yield attachment, opened_of(session, start)
        finally:
            attachment.detach()
            if session.attachment is attachment:
                session.attachment = None
            self._capacity.changed()  # an idle session may be evictable now
            await self._tenancy.release_if_idle(session)

    async def _load(self, session_id: str) -> None:
        if session_id not in self._sessions:
            check_session_id(session_id)
            await self._sessions.load(session_id)

    async def find(self, session_id: str, principal: Principal, action: str) -> Session:
        """session_for, for a session that may so far be known only to the store."""
        await self._load(session_id)
        return self.session_for(session_id, principal, action)

    def session_for(self, session_id: str, principal: Principal, action: str) -> Session:
        """The session `principal` names, if it may use it (it opened it, or is an admin);
        PERMISSION_DENIED otherwise, revealing nothing (see hotsvc.ownership)."""
        check_session_id(session_id)
        return self._ownership.session_for(session_id, principal, action)

    def _known(self, request: OpenRequest) -> bool:
        check_session_id(request.session_id)
        return self._ownership.known(request.session_id)

    async def fork(self, source: Session, principal: Principal) -> Session:
        """A new session of `principal`'s holding a copy of `source`'s conversation (the
        CLI's --fork-session: the source's transcript is read, never written)."""
        self._drain.refuse_new()
        session, start = await self._opener.open(
            source.profile.name, principal, None, options=source.options, fork_of=source
        )
        metrics.session_started(start.value)
        self._audit.record(
            "session.forked", principal=principal.name, session=session.id, source=source.id
        )
        return session

    # -- the sessions' process source ----------------------------------------------

    async def resume_process(
        self, session: Session, progress: OnProgress | None = None
    ) -> ClaudeProcess:
        """A new process for a session whose process is gone, with its conversation."""
        self._drain.refuse_new()
        return await self._supply.resume(session, progress)

    def count_turn(self, session: Session, result: Result) -> TurnRecord:
        """A finished turn's record for the store: the session's new count, the turn's own
        usage and cost (counted in the metrics here)."""
        pid = session.process.pid if session.process else 0
        turn = self._totals.turn(session.id, pid, result, session.last_active_at, session.turns)
        metrics.turn_usage(session.profile.name, turn.usage, turn.cost_usd)
        return dataclasses.replace(turn, model=session.model)

    async def turn_ended(self, session: Session) -> None:
        """After a turn is recorded (Session._drive), before its result goes out."""
        try:
            if session.forked_from and session.process_turns:  # the fork has its transcript
                session.forked_from = ""
                await self._store.set_options(session.id, session.options, "")
        except StoreUnavailable as exc:
            log.warning("session %s: fork not recorded in the store: %s", session.id, exc)
        if not session.attached:
            self._capacity.changed()  # idle and unattached: evictable for a waiting open
            if not session.pending:  # (the turn itself still counts as running here)
                self._release_later(session)

    def _release_later(self, session: Session) -> None:
        """After the running turn has fully ended: its lease goes once nothing uses it."""
        assert self._tasks is not None
        self._tasks.create_task(self._tenancy.release_if_idle(session))

    def _lease_lost(self, session_id: str) -> None:
        """Another replica may run this session now: end its process here at once."""
        session = self._sessions.loaded(session_id)
        process = session.release_process() if session is not None else None
        if process is not None:
            log.warning("session %s: lease lost, killing pid %d", session_id, process.pid)
            process.kill()

    # -- closing -------------------------------------------------------------------

    async def close_session(self, session_id: str, principal: Principal) -> int:
        """End the session's process and streams; the conversation stays (stopped), and
        the next open or turn resumes it."""
        session = await self.find(session_id, principal, "close")
        ended = SessionClosed(
            f"session {session_id} was closed by CloseSession; its conversation is kept: "
            "open it again (open{session_id}) to go on",
            metadata={"sessionId": session_id},
        )
        with self._ownership.ending(session_id):
            # Its process may run on another replica (a balancer routed this call here):
            # UNAVAILABLE naming the holder, never an OK that ended nothing.
            await self.leases.acquire(session_id)
            exit_code = await self._end(session, principal, "session.closed", ended)
            if exit_code is not None:
                self._sessions.keep_closed(session)
        return exit_code or 0

    async def delete_session(
        self,
        session_id: str,
        principal: Principal,
        remove: Callable[[Session], Awaitable[None]],
    ) -> None:
        """End the session and remove its record, then `remove` its files, before
        anything may use the id again; NOT_FOUND from then on."""
        session = await self.find(session_id, principal, "delete")
        ended = SessionClosed(
            f"session {session_id} was deleted by DeleteSession; open a new session to go on",
            metadata={"sessionId": session_id},
        )
        with self._ownership.ending(session_id):
            await self.leases.acquire(session_id)  # as for close: not while another runs it
            await self._store.forget(session_id)  # first: if the store fails, nothing changed
            self._totals.forget(session_id)
            self._tenancy.forget(session_id)
            await self._end(session, principal, "session.deleted", ended)
            await remove(session)

    async def _end(
        self, session: Session, principal: Principal, event: str, error: SessionClosed
    ) -> int | None:
        """End the session's process, its queued turns and its stream; None if it ended
        concurrently meanwhile."""
        await self.leases.release(session.id)
        self._durability.forget(session.id)
        if self._sessions.remove(session.id) is None:
            return None
        self._audit.record(event, principal=principal.name, session=session.id, owner=session.owner)
        exit_code = await session.close()
        await session.idle()  # queued turns end with `session_closed` results
        self._sessions.stop_runner(session.id)
        if session.attachment is not None:
            session.attachment.end(error)
        self._capacity.changed()
        return exit_code

    @property
    def draining(self) -> bool:
        return self._drain.active

    async def drain(self, grace: float) -> None:
        """Stop opening sessions, tell the streams, give running turns `grace` seconds."""
        await self._drain.run(grace)

    async def stop(self) -> None:
        """End every process, in sessions and pools; sessions stay resumable."""
        self._drain.active = True
        for pool in self._pools.values():
            pool.close()
        await asyncio.gather(*(s.stop() for s in self._sessions.sessions()))
        self._stopped.set()

    # -- reporting -----------------------------------------------------------------

    def snapshot(self, viewer: Principal | None = None) -> Snapshot:
        """The pools and sessions; with a `viewer`, only the sessions it may use are
        listed (the counts and pool figures stay service-wide)."""
        return snapshot_of(
            self._pools.values(),
            self._sessions.sessions(),
            self._sessions.parked(),
            self._launcher.stats,
            self.config.max_sessions,
            self.draining,
            viewer,
        )

    def session(self, session_id: str) -> Session | None:
        """The session if this replica runs it now (not parked, not only in the store)."""
        return self._sessions.loaded(session_id)

    def sessions(self) -> list[Session]:
        return list(self._sessions.sessions())
