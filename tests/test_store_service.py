"""hotsvc on a PostgreSQL store: sessions outlive the service's host files, and a second
replica sharing the store does not run a session the first one holds."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.localmodel import LocalModelServer
from hotsvc.store import open_store
from tests.conftest import (
    BIN,
    DEADLINE,
    EMULATOR_CMD,
    REAL_CLAUDE,
    Conversation,
    ServerProcess,
    StartService,
)
from tests.test_bad_input import refused_open

LocalModel = tuple[LocalModelServer, dict[str, str]]


async def test_real_cli_on_postgresql_survives_a_restart(
    tmp_path: Path, local_model: LocalModel, postgres_url: str
) -> None:
    _, env = local_model
    # The same replica restarted (--replica-id): the leases it held are its own again.
    args = ["--pool-size", "0", "--claude-cmd", str(REAL_CLAUDE), "--store", postgres_url]
    args += ["--replica-id", "replica-a"]
    async with (
        ServerProcess(*args, "--data-dir", str(tmp_path / "first"), env=env) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        talk = Conversation(pb_grpc.HotSessionStub(channel))
        session_id = (await talk.open()).session_id
        first = await talk.ask("Remember 42")
        assert first.text == "OK"
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)  # no clean shutdown: the lease stays
        async with asyncio.timeout(DEADLINE):
            await server.proc.wait()

    # Another data directory: all the new run knows comes from PostgreSQL.
    async with (
        ServerProcess(*args, "--data-dir", str(tmp_path / "second"), env=env) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.HotSessionStub(channel)
        # A replica on a shared store loads a session when asked for it, not at start.
        assert not (await stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)).sessions
        again = Conversation(stub)
        assert (await again.open(session_id=session_id)).start == pb.SESSION_START_RESUMED
        (row,) = (await stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)).sessions
        assert (row.session_id, row.turns) == (session_id, 1)
        second = await again.ask("What number?")
        assert second.text == "42"
        assert await again.finish() == grpc.StatusCode.OK

        store = open_store(postgres_url, "observer", 15.0)
        await store.open()
        try:
            stored = await store.get(session_id)
            assert stored is not None and stored.turns == 2
            # Usage and cost totals over both processes (each reports its own running cost).
            assert stored.usage.input_tokens == sum(r.usage.input_tokens for r in (first, second))
            assert stored.usage.input_tokens > 0
            assert stored.cost_usd == pytest.approx(first.total_cost_usd + second.total_cost_usd)
            # Idle again: the lease is free for whichever replica the session lands on next.
            assert await store.lease(session_id) is None
        finally:
            await store.close()
    assert not (tmp_path / "second" / "registry.sqlite3").exists()


async def test_a_session_moves_between_replicas_only_when_unused(
    start_service: StartService, postgres_url: str
) -> None:
    first = await start_service(store=postgres_url, replica_id="replica-a")
    talk = Conversation(first.stub)
    session_id = (await talk.open()).session_id
    assert (await talk.ask("Remember 7")).text == "OK"

    # In use on replica-a (a stream attached): replica-b refuses it, naming the holder.
    second = await start_service(store=postgres_url, replica_id="replica-b")
    refused = await refused_open(Conversation(second.stub), session_id=session_id)
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "SESSION_HELD_ELSEWHERE",
    )
    assert refused.metadata["replicaId"] == "replica-a"
    assert refused.retry_delay is not None

    # Idle on replica-a: replica-b takes it over at once, from the store.
    assert await talk.finish() == grpc.StatusCode.OK
    moved = Conversation(second.stub)
    assert (await moved.open(session_id=session_id)).start == pb.SESSION_START_RESUMED
    assert (await moved.ask("What number?")).text == "7"
    assert (await moved.ask("Remember 8")).text == "OK"
    assert await moved.finish() == grpc.StatusCode.OK

    # Back on replica-a, whose idle process missed turn "Remember 8": it starts over
    # from the store instead of answering from its old conversation.
    back = Conversation(first.stub)
    assert (await back.open(session_id=session_id)).start == pb.SESSION_START_RESUMED
    assert (await back.ask("What number?")).text == "8"


@pytest.mark.parametrize("damage", ["header", "page"])
async def test_a_damaged_store_stops_start_up_with_one_line_then_recovers(
    tmp_path: Path, damage: str
) -> None:
    data = tmp_path / "data"
    args = ("--data-dir", str(data), "--pool-size", "0")
    async with ServerProcess(*args) as server:
        talk = Conversation(server.stub())
        opened = await talk.open()
        assert (await talk.ask("Remember 3")).text == "OK"
        assert await talk.finish() == grpc.StatusCode.OK
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            await server.proc.wait()
    registry = data / "registry.sqlite3"
    content = bytearray(registry.read_bytes())
    if damage == "header":
        content[:16] = b"this is no db!!!"
    else:  # the second page, where the tables' rows live, overwritten
        content[4096:8192] = b"\xff" * 4096
    registry.write_bytes(bytes(content))

    refused = await asyncio.create_subprocess_exec(
        str(BIN / "hotsvc"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--claude-cmd",
        " ".join(EMULATOR_CMD),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        _, err = await refused.communicate()
    # One line says what is wrong and what to do (after the INFO lines of the start-up,
    # JSON when stderr is not a terminal).
    (line,) = [
        line
        for line in err.decode().splitlines()
        if " INFO " not in line and '"level": "INFO"' not in line
    ]
    assert refused.returncode != 0, err.decode()
    assert line.startswith(f"hotsvc: the session store {registry} is damaged (")
    assert "--recover-store" in line
    assert "Traceback" not in err.decode()

    async with ServerProcess(*args, "--recover-store") as server:
        kept = [p.name for p in data.iterdir() if p.name.startswith("registry.sqlite3.corrupt-")]
        assert kept, list(data.iterdir())
        status = await server.stub().PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
        assert list(status.sessions) == []  # started empty
        fresh = Conversation(server.stub())
        await fresh.open()
        assert (await fresh.ask("Remember 4")).text == "OK"
    assert opened.session_id
