"""What a session store holds, and the interface every backend implements.

A store keeps what must outlive one replica: the registry of sessions, the live children
of each replica (for the orphan sweep), a copy of each session's transcript, and the
leases that let one replica at a time run a session. The manager and launcher use it
through `SessionStore`; `hotsvc.store.open_store` picks the backend from `--store`.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import logging
import os
import signal
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import psutil

from hotsvc.claude.events import Usage
from hotsvc.options import SessionOptions

log = logging.getLogger(__name__)


class StoredState(enum.StrEnum):
    """What the store knows of a session; live states (busy, attached) are per replica."""

    RESUMABLE = "resumable"  # its conversation can be resumed (`--resume`)
    LOST = "lost"  # its transcript is gone everywhere: DATA_LOSS on open


@dataclass(frozen=True)
class SessionRecord:
    id: str
    profile: str
    owner: str = ""
    cwd: str = ""
    created_at: float = 0.0
    last_used_at: float = 0.0
    turns: int = 0
    state: StoredState = StoredState.RESUMABLE
    model: str = ""
    usage: Usage = field(default_factory=Usage)  # totals over every turn
    cost_usd: float = 0.0
    options: SessionOptions = field(default_factory=SessionOptions)  # the caller's, at open
    forked_from: str = ""  # a fork's source, until the fork has a transcript of its own
    # The id Claude Code knows the conversation by (its transcript's name, --resume), when
    # not `id`: a new session under a caller's id that took a warm process.
    claude_id: str = ""


@dataclass(frozen=True)
class TurnRecord:
    """What a finished turn adds to its session's record (`SessionStore.touch`)."""

    last_used_at: float
    turns: int  # the session's new count, not an increment
    model: str = ""  # empty keeps the recorded one
    usage: Usage = field(default_factory=Usage)  # this turn's, added to the totals
    cost_usd: float = 0.0  # this turn's, added to the total


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a session's lease, and for how much longer unless renewed."""

    session_id: str
    replica_id: str
    seconds_left: float  # <= 0: expired, free to take over


class TranscriptGap(ValueError):
    """An append would leave a hole: the store holds fewer lines than `first`."""


def process_start_time(pid: int) -> float | None:
    """When `pid` started, None if it is gone: with the pid, it names one process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def touch_values(session_id: str, turn: TurnRecord) -> tuple[object, ...]:
    """The parameters of each dialect's TOUCH statement, in its order."""
    usage = turn.usage
    return (
        turn.last_used_at,
        turn.turns,
        turn.model,
        turn.model,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        turn.cost_usd,
        session_id,
    )


def check_lines(lines: Sequence[bytes]) -> None:
    for line in lines:
        if b"\n" in line:
            raise ValueError("a transcript line must not contain a newline")


