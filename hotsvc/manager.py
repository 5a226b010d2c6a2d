"""The registry of sessions, the warm pools behind them, and their lifecycle policies.

A session is a conversation; its process is a cache. Processes end (crash, idle timeout,
eviction to make room, recycling, a service restart) and the conversation resumes in a
new one with `--resume` on the next open or turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable

from hotsvc import background
from hotsvc.config import ServiceConfig
from hotsvc.errors import (
    Draining,
    InvalidRequest,
    ProfileNotFound,
    SessionBusy,
    SessionNotFound,
    clip,
)
from hotsvc.launcher import Launcher
from hotsvc.pool import WarmPool
from hotsvc.process import ClaudeProcess
from hotsvc.registry import Registry, SessionRecord
from hotsvc.session import Session

log = logging.getLogger(__name__)


class Start(enum.Enum):
    """Where an opened session's process came from."""

    WARM = "warm"
    COLD = "cold"
    ATTACHED = "attached"
    RESUMED = "resumed"


def check_session_id(session_id: str) -> None:
    try:
        uuid.UUID(session_id)
    except ValueError:
        raise InvalidRequest(
            f"session_id {clip(session_id)!r} is not a UUID; leave it empty to open a new "
            "session, or pass the id from SessionOpened",
            field="session_id", metadata={"sessionId": clip(session_id)}) from None


