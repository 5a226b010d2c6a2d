"""The session store, the same suite on SQLite and on PostgreSQL: sessions, the orphan
sweep per replica, transcripts, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hotsvc.claude.events import Result, Usage
from hotsvc.errors import SessionNotFound
from hotsvc.options import SessionOptions
from hotsvc.store import (
    SessionRecord,
    StoredState,
    TranscriptCopy,
    TranscriptGap,
    TurnRecord,
    open_store,
    process_start_time,
    schema,
)
from hotsvc.store.turns import TurnTotals
from tests.conftest import OpenStore, pid_alive

StandIn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """Starts stand-ins for children: each leads its own process group, like the CLI."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen(argv or ("sleep", "300"), start_new_session=True))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


OPTIONS = SessionOptions(model="sonnet", allowed_tools=("Read", "Bash(git *)"), max_turns=3)


def record(session_id: str, **fields: object) -> SessionRecord:
    values: dict[str, object] = {
        "profile": "default",
        "created_at": 1.0,
        "last_used_at": 1.0,
        **fields,
    }
    return SessionRecord(session_id, **values)  # type: ignore[arg-type]


async def test_sessions_survive_a_reopen(stores: OpenStore) -> None:
    store = await stores()
    await store.save(record("s-1", owner="alice", cwd="/srv", last_used_at=2.0, model="opus"))
    await store.touch("s-1", TurnRecord(3.0, 1, usage=Usage(10, 20, 1, 2), cost_usd=0.25))
    await store.touch("s-1", TurnRecord(4.0, 2, model="sonnet", usage=Usage(5, 5, 0, 0)))
    await store.set_options("s-1", OPTIONS, "s-0")
    await store.save(record("s-2", last_used_at=1.5))
    await store.save(record("s-3", last_used_at=0.5))
    await store.set_state("s-3", StoredState.LOST)
    await store.forget("s-2")
    await store.close()

    again = await stores()
    assert await again.sessions() == [
        record("s-3", last_used_at=0.5, state=StoredState.LOST),
        record(
            "s-1",
            owner="alice",
            cwd="/srv",
            last_used_at=4.0,
            turns=2,
            model="sonnet",
            usage=Usage(15, 25, 1, 2),
            cost_usd=0.25,
            options=OPTIONS,
            forked_from="s-0",
        ),
    ]
    assert await again.get("s-2") is None
    assert (await again.get("s-3")) == record("s-3", last_used_at=0.5, state=StoredState.LOST)


async def test_sweep_kills_this_replicas_orphans_only(stores: OpenStore, stand_in: StandIn) -> None:
    leftover = stand_in("sh", "-c", "sleep 300 & wait")  # with a child, like a tool's
    reused, others = stand_in(), stand_in()
    first_run = await stores("replica-a")
    await first_run.process_started(leftover.pid)
    # A "reused" pid: its recorded start time is not its own.
    started = process_start_time(reused.pid)
    assert started is not None
    await first_run._record_process(reused.pid, started - 1)
    other_replica = await stores("replica-b")
    await other_replica.process_started(others.pid)
    await first_run.close()  # replica-a died without cleaning up

    restarted = await stores("replica-a")
    assert await restarted.sweep_orphans() == 1
    assert leftover.wait(timeout=30) == -9
    assert pid_alive(reused.pid) and pid_alive(others.pid)
    assert await restarted.sweep_orphans() == 0  # the rows went with the sweep
    assert await other_replica.sweep_orphans() == 1  # its own row was kept
    assert others.wait(timeout=30) == -9


async def test_process_rows_go_when_children_end(stores: OpenStore, stand_in: StandIn) -> None:
    store = await stores()
    child = stand_in()
    await store.process_started(child.pid)
    await store.process_ended(child.pid)
    assert await store.sweep_orphans() == 0
    assert pid_alive(child.pid)


def transcript_lines(count: int, start: int = 0) -> list[bytes]:
    """Lines shaped like the CLI's: JSON objects repeating the session's envelope."""
    return [
        b'{"type":"user","sessionId":"s-1","cwd":"/srv/repo","version":"2.1.330",'
        b'"message":{"role":"user","content":"turn %d"}}' % n
        for n in range(start, start + count)
    ]


async def test_transcript_append_read_and_delete(stores: OpenStore) -> None:
    store = await stores()
    await store.save(record("s-1"))
    assert await store.transcript("s-1") == b""
    assert await store.append_transcript("s-1", transcript_lines(3)) == 3
    # A repeated append (a retry, or a second copy of the same file) stores nothing twice.
    assert await store.append_transcript("s-1", transcript_lines(5), first=0) == 5
    assert await store.append_transcript("s-1", transcript_lines(1, start=5), first=5) == 6
    with pytest.raises(TranscriptGap):
        await store.append_transcript("s-1", transcript_lines(1, start=9), first=9)
    with pytest.raises(ValueError):
        await store.append_transcript("s-1", [b"two\nlines"])
    await store.close()

    again = await stores()
    assert await again.transcript("s-1") == b"".join(line + b"\n" for line in transcript_lines(6))
    assert await again.transcript_lines("s-1") == 6
    await again.forget("s-1")
    assert await again.transcript("s-1") == b""
    with pytest.raises(SessionNotFound):  # a late append after the session closed
        await again.append_transcript("s-1", transcript_lines(1))
    assert await again.transcript("s-1") == b""


