"""The session store: what outlives a replica, in SQLite (one host) or PostgreSQL (a fleet).

    store = open_store(url, data_dir, replica_id, lease_seconds)   # no I/O yet
    await store.open()                                               # connect, migrate
    ...
    await store.close()

`SessionStore` (hotsvc/store/base.py) is the interface the manager and launcher use;
`LeaseKeeper` holds and renews this replica's leases; `TranscriptCopy` mirrors CLI
transcript files into the store and back.
"""

from __future__ import annotations

import socket
from pathlib import Path

from hotsvc.profiles import ConfigError
from hotsvc.store.base import (
    LeaseInfo,
    SessionRecord,
    SessionStore,
    StoredState,
    TranscriptGap,
    TurnRecord,
    process_start_time,
)
from hotsvc.store.leases import LeaseKeeper, held_elsewhere
from hotsvc.store.transcripts import TranscriptCopy

__all__ = [
    "LeaseInfo",
    "LeaseKeeper",
    "SessionRecord",
    "SessionStore",
    "StoredState",
    "TranscriptCopy",
    "TranscriptGap",
    "TurnRecord",
    "default_replica_id",
    "held_elsewhere",
    "open_store",
    "process_start_time",
    "store_url",
]

REGISTRY_FILE = "registry.sqlite3"


def store_url(url: str, data_dir: Path | None) -> str:
    """`--store` as given (settings checked its scheme), or the default: the SQLite file
    under --data-dir, in memory without one."""
    if url:
        return url
    return f"sqlite:{data_dir / REGISTRY_FILE}" if data_dir else "sqlite::memory:"


def default_replica_id(url: str, port: int) -> str:
    """`--replica-id`'s default: this host's name, and in a shared store also the port it
    serves on. A SQLite store belongs to one host, so its replica keeps its name across
    restarts (on port 0 too) and takes its own leases back at once."""
    host = socket.gethostname()
    return host if url.startswith("sqlite:") else f"{host}:{port}"


def open_store(
    url: str, replica_id: str, lease_seconds: float, recover: bool = False
) -> SessionStore:
    """The backend for a URL from `store_url`; `await store.open()` connects and migrates.
    `recover`: a damaged SQLite file is moved aside and a new one started."""
    if url.startswith("sqlite:"):
        from hotsvc.store.sqlite import MEMORY, SqliteStore

        path = url.removeprefix("sqlite:")
        return SqliteStore(
            None if path == MEMORY else Path(path), replica_id, lease_seconds, recover
        )
    try:
        from hotsvc.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            f"--store postgresql://... needs psycopg: pip install 'hotsvc[postgres]' ({exc})"
        ) from exc
    return PostgresStore(url, replica_id, lease_seconds)
