"""Versioned schema migrations, one list per dialect; each step runs once, in order, at start.

Step N (1-based) moves a database from version N - 1 to N. SQLite records the version in
`PRAGMA user_version` (as the registry always did, so today's files migrate in place);
PostgreSQL in a `schema_migrations` table, under an advisory lock so replicas starting
together migrate once. To change the schema, append a step to both lists; never edit one
that has shipped.
"""

from __future__ import annotations

SQLITE = (
    # 1, 2: the single-host registry.
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
    """
    DROP TABLE processes;
    CREATE TABLE processes (pid INTEGER PRIMARY KEY, started_at REAL NOT NULL);
    """,
    # 3: the session store: state and totals, children per replica, transcripts, leases.
    # Rows of an older file belong to no replica ('') and are swept by the next start.
    """
    ALTER TABLE sessions ADD COLUMN state TEXT NOT NULL DEFAULT 'resumable';
    ALTER TABLE sessions ADD COLUMN model TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN cache_read_input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
    CREATE INDEX sessions_by_last_use ON sessions (last_used_at);
    CREATE TABLE processes_by_replica (
        replica_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        PRIMARY KEY (replica_id, pid)
    );
    INSERT INTO processes_by_replica SELECT '', pid, started_at FROM processes;
    DROP TABLE processes;
    ALTER TABLE processes_by_replica RENAME TO processes;
    CREATE TABLE transcript_chunks (
        session_id TEXT NOT NULL,
        first_line INTEGER NOT NULL,
        line_count INTEGER NOT NULL,
        codec INTEGER NOT NULL,
        raw_bytes INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (session_id, first_line)
    );
    CREATE TABLE leases (
        session_id TEXT PRIMARY KEY,
        replica_id TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX leases_by_replica ON leases (replica_id);
    """,
    # 4: the options a caller opened a session with, and the session a fork copies until
    # its first turn has written its own transcript.
    """
    ALTER TABLE sessions ADD COLUMN options TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN forked_from TEXT NOT NULL DEFAULT '';
    """,
    # 5: the id Claude Code knows a conversation by, when not the session's own.
    """
    ALTER TABLE sessions ADD COLUMN claude_id TEXT NOT NULL DEFAULT '';
    """,
)

POSTGRES = (
    # 1: the whole of SQLite's version 3 (times are seconds since the epoch in both).
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        cwd TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION NOT NULL,
        turns INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'resumable',
        model TEXT NOT NULL DEFAULT '',
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
        cache_read_input_tokens BIGINT NOT NULL DEFAULT 0,
        cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_by_last_use ON sessions (last_used_at);
    CREATE TABLE processes (
        replica_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (replica_id, pid)
    );
    CREATE TABLE transcript_chunks (
        session_id TEXT NOT NULL,
        first_line INTEGER NOT NULL,
        line_count INTEGER NOT NULL,
        codec SMALLINT NOT NULL,
        raw_bytes INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (session_id, first_line)
    );
    CREATE TABLE leases (
        session_id TEXT PRIMARY KEY,
        replica_id TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX leases_by_replica ON leases (replica_id);
    """,
    # 2: SQLite's version 4.
    """
    ALTER TABLE sessions ADD COLUMN options TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN forked_from TEXT NOT NULL DEFAULT '';
    """,
    # 3: SQLite's version 5.
    """
    ALTER TABLE sessions ADD COLUMN claude_id TEXT NOT NULL DEFAULT '';
    """,
)

# Both dialects read and write the same columns, in this order.
SESSION_COLUMNS = (
    "id, profile, owner, cwd, created_at, last_used_at, turns, state, model, input_tokens, "
    "output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_usd, options, "
    "forked_from, claude_id"
)

# A finished turn on its session's row: the new count, the model if reported, and the
# turn's own usage and cost added to the totals (parameters: base.touch_values).
_TOUCH = (
    "UPDATE sessions SET last_used_at = {0}, turns = {0}, "
    "model = CASE WHEN {0} = '' THEN model ELSE {0} END, "
    "input_tokens = input_tokens + {0}, output_tokens = output_tokens + {0}, "
    "cache_creation_input_tokens = cache_creation_input_tokens + {0}, "
    "cache_read_input_tokens = cache_read_input_tokens + {0}, "
    "cost_usd = cost_usd + {0} WHERE id = {0}"
)
SQLITE_TOUCH = _TOUCH.format("?")
POSTGRES_TOUCH = _TOUCH.format("%s")