class SessionManager:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        data_dir = config.data_dir
        self.registry = Registry(data_dir / "registry.sqlite3" if data_dir else None)
        self.launcher = Launcher(config, self.registry)
        self.pools = {name: WarmPool(profile, self.launcher)
                      for name, profile in config.profiles.items()}
        self.launcher.reclaim = self._reclaim_slot
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self._drain_deadline = 0.0
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        swept = self.registry.sweep_orphans()
        if swept:
            log.warning("ended %d Claude Code processes left by a previous run", swept)
        self._restore_sessions()
        for pool in self.pools.values():
            pool.start()
        if self.config.idle_timeout > 0:
            self._reaper = asyncio.create_task(self._reap_idle(), name="idle-reaper")

    def _restore_sessions(self) -> None:
        for record in self.registry.sessions():
            profile = self.config.profile(record.profile)
            if profile is None:
                log.warning("session %s needs profile %r, which is no longer configured",
                            record.id, record.profile)
                continue
            self.sessions[record.id] = Session(
                record.id, profile, self.config, self, owner=record.owner,
                created_at=record.created_at, turns=record.turns)
        if self.sessions:
            log.info("restored %d sessions; each resumes on its next open", len(self.sessions))

    async def wait_ready(self) -> None:
        """Until every pool first reached its target (at once for pool size 0)."""
        await asyncio.gather(*(pool.filled.wait() for pool in self.pools.values()))

    @property
    def live_sessions(self) -> int:
        return sum(1 for s in self.sessions.values() if s.live)

    # -- opening and attaching ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def attach(self, session_id: str, profile_name: str, owner: str = "",
                     stream_alive: Callable[[], bool] | None = None,
                     ) -> AsyncIterator[tuple[Session, Start]]:
        """Open a new session or re-attach to a known one, for the duration of a stream.

        `stream_alive` says whether the attaching RPC is still there; each attach needs
        its own (the attachment is identified by it).
        """
        stream_alive = stream_alive or (lambda: True)
        if self.draining:
            raise Draining("hotsvc is shutting down and opens no sessions; retry on another "
                           "instance or after it restarts",
                           metadata={"drainSecondsLeft": f"{self.drain_time_left():.1f}"})
        if session_id:
            session = self._attachable(session_id)
            session.attachment = stream_alive  # claimed before any await: one stream each
            try:
                _, resumed = await session.ensure_process()
            except BaseException:
                session.attachment = None
                raise
            start = Start.RESUMED if resumed else Start.ATTACHED
        else:
            session, start = await self._open(profile_name, owner)
            session.attachment = stream_alive
        try:
            yield session, start
        finally:
            if session.attachment is stream_alive:  # not taken over by a newer stream
                session.attachment = None

    def _attachable(self, session_id: str) -> Session:
        check_session_id(session_id)
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFound(f"no session {session_id}; it was closed or never "
                                  "existed; open a new session with an empty session_id",
                                  metadata={"sessionId": session_id})
        if session.attached:
            raise SessionBusy(f"session {session_id} already has a stream attached; one "
                              "stream per session: end that stream first",
                              metadata={"sessionId": session_id})
        return session

    async def _open(self, profile_name: str, owner: str) -> tuple[Session, Start]:
        profile = self.config.profile(profile_name)
        if profile is None:
            known = ", ".join(sorted(self.config.profiles))
            raise ProfileNotFound(f"unknown profile {clip(profile_name)!r}; known profiles: "
                                  f"{known}", metadata={"profile": clip(profile_name),
                                                        "knownProfiles": known})
        first_turn_done = asyncio.Event()
        process = self.pools[profile.name].take(hold_refill=first_turn_done)
        if process is not None:
            self.launcher.stats.warm_starts += 1
            start = Start.WARM
        else:
            process = await self.launcher.spawn(profile, for_pool=False)
            self.launcher.stats.cold_starts += 1
            start = Start.COLD
        session = Session(process.session_id, profile, self.config, self, process,
                          owner=owner, first_turn_done=first_turn_done)
        self.sessions[session.id] = session
        self.registry.save(SessionRecord(session.id, profile.name, owner, profile.cwd,
                                         session.created_at, session.last_active_at, 0))
        log.info("session %s opened %s (pid %d, profile %s)",
                 session.id, start.value, process.pid, profile.name)
        return session, start

    # -- the session's process source ---------------------------------------------

    async def resume_process(self, session: Session) -> ClaudeProcess:
        """A new process for a session whose process is gone, with its conversation."""
        if self.draining:
            raise Draining("hotsvc is shutting down",
                           metadata={"drainSecondsLeft": f"{self.drain_time_left():.1f}"})
        process = await self.launcher.spawn(session.profile, for_pool=False,
                                            session_id=session.id,
                                            resume=session.turns_completed > 0)
        log.info("session %s resumed in pid %d", session.id, process.pid)
        return process

    def turn_ended(self, session: Session) -> None:
        self.registry.touch(session.id, session.last_active_at, session.turns_completed)

    # -- making room --------------------------------------------------------------

    def _reclaim_slot(self) -> bool:
        """Free a slot for a new session: a warm process first, else the LRU idle session."""
        for pool in sorted(self.pools.values(), key=lambda p: p.size, reverse=True):
            if pool.give_way():
                return True
        idle = [s for s in self.sessions.values()
                if s.live and not s.attached and not s.busy]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_active_at)
        log.info("evicting the process of idle session %s to make room", victim.id)
        process = victim.release_process()  # now: no re-attach may pick it up meanwhile
        if process is not None:
            background.spawn(process.close())
        return True

    async def _reap_idle(self) -> None:
        """End the processes of sessions left unattached and idle past --idle-timeout."""
        timeout = self.config.idle_timeout
        while True:
            await asyncio.sleep(min(timeout / 2, 5.0))
            cutoff = time.time() - timeout
            for session in list(self.sessions.values()):
                if (session.live and not session.attached and not session.busy
                        and session.last_active_at < cutoff):
                    log.info("session %s idle for %.0fs: ending its process", session.id,
                             time.time() - session.last_active_at)
                    await session.stop()

    # -- closing ------------------------------------------------------------------

    async def close_session(self, session_id: str) -> int:
        check_session_id(session_id)
        session = self.sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFound(f"no session {session_id}; nothing to close",
                                  metadata={"sessionId": session_id})
        self.registry.forget(session_id)
        return await session.close()

    def drain_time_left(self) -> float:
        return max(0.0, self._drain_deadline - time.monotonic())

    async def drain(self, grace: float) -> None:
        """Stop opening sessions and give running turns up to `grace` seconds to finish."""
        self._drain_deadline = time.monotonic() + grace
        self.draining = True
        busy = [s for s in self.sessions.values() if s.busy]
        if busy:
            log.info("draining: up to %.1fs for the turns of %d sessions", grace, len(busy))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.idle() for s in busy)), grace)

    async def shutdown(self) -> None:
        """End every process, warm or in a session; sessions stay resumable in the registry."""
        self.draining = True
        if self._reaper:
            self._reaper.cancel()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()),
                             *(s.stop() for s in self.sessions.values()))
        self.registry.close()

    def kill_all(self) -> None:
        """Last resort on the way out: SIGKILL every process group we know of."""
        for process in self._all_processes():
            process.kill()

    def _all_processes(self) -> Iterable[ClaudeProcess]:
        yield from (s.process for s in self.sessions.values() if s.process is not None)
        for pool in self.pools.values():
            yield from pool.idle_processes()
