"""The SQLite store: one file per host (`sqlite:PATH`), today's registry file migrated.

One worker thread owns the connection, so the event loop never waits on the disk and
every statement runs in the order it was issued. WAL with synchronous=NORMAL: a turn's
bookkeeping costs tens of microseconds, and a crash loses at most the last transaction,
never the file. Several replicas on one host may share a file: writes that read first
take the write lock up front (BEGIN IMMEDIATE), and a busy file is waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from hotsvc.errors import SessionNotFound, StoreCorrupt, StoreUnavailable
from hotsvc.options import SessionOptions
from hotsvc.store import schema, transcripts
from hotsvc.store.base import (
    LeaseInfo,
    SessionRecord,
    SessionStore,
    StoredState,
    TranscriptGap,
    TurnRecord,
    check_lines,
    record_of,
    row_of,
    touch_values,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 10_000
# The connection's page cache, in KiB. The store is written far more than read (a turn
# appends, only resume, fork and GetSessionMessages read back), so SQLite's 2 MiB default
# fills with transcript pages nobody reads again: ~30 KB per session up to its bound
# (docs/benchmarks.md). 256 KiB still holds every B-tree's interior and rightmost pages;
# a read that misses is served from the OS's page cache.
CACHE_KIB = 256


def _in_thread(
    method: Callable[Concatenate[SqliteStore, P], T],
) -> Callable[Concatenate[SqliteStore, P], Coroutine[Any, Any, T]]:
    """Run a method on the store's own thread; database errors become StoreUnavailable."""

    @functools.wraps(method)
    async def run(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._usable:
            raise StoreUnavailable(f"the session store {self.describe()} is closed")
        call = functools.partial(self._call, method, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    return run


def _unless_closed(
    method: Callable[Concatenate[SqliteStore, P], None],
) -> Callable[Concatenate[SqliteStore, P], Coroutine[Any, Any, None]]:
    """Bookkeeping that is moot once the store is closed (children can finish exiting
    after shutdown closed it): skipped then."""
    threaded = _in_thread(method)

    @functools.wraps(method)
    async def run(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> None:
        if self._usable:
            await threaded(self, *args, **kwargs)

    return run


class SqliteStore(SessionStore):
    def __init__(
        self, path: Path | None, replica_id: str, lease_seconds: float, recover: bool = False
    ) -> None:
        super().__init__(replica_id, lease_seconds)
        self.path = path
        self._recover = recover
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="store-sqlite")
        self._db: sqlite3.Connection | None = None  # used on the thread only
        self._usable = False  # open and not closing: read on the event loop only

    def describe(self) -> str:
        return f"sqlite:{self.path or MEMORY}"

    def _call(self, method: Callable[..., T], *args: object, **kwargs: object) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(
                f"the session store {self.describe()} failed: {exc}; retry shortly"
            ) from exc

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "open() the store first"
        return self._db

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from its start."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._open)
        self._usable = True

    def _open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                _check(self.path)
            except sqlite3.DatabaseError as exc:
                if not self._recover:
                    raise StoreCorrupt(
                        f"the session store {self.path} is damaged ({exc}); start with "
                        "--recover-store to move it aside (kept, with a timestamp) and begin "
                        "an empty one, or restore the file from a backup",
                        metadata={"path": str(self.path)},
                    ) from None
                recover(self.path, exc)
        db = sqlite3.connect(str(self.path or MEMORY), isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self._db = db
        with self._writing():  # under the write lock: replicas starting together migrate once
            (version,) = db.execute("PRAGMA user_version").fetchone()
            for step, script in enumerate(schema.SQLITE[version:], start=version + 1):
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {step}")

    async def close(self) -> None:
        self._usable = False
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # -- sessions --------------------------------------------------------------------

    @_in_thread
    def save(self, record: SessionRecord) -> None:
        marks = ", ".join("?" * len(row_of(record)))
        self.db.execute(
            f"INSERT OR REPLACE INTO sessions ({schema.SESSION_COLUMNS}) VALUES ({marks})",
            row_of(record),
        )

    @_in_thread
    def touch(self, session_id: str, turn: TurnRecord) -> None:
        self.db.execute(schema.SQLITE_TOUCH, touch_values(session_id, turn))

    @_in_thread
    def set_state(self, session_id: str, state: StoredState) -> None:
        self.db.execute("UPDATE sessions SET state = ? WHERE id = ?", (state.value, session_id))

    @_in_thread
    def set_options(self, session_id: str, options: SessionOptions, forked_from: str) -> None:
        self.db.execute(
            "UPDATE sessions SET options = ?, forked_from = ? WHERE id = ?",
            (options.to_json(), forked_from, session_id),
        )

    @_in_thread
    def get(self, session_id: str) -> SessionRecord | None:
        row = self.db.execute(
            f"SELECT {schema.SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return record_of(row) if row else None

    @_in_thread
    def sessions(self) -> list[SessionRecord]:
        rows = self.db.execute(
            f"SELECT {schema.SESSION_COLUMNS} FROM sessions ORDER BY last_used_at"
        ).fetchall()
        return [record_of(row) for row in rows]

    @_in_thread
    def forget(self, session_id: str) -> None:
        with self._writing() as db:
            for table, key in (
                ("sessions", "id"),
                ("transcript_chunks", "session_id"),
                ("leases", "session_id"),
            ):
                db.execute(f"DELETE FROM {table} WHERE {key} = ?", (session_id,))

    # -- this replica's children -----------------------------------------------------

    @_unless_closed
    def _record_process(self, pid: int, started_at: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO processes VALUES (?, ?, ?)", (self.replica_id, pid, started_at)
        )

    @_unless_closed
    def process_ended(self, pid: int) -> None:
        self.db.execute(
            "DELETE FROM processes WHERE replica_id = ? AND pid = ?", (self.replica_id, pid)
        )

    @_in_thread
    def _recorded_processes(self) -> list[tuple[int, float]]:
        return self.db.execute(
            "SELECT pid, started_at FROM processes WHERE replica_id IN (?, '')",
            (self.replica_id,),
        ).fetchall()

    @_in_thread
    def _forget_previous_run(self) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM processes WHERE replica_id IN (?, '')", (self.replica_id,))
            db.execute("DELETE FROM leases WHERE replica_id = ?", (self.replica_id,))

    # -- transcripts -----------------------------------------------------------------

    @_in_thread
    def append_transcript(
        self,
        session_id: str,
        lines: Sequence[bytes],
        first: int | None = None,
        turn: TurnRecord | None = None,
    ) -> int:
        check_lines(lines)
        with self._writing() as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
                raise SessionNotFound(
                    f"no session {session_id} in the store; it was closed",
                    metadata={"sessionId": session_id},
                )
            stored = self._stored_lines(session_id)
            first = stored if first is None else first
            if first > stored:
                raise TranscriptGap(
                    f"the store holds {stored} lines of {session_id}; cannot append from {first}"
                )
            new = lines[stored - first :]
            if new:
                chunk = transcripts.encode(new)
                db.execute(
                    "INSERT INTO transcript_chunks VALUES (?, ?, ?, ?, ?, ?)",
                    (session_id, stored, len(new), chunk.codec, chunk.raw_bytes, chunk.data),
                )
            if turn is not None:
                db.execute(schema.SQLITE_TOUCH, touch_values(session_id, turn))
            return stored + len(new)

    def _stored_lines(self, session_id: str) -> int:
        row = self.db.execute(
            "SELECT first_line + line_count FROM transcript_chunks WHERE session_id = ? "
            "ORDER BY first_line DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        return int(row[0]) if row else 0

    @_in_thread
    def transcript(self, session_id: str) -> bytes:
        rows = self.db.execute(
            "SELECT codec, data FROM transcript_chunks WHERE session_id = ? ORDER BY first_line",
            (session_id,),
        )
        return b"".join(transcripts.decode(codec, data) for codec, data in rows)

    @_in_thread
    def transcript_lines(self, session_id: str) -> int:
        return self._stored_lines(session_id)

    # -- leases ----------------------------------------------------------------------

    @_in_thread
    def acquire_lease(self, session_id: str) -> LeaseInfo:
        with self._writing() as db:
            now = time.time()
            db.execute(
                "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
                "replica_id = excluded.replica_id, expires_at = excluded.expires_at "
                "WHERE leases.replica_id = excluded.replica_id OR leases.expires_at <= ?",
                (session_id, self.replica_id, now + self.lease_seconds, now),
            )
            holder, expires_at = db.execute(
                "SELECT replica_id, expires_at FROM leases WHERE session_id = ?", (session_id,)
            ).fetchone()
        return LeaseInfo(session_id, holder, expires_at - now)

    @_in_thread
    def renew_leases(self, session_ids: Collection[str]) -> set[str]:
        rows = self.db.execute(
            "UPDATE leases SET expires_at = ? WHERE replica_id = ? "
            "AND session_id IN (SELECT value FROM json_each(?)) RETURNING session_id",
            (time.time() + self.lease_seconds, self.replica_id, json.dumps(list(session_ids))),
        ).fetchall()
        return {row[0] for row in rows}

    @_unless_closed
    def release_lease(self, session_id: str) -> None:
        self.db.execute(
            "DELETE FROM leases WHERE session_id = ? AND replica_id = ?",
            (session_id, self.replica_id),
        )

    @_in_thread
    def lease(self, session_id: str) -> LeaseInfo | None:
        row = self.db.execute(
            "SELECT replica_id, expires_at FROM leases WHERE session_id = ?", (session_id,)
        ).fetchone()
        return LeaseInfo(session_id, row[0], row[1] - time.time()) if row else None


def _statements(script: str) -> Iterator[str]:
    """A migration's statements, to run one by one inside one transaction
    (executescript would commit the transaction first)."""
    for statement in script.split(";"):
        if statement.strip():
            yield statement


def _check(path: Path) -> None:
    """Raise sqlite3.DatabaseError when the file is not a sound database."""
    if not path.exists():
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (verdict,) = db.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise sqlite3.DatabaseError(verdict)
    finally:
        db.close()


def recover(path: Path, damage: Exception) -> None:
    """Move a damaged store aside, naming the sessions it held as far as they are readable."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(kept.with_name(kept.name + suffix))
    lost = _readable_session_ids(kept)
    log.error(
        "the session store %s was damaged (%s): moved to %s, starting empty; %s",
        path,
        damage,
        kept,
        f"sessions lost: {', '.join(lost)}" if lost else "no session could be read from it",
    )


def _readable_session_ids(path: Path) -> list[str]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [row[0] for row in db.execute("SELECT id FROM sessions")]
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return []
