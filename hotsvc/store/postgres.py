"""The PostgreSQL store (`postgresql://…`): one database a fleet of replicas shares.

psycopg 3 in async mode over a psycopg_pool AsyncConnectionPool; statements a turn runs
are prepared on each connection after their first uses (psycopg's default). Lease times
come from the database's clock, so replicas need not agree on theirs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hotsvc.errors import SessionNotFound, StoreUnavailable
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

NOW = "extract(epoch from clock_timestamp())::double precision"
# pg_advisory_xact_lock key: replicas starting together migrate one at a time.
MIGRATION_LOCK = 0x686F74737663  # "hotsvc"
CONNECT_TIMEOUT = 10.0
POOL_MAX = 8


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(SessionStore):
    shared = True

    def __init__(self, url: str, replica_id: str, lease_seconds: float) -> None:
        super().__init__(replica_id, lease_seconds)
        self._url = url
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._usable = False

    def describe(self) -> str:
        return redact(self._url)

    async def open(self) -> None:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=POOL_MAX,
            open=False,
            kwargs={"autocommit": True},
            timeout=CONNECT_TIMEOUT,
            name="hotsvc-store",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailable(
                f"cannot connect to the session store {self.describe()} within "
                f"{CONNECT_TIMEOUT:g}s; check --store and that PostgreSQL is running"
            ) from exc
        self._pool = pool
        self._usable = True
        await self._migrate()

    async def _migrate(self) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            for step, script in enumerate(schema.POSTGRES[version:], start=version + 1):
                await conn.execute(script.encode())  # bytes: a script of many statements
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (step,))
                log.info("session store migrated to version %d", step)

    async def close(self) -> None:
        self._usable = False
        if self._pool is not None:
            await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if not self._usable or self._pool is None:
            raise StoreUnavailable(f"the session store {self.describe()} is closed")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StoreUnavailable(
                f"the session store {self.describe()} failed: {exc}; retry shortly"
            ) from exc

    async def _execute(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            cursor = await conn.execute(sql.encode(), args)
            return await cursor.fetchall() if cursor.description else []

    # -- sessions --------------------------------------------------------------------

    async def save(self, record: SessionRecord) -> None:
        row = row_of(record)
        marks = ", ".join(["%s"] * len(row))
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in schema.SESSION_COLUMNS.split(", ") if c != "id"
        )
        await self._execute(
            f"INSERT INTO sessions ({schema.SESSION_COLUMNS}) VALUES ({marks}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}",
            row,
        )

    async def touch(self, session_id: str, turn: TurnRecord) -> None:
        await self._execute(schema.POSTGRES_TOUCH, touch_values(session_id, turn))

    async def set_state(self, session_id: str, state: StoredState) -> None:
        await self._execute(
            "UPDATE sessions SET state = %s WHERE id = %s", (state.value, session_id)
        )

    async def set_options(self, session_id: str, options: SessionOptions, forked_from: str) -> None:
        await self._execute(
            "UPDATE sessions SET options = %s, forked_from = %s WHERE id = %s",
            (options.to_json(), forked_from, session_id),
        )

    async def get(self, session_id: str) -> SessionRecord | None:
        rows = await self._execute(
            f"SELECT {schema.SESSION_COLUMNS} FROM sessions WHERE id = %s", (session_id,)
        )
        return record_of(rows[0]) if rows else None

    async def sessions(self) -> list[SessionRecord]:
        rows = await self._execute(
            f"SELECT {schema.SESSION_COLUMNS} FROM sessions ORDER BY last_used_at"
        )
        return [record_of(row) for row in rows]

    async def forget(self, session_id: str) -> None:
        async with self._connection() as conn, conn.transaction():
            for table, key in (
                ("sessions", "id"),
                ("transcript_chunks", "session_id"),
                ("leases", "session_id"),
            ):
                await conn.execute(f"DELETE FROM {table} WHERE {key} = %s".encode(), (session_id,))

    # -- this replica's children -----------------------------------------------------

    async def _record_process(self, pid: int, started_at: float) -> None:
        if self._usable:
            await self._execute(
                "INSERT INTO processes VALUES (%s, %s, %s) ON CONFLICT (replica_id, pid) "
                "DO UPDATE SET started_at = excluded.started_at",
                (self.replica_id, pid, started_at),
            )

    async def process_ended(self, pid: int) -> None:
        if self._usable:
            await self._execute(
                "DELETE FROM processes WHERE replica_id = %s AND pid = %s",
                (self.replica_id, pid),
            )

    async def _recorded_processes(self) -> list[tuple[int, float]]:
        rows = await self._execute(
            "SELECT pid, started_at FROM processes WHERE replica_id = %s", (self.replica_id,)
        )
        return [(int(pid), float(started)) for pid, started in rows]

    async def _forget_previous_run(self) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM processes WHERE replica_id = %s", (self.replica_id,))
            await conn.execute("DELETE FROM leases WHERE replica_id = %s", (self.replica_id,))

    # -- transcripts -----------------------------------------------------------------

    async def append_transcript(
        self,
        session_id: str,
        lines: Sequence[bytes],
        first: int | None = None,
        turn: TurnRecord | None = None,
    ) -> int:
        check_lines(lines)
        chunk = transcripts.encode(lines) if lines else None
        async with self._connection() as conn, conn.transaction():
            # The session's row lock serializes appends to one session.
            cursor = await conn.execute(
                "SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (session_id,)
            )
            if await cursor.fetchone() is None:
                raise SessionNotFound(
                    f"no session {session_id} in the store; it was closed",
                    metadata={"sessionId": session_id},
                )
            stored = await self._stored_lines(conn, session_id)
            first = stored if first is None else first
            if first > stored:
                raise TranscriptGap(
                    f"the store holds {stored} lines of {session_id}; cannot append from {first}"
                )
            new = lines[stored - first :]
            if new:
                if len(new) != len(lines):
                    chunk = transcripts.encode(new)
                assert chunk is not None
                await conn.execute(
                    "INSERT INTO transcript_chunks VALUES (%s, %s, %s, %s, %s, %s)",
                    (session_id, stored, len(new), chunk.codec, chunk.raw_bytes, chunk.data),
                )
            if turn is not None:
                await conn.execute(schema.POSTGRES_TOUCH.encode(), touch_values(session_id, turn))
            return stored + len(new)

    @staticmethod
    async def _stored_lines(conn: psycopg.AsyncConnection[Any], session_id: str) -> int:
        cursor = await conn.execute(
            "SELECT first_line + line_count FROM transcript_chunks WHERE session_id = %s "
            "ORDER BY first_line DESC LIMIT 1",
            (session_id,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def transcript(self, session_id: str) -> bytes:
        rows = await self._execute(
            "SELECT codec, data FROM transcript_chunks WHERE session_id = %s ORDER BY first_line",
            (session_id,),
        )
        return b"".join(transcripts.decode(codec, bytes(data)) for codec, data in rows)

    async def transcript_lines(self, session_id: str) -> int:
        async with self._connection() as conn:
            return await self._stored_lines(conn, session_id)

    # -- leases ----------------------------------------------------------------------

    async def acquire_lease(self, session_id: str) -> LeaseInfo:
        # ON CONFLICT locks the row and re-checks the WHERE on its newest version: of
        # replicas racing for an expired (or no) lease, exactly one updates (or inserts).
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO leases VALUES (%s, %s, {NOW} + %s) ON CONFLICT (session_id) "
                "DO UPDATE SET replica_id = excluded.replica_id, "
                "expires_at = excluded.expires_at WHERE leases.replica_id = "
                f"excluded.replica_id OR leases.expires_at <= {NOW}",
                (session_id, self.replica_id, self.lease_seconds),
            )
            cursor = await conn.execute(
                f"SELECT replica_id, expires_at - {NOW} FROM leases WHERE session_id = %s",
                (session_id,),
            )
            row = await cursor.fetchone()
        assert row is not None  # the row this transaction wrote or found, locked till now
        return LeaseInfo(session_id, str(row[0]), float(row[1]))

    async def renew_leases(self, session_ids: Collection[str]) -> set[str]:
        rows = await self._execute(
            f"UPDATE leases SET expires_at = {NOW} + %s WHERE replica_id = %s "
            "AND session_id = ANY(%s) RETURNING session_id",
            (self.lease_seconds, self.replica_id, list(session_ids)),
        )
        return {str(row[0]) for row in rows}

    async def release_lease(self, session_id: str) -> None:
        if self._usable:
            await self._execute(
                "DELETE FROM leases WHERE session_id = %s AND replica_id = %s",
                (session_id, self.replica_id),
            )

    async def lease(self, session_id: str) -> LeaseInfo | None:
        rows = await self._execute(
            f"SELECT replica_id, expires_at - {NOW} FROM leases WHERE session_id = %s",
            (session_id,),
        )
        return LeaseInfo(session_id, str(rows[0][0]), float(rows[0][1])) if rows else None
