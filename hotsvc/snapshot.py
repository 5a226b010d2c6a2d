"""Read-only views of the service's state, for PoolStatus and whatever else reports it."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from hotsvc.claude.events import Result
from hotsvc.launcher import SpawnStats
from hotsvc.pool import WarmPool
from hotsvc.principal import Principal
from hotsvc.session import Session
from hotsvc.store import SessionRecord, StoredState


class Start(enum.Enum):
    """Where an opened session's process came from."""

    WARM = "warm"
    COLD = "cold"
    ATTACHED = "attached"
    RESUMED = "resumed"


class SessionState(enum.Enum):
    IDLE = "idle"  # live, no stream attached
    BUSY = "busy"  # running a turn
    ATTACHED = "attached"  # a stream is attached, no turn running
    STOPPED = "stopped"  # no process; the next open or turn resumes it
    LOST = "lost"  # its transcript is gone everywhere: it cannot resume


@dataclass(frozen=True, slots=True)
class Opened:
    """What a stream learns when it attaches."""

    session_id: str
    start: Start
    pid: int
    profile: str
    last_turn_id: str
    last_result: Result | None


def opened_of(session: Session, start: Start) -> Opened:
    process = session.process
    return Opened(
        session.id,
        start,
        process.pid if process else 0,
        session.profile.name,
        session.last_turn_id,
        session.last_result,
    )


@dataclass(frozen=True, slots=True)
class SessionView:
    id: str
    state: SessionState
    pid: int
    created_at: float
    last_active_at: float
    turns: int
    profile: str
    attached: bool
    owner: str
    rss_bytes: int = 0  # its process's resident memory; 0 without one


@dataclass(frozen=True, slots=True)
class PoolView:
    profile: str
    size: int
    target: int
    idle_pids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SpawnView:
    spawned: int
    failed: int
    in_flight: int
    replaced: int
    warm_starts: int
    cold_starts: int
    mean_ready_seconds: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    pools: tuple[PoolView, ...]
    sessions: tuple[SessionView, ...]  # the ones the viewer may see
    live_sessions: int  # service-wide, like the pool figures
    stopped_sessions: int
    spawns: SpawnView
    max_sessions: int
    draining: bool


def view_of(session: Session) -> SessionView:
    process = session.process
    if session.lost:
        state, pid = SessionState.LOST, 0
    elif not session.live or process is None:
        state, pid = SessionState.STOPPED, 0
    else:
        pid = process.pid
        state = (
            SessionState.BUSY
            if session.busy
            else SessionState.ATTACHED
            if session.attached
            else SessionState.IDLE
        )
    return SessionView(
        session.id,
        state,
        pid,
        session.created_at,
        session.last_active_at,
        session.turns,
        session.profile.name,
        session.attached,
        session.owner,
        resident_bytes(pid) if pid else 0,
    )


def state_of_record(record: SessionRecord) -> SessionState:
    """A session known only by its record: stopped, or lost if its transcript is gone."""
    return SessionState.LOST if record.state is StoredState.LOST else SessionState.STOPPED


def view_of_parked(record: SessionRecord) -> SessionView:
    """A stopped session kept as its record alone (registry.py)."""
    return SessionView(
        record.id,
        state_of_record(record),
        0,
        record.created_at,
        record.last_used_at,
        record.turns,
        record.profile,
        False,
        record.owner,
    )


def resident_bytes(pid: int) -> int:
    """Resident memory of `pid`, 0 if it is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def snapshot_of(
    pools: Iterable[WarmPool],
    sessions: Iterable[Session],
    parked: Iterable[SessionRecord],
    stats: SpawnStats,
    max_sessions: int,
    draining: bool,
    viewer: Principal | None,
) -> Snapshot:
    """With a `viewer`, only the sessions it may use are listed (the counts and pool
    figures stay service-wide)."""
    views = [view_of(s) for s in sessions] + [view_of_parked(r) for r in parked]
    live = sum(1 for v in views if v.state not in (SessionState.STOPPED, SessionState.LOST))
    return Snapshot(
        pools=tuple(
            PoolView(p.profile.name, p.size, p.target, tuple(p.idle_pids())) for p in pools
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
        max_sessions=max_sessions,
        draining=draining,
    )
