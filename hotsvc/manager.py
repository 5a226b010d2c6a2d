"""The registry of live sessions and the warm pools behind them."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import AsyncIterator, Iterable

from hotsvc import background
from hotsvc.config import ServiceConfig
from hotsvc.errors import Draining, InvalidRequest, SessionBusy, SessionNotFound
from hotsvc.launcher import Launcher
from hotsvc.pool import WarmPool
from hotsvc.process import ClaudeProcess
from hotsvc.session import Session

log = logging.getLogger(__name__)


class Start(enum.Enum):
    """Where an opened session's process came from."""

    WARM = "warm"
    COLD = "cold"
    ATTACHED = "attached"


class SessionManager:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.launcher = Launcher(config)
        self.pools = {name: WarmPool(profile, self.launcher)
                      for name, profile in config.profiles.items()}
        self.launcher.reclaim = self._reclaim_warm_slot
        self.sessions: dict[str, Session] = {}
        self.draining = False

    async def start(self) -> None:
        for pool in self.pools.values():
            pool.start()

    async def wait_ready(self) -> None:
        """Until every pool first reached its target (at once for pool size 0)."""
        await asyncio.gather(*(pool.filled.wait() for pool in self.pools.values()))

    # -- opening and attaching ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def attach(self, session_id: str, profile_name: str) -> AsyncIterator[
            tuple[Session, Start]]:
        """Open a new session or re-attach to a live one, for the duration of a stream."""
        if self.draining:
            raise Draining("hotsvc is shutting down and opens no sessions; retry on another "
                           "instance or after it restarts")
        if session_id:
            session, start = self._reattach(session_id), Start.ATTACHED
        else:
            session, start = await self._open(profile_name)
        session.attached = True
        try:
            yield session, start
        finally:
            session.attached = False

    def _reattach(self, session_id: str) -> Session:
        try:
            uuid.UUID(session_id)
        except ValueError:
            raise InvalidRequest(
                f"session_id {session_id!r} is not a UUID; leave it empty to open a new "
                "session, or pass the id from SessionOpened") from None
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFound(f"no live session {session_id}; it was closed or never "
                                  "existed; open a new session with an empty session_id")
        if session.attached:
            raise SessionBusy(f"session {session_id} already has a stream attached; one "
                              "stream per session: end that stream first")
        return session

    async def _open(self, profile_name: str) -> tuple[Session, Start]:
        profile = self.config.profile(profile_name)
        if profile is None:
            known = ", ".join(sorted(self.config.profiles))
            raise SessionNotFound(f"unknown profile {profile_name!r}; known profiles: {known}")
        first_turn_done = asyncio.Event()
        process = self.pools[profile.name].take(hold_refill=first_turn_done)
        if process is not None:
            self.launcher.stats.warm_starts += 1
            start = Start.WARM
        else:
            process = await self.launcher.spawn(profile, for_pool=False)
            self.launcher.stats.cold_starts += 1
            start = Start.COLD
        session = Session(profile, process, first_turn_done)
        self.sessions[session.id] = session
        background.spawn(self._forget_when_dead(session))
        log.info("session %s opened %s (pid %d, profile %s)",
                 session.id, start.value, process.pid, profile.name)
        return session, start

    def _reclaim_warm_slot(self) -> bool:
        """Close one idle warm process, from the fullest pool, to free its slot."""
        for pool in sorted(self.pools.values(), key=lambda p: p.size, reverse=True):
            if pool.give_way():
                return True
        return False

    async def _forget_when_dead(self, session: Session) -> None:
        await session.process.wait_exited()
        await session.idle()  # the turn it died in still ends with its result
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            log.info("session %s ended (pid %d exited with %s)", session.id,
                     session.process.pid, session.process.returncode)

    # -- closing ------------------------------------------------------------------

    async def close_session(self, session_id: str) -> int:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFound(f"no live session {session_id}; nothing to close")
        del self.sessions[session_id]
        return await session.close()

    async def drain(self, grace: float) -> None:
        """Stop opening sessions and give running turns up to `grace` seconds to finish."""
        self.draining = True
        busy = [s for s in self.sessions.values() if s.busy]
        if busy:
            log.info("draining: up to %.1fs for the turns of %d sessions", grace, len(busy))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.idle() for s in busy)), grace)

    async def shutdown(self) -> None:
        """End every process, warm or in a session."""
        self.draining = True
        sessions = list(self.sessions.values())
        self.sessions.clear()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()),
                             *(s.close() for s in sessions))

    def kill_all(self) -> None:
        """Last resort on the way out: SIGKILL every process group we know of."""
        for process in self._all_processes():
            process.kill()

    def _all_processes(self) -> Iterable[ClaudeProcess]:
        yield from (s.process for s in self.sessions.values())
        for pool in self.pools.values():
            yield from pool.idle_processes()