class SessionStore(abc.ABC):
    """Sessions, children, transcripts and leases of a replica, in SQLite or PostgreSQL.

    Every method is a coroutine; none holds the event loop for I/O. Methods that reach
    the database raise `hotsvc.errors.StoreUnavailable` when it cannot be reached.
    """

    # Whether other replicas use it too: then each loads sessions as it is asked for them.
    shared: ClassVar[bool] = False

    def __init__(self, replica_id: str, lease_seconds: float) -> None:
        self.replica_id = replica_id
        self.lease_seconds = lease_seconds

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs: never a password."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema to the current version (migrations run here)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connections; later process bookkeeping is ignored."""

    # -- sessions --------------------------------------------------------------------

    @abc.abstractmethod
    async def save(self, record: SessionRecord) -> None:
        """Insert or replace a session's record."""

    @abc.abstractmethod
    async def touch(self, session_id: str, turn: TurnRecord) -> None:
        """Record a finished turn: last use, turn count, model, usage and cost totals."""

    @abc.abstractmethod
    async def set_state(self, session_id: str, state: StoredState) -> None: ...

    @abc.abstractmethod
    async def set_options(self, session_id: str, options: SessionOptions, forked_from: str) -> None:
        """Record what a resumed process must start with: the session's options (changed
        by controls like set_model) and, for a fork, the session it still copies."""

    @abc.abstractmethod
    async def get(self, session_id: str) -> SessionRecord | None: ...

    @abc.abstractmethod
    async def sessions(self) -> list[SessionRecord]:
        """Every session, least recently used first."""

    @abc.abstractmethod
    async def forget(self, session_id: str) -> None:
        """Delete a session with its transcript and lease."""

    # -- this replica's children -----------------------------------------------------

    async def process_started(self, pid: int) -> None:
        started = process_start_time(pid)
        if started is not None:
            await self._record_process(pid, started)

    @abc.abstractmethod
    async def _record_process(self, pid: int, started_at: float) -> None: ...

    @abc.abstractmethod
    async def process_ended(self, pid: int) -> None: ...

    @abc.abstractmethod
    async def _recorded_processes(self) -> list[tuple[int, float]]:
        """This replica's children as (pid, start time), with pre-fleet rows (no replica)."""

    @abc.abstractmethod
    async def _forget_previous_run(self) -> None:
        """Drop the rows `_recorded_processes` returned and this replica's leases."""

    async def sweep_orphans(self) -> int:
        """At start: kill the process groups a previous run of this replica left behind
        and drop its leases (nothing of it runs any more); returns how many groups."""
        killed = 0
        for pid, started in await self._recorded_processes():
            if process_start_time(pid) == started:  # the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed += 1
                    log.warning("killed orphaned Claude Code process group %d", pid)
        await self._forget_previous_run()
        return killed

    # -- transcripts -----------------------------------------------------------------

    @abc.abstractmethod
    async def append_transcript(
        self,
        session_id: str,
        lines: Sequence[bytes],
        first: int | None = None,
        turn: TurnRecord | None = None,
    ) -> int:
        """Append transcript lines (without their newlines); returns the lines now stored.
        With `turn`, the session's record takes that turn (as `touch`) in the same
        transaction: a turn's entries and its count land together, in one round trip.

        `first` is the number of the first line given (0-based): lines the store already
        has are skipped, so a retried or repeated append stores nothing twice, and a
        `first` past the end raises TranscriptGap. None appends at the end. Concurrent
        appends to one session are serialized; each lands whole. Raises SessionNotFound
        for a session the store does not know (e.g. forgotten meanwhile).
        """

    @abc.abstractmethod
    async def transcript(self, session_id: str) -> bytes:
        """The stored transcript: every line in order, each ending in a newline."""

    @abc.abstractmethod
    async def transcript_lines(self, session_id: str) -> int:
        """How many lines are stored."""

    # -- leases ----------------------------------------------------------------------

    @abc.abstractmethod
    async def acquire_lease(self, session_id: str) -> LeaseInfo:
        """Take (or extend) the session's lease unless another replica holds it unexpired.

        Atomic: of replicas racing, exactly one wins. Returns the holder afterwards: this
        replica's id if it won. Use `hotsvc.store.LeaseKeeper`, which also renews.
        """

    @abc.abstractmethod
    async def renew_leases(self, session_ids: Collection[str]) -> set[str]:
        """Extend this replica's leases on `session_ids`; returns those still held."""

    @abc.abstractmethod
    async def release_lease(self, session_id: str) -> None:
        """Give the lease up, if this replica holds it."""

    @abc.abstractmethod
    async def lease(self, session_id: str) -> LeaseInfo | None:
        """Who holds the session (expired leases included, with seconds_left <= 0)."""


def row_of(record: SessionRecord) -> tuple[object, ...]:
    """The record as the values of `schema.SESSION_COLUMNS`."""
    usage = record.usage
    return (
        record.id,
        record.profile,
        record.owner,
        record.cwd,
        record.created_at,
        record.last_used_at,
        record.turns,
        record.state.value,
        record.model,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        record.cost_usd,
        record.options.to_json(),
        record.forked_from,
        record.claude_id,
    )


def record_of(row: Sequence[object]) -> SessionRecord:
    """A row of `schema.SESSION_COLUMNS` as a record."""
    (sid, profile, owner, cwd, created, used, turns, state, model, *tokens, cost) = row[:14]
    options, forked_from, claude_id = row[14:]
    return SessionRecord(
        str(sid),
        str(profile),
        str(owner),
        str(cwd),
        float(created),  # type: ignore[arg-type]
        float(used),  # type: ignore[arg-type]
        int(turns),  # type: ignore[call-overload]
        StoredState(str(state)),
        str(model),
        Usage(*(int(t) for t in tokens)),  # type: ignore[call-overload]
        float(cost),  # type: ignore[arg-type]
        SessionOptions.from_json(str(options)),
        str(forked_from),
        str(claude_id),
    )