async def test_a_turns_record_lands_with_its_lines_or_not_at_all(stores: OpenStore) -> None:
    store = await stores()
    await store.save(record("s-1"))
    turn = TurnRecord(5.0, 1, model="opus", usage=Usage(3, 4, 0, 0), cost_usd=0.5)
    assert await store.append_transcript("s-1", transcript_lines(2), 0, turn) == 2
    with pytest.raises(TranscriptGap):  # refused whole: the record is not taken either
        await store.append_transcript("s-1", transcript_lines(1, start=7), 7, turn)
    again = await store.get("s-1")
    assert again == record(
        "s-1", last_used_at=5.0, turns=1, model="opus", usage=Usage(3, 4, 0, 0), cost_usd=0.5
    )


async def test_concurrent_appends_land_whole_and_once(stores: OpenStore) -> None:
    replica_a, replica_b = await stores("replica-a"), await stores("replica-b")
    await replica_a.save(record("s-1"))
    batches = [[b"batch %d line %d" % (b, n) for n in range(5)] for b in range(20)]
    await asyncio.gather(
        *(
            (replica_a if b % 2 else replica_b).append_transcript("s-1", batch)
            for b, batch in enumerate(batches)
        )
    )
    lines = (await replica_a.transcript("s-1")).splitlines()
    assert sorted(lines) == sorted(line for batch in batches for line in batch)
    for start in range(0, len(lines), 5):  # every batch contiguous, in its own order
        assert lines[start : start + 5] in batches

    # The same new lines from two writers at once: stored once.
    more = [b"more %d" % n for n in range(3)]
    counts = await asyncio.gather(
        replica_a.append_transcript("s-1", more, first=100),
        replica_b.append_transcript("s-1", more, first=100),
    )
    assert list(counts) == [103, 103]
    assert (await replica_b.transcript("s-1")).splitlines() == [*lines, *more]


async def test_transcript_copy_pushes_only_new_lines_and_restores(
    stores: OpenStore, tmp_path: Path
) -> None:
    store = await stores()
    await store.save(record("s-1"))
    path = tmp_path / "projects" / "-srv" / "s-1.jsonl"
    path.parent.mkdir(parents=True)
    copy = TranscriptCopy(store)
    path.write_bytes(b"one\ntwo\n")
    assert await copy.push("s-1", path) == 2
    with path.open("ab") as file:
        file.write(b"three\nfour (still being writ")  # the CLI mid-write
    assert await copy.push("s-1", path) == 3
    with path.open("ab") as file:
        file.write(b"ten)\n")
    assert await copy.push("s-1", path) == 4
    # Another replica (a new copier) resumes where the store is, not from the start.
    assert await TranscriptCopy(store).push("s-1", path) == 4

    path.unlink()  # a host without the transcript
    assert await copy.restore("s-1", path)
    assert path.read_bytes() == b"one\ntwo\nthree\nfour (still being written)\n"
    assert not await copy.restore("s-1", path)  # already complete: left alone
    with path.open("ab") as file:
        file.write(b"five\n")
    assert await copy.push("s-1", path) == 5


OLD_SCHEMA = """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        cwd TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        last_used_at REAL NOT NULL,
        turns INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE processes (pid INTEGER PRIMARY KEY, started_at REAL NOT NULL);
    PRAGMA user_version = 2;
"""


async def test_todays_registry_file_is_migrated(tmp_path: Path, stand_in: StandIn) -> None:
    """A registry.sqlite3 written before the store (schema 2) opens with its sessions,
    and its recorded children are swept by whichever replica starts first."""
    path = tmp_path / "registry.sqlite3"
    leftover = stand_in()
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO sessions VALUES ('s-1', 'default', 'bob', '/w', 1, 2, 3)")
        started = process_start_time(leftover.pid)
        db.execute("INSERT INTO processes VALUES (?, ?)", (leftover.pid, started))
    store = open_store(f"sqlite:{path}", "host:50051", 15.0)
    await store.open()
    try:
        assert await store.sessions() == [SessionRecord("s-1", "default", "bob", "/w", 1.0, 2.0, 3)]
        assert await store.sweep_orphans() == 1
        assert leftover.wait(timeout=30) == -9
        await store.append_transcript("s-1", [b"{}"])
        assert await store.transcript("s-1") == b"{}\n"
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(schema.SQLITE),)


async def test_replicas_starting_together_migrate_once(stores: OpenStore) -> None:
    replicas = await asyncio.gather(*(stores(f"replica-{n}") for n in range(4)))
    await replicas[0].save(record("s-1"))
    for replica in replicas:
        assert [r.id for r in await replica.sessions()] == ["s-1"]


def test_a_turns_cost_is_what_its_process_spent_since_its_last_result() -> None:
    totals = TurnTotals()

    def cost(pid: int, reported: float) -> float:
        result = Result("", False, "success", usage=Usage(1, 1), total_cost_usd=reported)
        return totals.turn("s-1", pid, result, 1.0, 1).cost_usd

    assert cost(100, 0.01) == pytest.approx(0.01)
    assert cost(100, 0.03) == pytest.approx(0.02)  # cumulative per process
    assert cost(100, 0.0) == 0.0  # hotsvc's own error result
    assert cost(100, 0.04) == pytest.approx(0.01)
    assert cost(200, 0.02) == pytest.approx(0.02)  # resumed in a new process: from zero
