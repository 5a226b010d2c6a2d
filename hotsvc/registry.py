"""The session registry on disk (SQLite), so sessions outlive the service and no child does.

Two tables: `sessions`, what a restarted service needs to resume each conversation, and
`processes`, every live child with its start time, so a service that died without
cleaning up (SIGKILL, OOM) can end its orphans at the next start without ever
signalling a process that merely reused a pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

# Each step moves the schema from version N (its index) to N + 1; PRAGMA user_version
# records where a file is.
MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        cwd TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        last_used_at REAL NOT NULL,
        turns INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS processes (pid INTEGER PRIMARY KEY, start_ticks INTEGER);
    """,
    # Start times as psutil reports them (seconds since the epoch).
    """
    DROP TABLE processes;
    CREATE TABLE processes (pid INTEGER PRIMARY KEY, started_at REAL NOT NULL);
    """,
)


@dataclass(frozen=True)
class SessionRecord:
    id: str
    profile: str
    owner: str
    cwd: str
    created_at: float
    last_used_at: float
    turns: int


def process_start_time(pid: int) -> float | None:
    """When `pid` started, None if it is gone: with the pid, it names one process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class Registry:
    """Sessions and live children; `path` None keeps them in memory only."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        # WAL + NORMAL: a turn's bookkeeping costs microseconds, and a crash loses at most
        # the last transaction, never the file.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()
        self._closed = False

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for step, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {step}; COMMIT;")

    def close(self) -> None:
        self._closed = True
        self._db.close()

    def _execute(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor | None:
        # Children can finish exiting after shutdown closed the registry: nothing to record.
        return None if self._closed else self._db.execute(sql, args)

    # -- sessions --------------------------------------------------------------------

    def save(self, record: SessionRecord) -> None:
        self._execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.profile,
                record.owner,
                record.cwd,
                record.created_at,
                record.last_used_at,
                record.turns,
            ),
        )

    def touch(self, session_id: str, last_used_at: float, turns: int) -> None:
        self._execute(
            "UPDATE sessions SET last_used_at = ?, turns = ? WHERE id = ?",
            (last_used_at, turns, session_id),
        )

    def forget(self, session_id: str) -> None:
        self._execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def sessions(self) -> list[SessionRecord]:
        rows = self._db.execute("SELECT * FROM sessions ORDER BY last_used_at").fetchall()
        return [SessionRecord(*row) for row in rows]

    # -- processes -------------------------------------------------------------------

    def process_started(self, pid: int) -> None:
        started = process_start_time(pid)
        if started is not None:
            self._execute("INSERT OR REPLACE INTO processes VALUES (?, ?)", (pid, started))

    def process_ended(self, pid: int) -> None:
        self._execute("DELETE FROM processes WHERE pid = ?", (pid,))

    def sweep_orphans(self) -> int:
        """Kill the process groups of children a previous run left behind; returns how many."""
        killed = 0
        for pid, started in self._db.execute("SELECT pid, started_at FROM processes"):
            if process_start_time(pid) == started:  # the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed += 1
                    log.warning("killed orphaned Claude Code process group %d", pid)
        self._db.execute("DELETE FROM processes")
        return killed
