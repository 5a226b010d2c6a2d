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
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from hotsvc.attachment import Attachment
from hotsvc.audit import AuditLog
from hotsvc.capacity import Capacity, Slot
from hotsvc.claude.process import ClaudeProcess
from hotsvc.durability import Durability
from hotsvc.errors import (
    Draining,
    InvalidRequest,
    ProfileNotFound,
    SessionBusy,
    SessionClosed,
    StoreUnavailable,
    clip,
)
from hotsvc.fleet import Tenancy
from hotsvc.launcher import Launcher
from hotsvc.options import SessionOptions, check, effective
from hotsvc.ownership import Ownership
from hotsvc.pool import WarmPool
from hotsvc.principal import Principal
from hotsvc.quota import Quotas
from hotsvc.session import OnProgress, Session
from hotsvc.settings import Profile, ServiceConfig
from hotsvc.snapshot import (
    Opened,
    PoolView,
    SessionState,
    Snapshot,
    SpawnView,
    Start,
    view_of,
)
from hotsvc.store import LeaseKeeper, SessionRecord, SessionStore, StoredState
from hotsvc.store.turns import TurnTotals

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
        self._sessions: dict[str, Session] = {}
        self._creating: set[str] = set()  # caller-chosen ids being opened now
        self._ownership = Ownership(self._sessions, self._quotas, self._audit)
        self._tasks: asyncio.TaskGroup | None = None
        self._session_tasks: dict[str, asyncio.Task[None]] = {}
        self._pool_tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self.draining = False
        self._drain_deadline = 0.0

    # -- running -------------------------------------------------------------------

    async def run(self, started: asyncio.Event) -> None:
        """Own the pools', sessions', lease renewal's and idle reaper's tasks until stop()."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            await self._restore_sessions()
            self._pool_tasks = [
                tasks.create_task(pool.run(), name=f"pool-{name}")
                for name, pool in self._pools.items()
            ]
            self._pool_tasks.append(tasks.create_task(self.leases.run(), name="leases"))
            if self.config.idle_timeout > 0:
                self._pool_tasks.append(tasks.create_task(self._reap_idle(), name="reaper"))
            started.set()
            await self._stopped.wait()
            for task in [*self._pool_tasks, *self._session_tasks.values()]:
                task.cancel()

    async def _restore_sessions(self) -> None:
        if self._store.shared:  # a fleet's: each replica loads what it is asked for
            return
        for record in await self._store.sessions():
            profile = self.config.profile(record.profile)
            if profile is None:
                log.warning(
                    "session %s needs profile %r, which is no longer configured",
                    record.id,
                    record.profile,
                )
                continue
            self._add(self._stopped_session(profile, record))
        if self._sessions:
            log.info("restored %d sessions; each resumes on its next open", len(self._sessions))

    def _stopped_session(self, profile: Profile, was: SessionRecord | Session) -> Session:
        """A session with no process, resumed on its next open or turn: restored from
        its record at start, or in place of a closed one."""
        session = Session(
            was.id,
            effective(profile, was.options),
            self.config,
            self,
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

    def _add(self, session: Session) -> None:
        assert self._tasks is not None
        self._sessions[session.id] = session
        self._session_tasks[session.id] = self._tasks.create_task(
            session.run(), name=f"session-{session.id}"
        )

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
        that cannot answer permission prompts (Ask) is not `interactive`."""
        self._refuse_if_draining()

        def attachment_of(session: Session) -> Attachment:
            return Attachment(session, self.config, alive, principal, self._quotas, interactive)

        if request.session_id:
            await self._load(request.session_id)
        if request.session_id and request.create_if_missing and not self._known(request):
            session, start = await self._open(
                request.profile, principal, progress, request.session_id, request.options
            )
            attachment = session.attachment = attachment_of(session)
        elif request.session_id:
            session = self._attachable(request.session_id, principal)
            attachment = session.attachment = attachment_of(session)
            try:  # claimed before any await: one stream per session
                await self._tenancy.claim(session)
                start = Start.RESUMED if await session.ensure_process(progress) else Start.ATTACHED
            except BaseException:
                session.attachment = None
                raise
            self._audit.record("session.attached", principal=principal.name, session=session.id)
        else:
            session, start = await self._open(
                request.profile, principal, progress, options=request.options
            )
            attachment = session.attachment = attachment_of(session)
        process = session.process
        opened = Opened(
            session.id,
            start,
            process.pid if process else 0,
            session.profile.name,
            session.last_turn_id,
            session.last_result,
        )
        try:
            yield attachment, opened
        finally:
            attachment.detach()
            if session.attachment is attachment:
                session.attachment = None
            self._capacity.changed()  # an idle session may be evictable now
            await self._tenancy.release_if_idle(session)

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise Draining(
                "hotsvc is shutting down and opens no sessions; retry on another "
                "instance or after it restarts",
                metadata={"drainSecondsLeft": f"{self.drain_time_left():.1f}"},
            )

    async def _load(self, session_id: str) -> None:
        """A session this replica has not seen yet, from the store (a fleet's)."""
        if session_id in self._sessions:
            return
        check_session_id(session_id)
        record = await self._store.get(session_id)
        profile = self.config.profile(record.profile) if record is not None else None
        if record is not None and profile is not None and session_id not in self._sessions:
            self._add(self._stopped_session(profile, record))

    async def find(self, session_id: str, principal: Principal, action: str) -> Session:
        """session_for, for a session that may so far be known only to the store."""
        await self._load(session_id)
        return self.session_for(session_id, principal, action)

    def session_for(self, session_id: str, principal: Principal, action: str) -> Session:
        """The session `principal` names, if it may use it (it opened it, or is an admin);
        PERMISSION_DENIED otherwise, revealing nothing (see hotsvc.ownership)."""
        check_session_id(session_id)
        return self._ownership.session_for(session_id, principal, action)

    def _attachable(self, session_id: str, principal: Principal) -> Session:
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

    def _known(self, request: OpenRequest) -> bool:
        check_session_id(request.session_id)
        self._ownership.refuse_if_ending(request.session_id)
        if request.session_id in self._creating:
            raise SessionBusy(
                f"session {request.session_id} is being opened by another stream; retry "
                "in a moment to attach to it",
                metadata={"sessionId": request.session_id},
            )
        return request.session_id in self._sessions

    async def _open(
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
        profile = self.config.profile(profile_name)
        if profile is None:
            known = ", ".join(sorted(self.config.profiles))
            raise ProfileNotFound(
                f"unknown profile {clip(profile_name)!r}; known profiles: {known}",
                metadata={"profile": clip(profile_name), "knownProfiles": known},
            )
        options = options or SessionOptions()
        if fork_of is None:
            check(options, profile)  # a fork keeps what its source was allowed
        with self._ownership.opening(principal):
            self._creating.add(session_id)
            try:
                session, start = await self._start(
                    profile, options, principal.name, progress, session_id, fork_of
                )
            finally:
                self._creating.discard(session_id)
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
        # A fork copies a conversation: of its source, or of what an unrun fork copies.
        source = (fork_of.forked_from or fork_of.id) if fork_of and fork_of.turns else ""
        # A warm process already has its own session id: a caller's id needs a new one;
        # and only a process started with the same arguments will do (pools are keyed by
        # the profile's signature, options included).
        pool = None if session_id or source else self._warm_pool(profile)
        process = pool.take(first_turn_done) if pool else None
        if process is not None:
            self._launcher.stats.warm_starts += 1
            start = Start.WARM
        else:
            if source:  # the history to copy must be on this host
                path = self._durability.path(source, profile, fork_of.cwd if fork_of else "")
                await self._durability.restore(source, path)
            slot = await self._slot(progress)
            # A fork's process has read the history once it answered `initialize` (prime).
            process = await self._launcher.spawn(
                profile, slot, session_id=session_id, fork_of=source, prime=bool(source)
            )
            self._launcher.stats.cold_starts += 1
            start = Start.COLD
        session = Session(
            process.session_id,
            profile,
            self.config,
            self,
            process,
            durability=self._durability,
            owner=owner,
            first_turn_done=first_turn_done,
            turns=fork_of.turns if source and fork_of else 0,
            options=options,
            forked_from=source,
        )
        try:
            await self._store.save(
                SessionRecord(
                    session.id,
                    profile.name,
                    owner,
                    session.cwd,
                    session.created_at,
                    session.last_active_at,
                    turns=session.turns,
                    model=profile.model,
                    options=options,
                    forked_from=source,
                )
            )
            await self.leases.acquire(session.id)
        except BaseException:
            first_turn_done.set()
            process.retire()
            raise
        self._add(session)
        log.info(
            "session %s opened %s (pid %d, profile %s)",
            session.id,
            start.value,
            process.pid,
            profile.name,
        )
        return session, start

    def _warm_pool(self, profile: Profile) -> WarmPool | None:
        signature = profile.signature()
        return next((p for p in self._pools.values() if p.profile.signature() == signature), None)

    async def fork(self, source: Session, principal: Principal) -> Session:
        """A new session of `principal`'s holding a copy of `source`'s conversation (the
        CLI's --fork-session: the source's transcript is read, never written)."""
        self._refuse_if_draining()
        session, _ = await self._open(
            source.profile.name, principal, None, options=source.options, fork_of=source
        )
        self._audit.record(
            "session.forked", principal=principal.name, session=session.id, source=source.id
        )
        return session

    async def _slot(self, progress: OnProgress | None) -> Slot:
        async def on_place(place: int, waiting: int) -> None:
            if progress is not None:
                await progress(f"waiting for a session slot: {place} of {waiting} in line")

        return await self._capacity.acquire(
            self.config.open_queue_timeout, self._make_room, on_place
        )

    # -- the sessions' process source ----------------------------------------------

    async def resume_process(
        self, session: Session, progress: OnProgress | None = None
    ) -> ClaudeProcess:
        """A new process for a session whose process is gone, with its conversation."""
        self._refuse_if_draining()
        await self.leases.acquire(session.id)  # no two replicas run one conversation
        # --resume needs the transcript: from the store when this host lacks it. A
        # session that never finished a turn may have none yet and starts afresh. A fork
        # that has not run a turn yet resumes its source's, under its own id.
        source = session.forked_from
        path = (
            self._durability.path(source, session.profile, session.cwd)
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
            session_id=session.id,
            resume=resume,
            fork_of=source if resume else "",
        )
        log.info("session %s resumed in pid %d", session.id, process.pid)
        return process

    async def turn_ended(self, session: Session) -> None:
        pid = session.process.pid if session.process else 0
        turn = self._totals.turn(
            session.id, pid, session.last_result, session.last_active_at, session.turns
        )
        try:
            await self._store.touch(session.id, dataclasses.replace(turn, model=session.model))
            if session.forked_from and session.process_turns:  # the fork has its transcript
                session.forked_from = ""
                await self._store.set_options(session.id, session.options, "")
        except StoreUnavailable as exc:  # the next turn's touch records the count again
            log.warning("session %s: turn not recorded in the store: %s", session.id, exc)
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
        session = self._sessions.get(session_id)
        process = session.release_process() if session is not None else None
        if process is not None:
            log.warning("session %s: lease lost, killing pid %d", session_id, process.pid)
            process.kill()

    # -- making room ---------------------------------------------------------------

    def _make_room(self) -> bool:
        """Free a slot for a waiting open: a warm process first, else the LRU idle session."""
        for pool in sorted(self._pools.values(), key=lambda p: p.size, reverse=True):
            if pool.give_way():
                return True
        idle = [s for s in self._sessions.values() if s.evictable]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_active_at)
        log.info("evicting the process of idle session %s to make room", victim.id)
        process = victim.release_process()  # now: no re-attach may pick it up meanwhile
        if process is not None:
            process.retire()
        return True

    async def _reap_idle(self) -> None:
        """End the processes of sessions left unattached and idle past --idle-timeout."""
        timeout = self.config.idle_timeout
        while True:
            await asyncio.sleep(min(timeout / 2, 5.0))
            cutoff = time.time() - timeout
            for session in list(self._sessions.values()):
                if session.evictable and session.last_active_at < cutoff:
                    log.info(
                        "session %s idle for %.0fs: ending its process",
                        session.id,
                        time.time() - session.last_active_at,
                    )
                    await session.stop()

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
            exit_code = await self._end(session, principal, "session.closed", ended)
            base = self.config.profile(session.profile.name)
            if exit_code is not None and base is not None:
                self._add(self._stopped_session(base, session))
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
        if self._sessions.pop(session.id, None) is None:
            return None
        self._audit.record(event, principal=principal.name, session=session.id, owner=session.owner)
        exit_code = await session.close()
        await session.idle()  # queued turns end with `session_closed` results
        self._session_tasks.pop(session.id).cancel()
        if session.attachment is not None:
            session.attachment.end(error)
        self._capacity.changed()
        return exit_code

    def drain_time_left(self) -> float:
        return max(0.0, self._drain_deadline - time.monotonic())

    async def drain(self, grace: float) -> None:
        """Stop opening sessions, tell the streams, give running turns `grace` seconds."""
        self._drain_deadline = time.monotonic() + grace
        self.draining = True
        for session in self._sessions.values():
            if session.attachment is not None:
                session.attachment.go_away(
                    grace,
                    "hotsvc is shutting down: running turns "
                    "may finish, then streams close; re-attach "
                    "after it restarts",
                )
        busy = [s for s in self._sessions.values() if s.busy]
        if busy:
            log.info("draining: up to %.1fs for the turns of %d sessions", grace, len(busy))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.idle() for s in busy)), grace)

    async def stop(self) -> None:
        """End every process, in sessions and pools; sessions stay resumable."""
        self.draining = True
        for pool in self._pools.values():
            pool.close()
        await asyncio.gather(*(s.stop() for s in self._sessions.values()))
        self._stopped.set()

    # -- reporting -----------------------------------------------------------------

    def snapshot(self, viewer: Principal | None = None) -> Snapshot:
        """The pools and sessions; with a `viewer`, only the sessions it may use are
        listed (the counts and pool figures stay service-wide)."""
        stats = self._launcher.stats
        views = [view_of(s) for s in self._sessions.values()]
        live = sum(1 for v in views if v.state not in (SessionState.STOPPED, SessionState.LOST))
        return Snapshot(
            pools=tuple(
                PoolView(p.profile.name, p.size, p.target, tuple(p.idle_pids()))
                for p in self._pools.values()
            ),
            sessions=tuple(v for v in views if viewer is None or viewer.may_use(v.owner)),
            live_sessions=live,
            stopped_sessions=len(views) - live,
            spawns=SpawnView(
                stats.spawned,
                stats.failed,
                stats.in_flight,
                stats.replaced,
                stats.warm_starts,
                stats.cold_starts,
                stats.mean_ready_seconds,
            ),
            max_sessions=self.config.max_sessions,
            draining=self.draining,
        )

    def session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())
