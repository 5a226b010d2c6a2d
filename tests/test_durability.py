"""A `result` means the turn is durable, on every CLI version; a conversation that cannot
be restored says so (DATA_LOSS, TRANSCRIPT_LOST) instead of looping or promising a resume."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import uuid
from pathlib import Path

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.localmodel import LocalModelServer
from tests.conftest import (
    CLAUDE_VERSIONS,
    Conversation,
    ServerProcess,
    StartService,
    eventually,
    pid_alive,
    pool_refilled,
    refusal,
)

LocalModel = tuple[LocalModelServer, dict[str, str]]
KILLS = 4


async def wait_dead(pid: int) -> None:
    async def dead() -> bool:
        return not pid_alive(pid)

    await eventually(dead, f"pid {pid} exits")


async def live_pid(talk: Conversation, stub: object, session_id: str) -> int:
    status = await stub.PoolStatus(pb.PoolStatusRequest())  # type: ignore[attr-defined]
    (row,) = [s for s in status.sessions if s.session_id == session_id]
    return int(row.pid)


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_sigkill_right_after_each_result_loses_no_turn(
    start_service: StartService, local_model: LocalModel, version: str
) -> None:
    _, env = local_model
    live = await start_service(claude_cmd=(str(CLAUDE_VERSIONS[version]),), child_env=env)
    talk = Conversation(live.stub)
    opened = await talk.open()
    for n in range(1, KILLS + 1):
        pid = await live_pid(talk, live.stub, opened.session_id)
        result = await talk.ask(f"Remember {n}")
        os.kill(pid, signal.SIGKILL)  # no wait: the result itself is the promise
        assert (result.text, result.durable) == ("OK", True)
        await wait_dead(pid)
        recalled = await talk.ask("What number?")
        assert (recalled.text, recalled.durable) == (str(n), True), f"turn {n} was lost"


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_a_callers_id_takes_a_warm_process_and_resumes_under_it(
    local_model: LocalModel, tmp_path: Path, version: str
) -> None:
    # A load balancer routes by an id the caller chose before the session existed; the
    # warm process keeps its own Claude Code session id, which the store remembers.
    _, env = local_model
    args = ("--claude-cmd", str(CLAUDE_VERSIONS[version]), "--data-dir", str(tmp_path / "d"))
    chosen = str(uuid.uuid4())
    open_chosen = pb.PromptRequest(open=pb.OpenSession(session_id=chosen, create_if_missing=True))
    async with ServerProcess(*args, "--pool-size", "1", env=env) as server:
        await pool_refilled(server.stub(), 1)
        talk = Conversation(server.stub())
        await talk.send(open_chosen)
        opened = (await talk.read()).opened
        assert (opened.session_id, opened.start) == (chosen, pb.SESSION_START_WARM)
        assert (await talk.ask("Remember 42")).durable
        os.kill(opened.pid, signal.SIGKILL)
        await wait_dead(opened.pid)
        assert (await talk.ask("What number?")).text == "42"  # resumed in a new process
        assert await talk.finish() == grpc.StatusCode.OK
    async with ServerProcess(*args, "--pool-size", "0", env=env) as server:
        again = Conversation(server.stub())
        await again.send(open_chosen)
        assert (await again.read()).opened.start == pb.SESSION_START_RESUMED
        assert (await again.ask("What number?")).text == "42"
        assert await again.finish() == grpc.StatusCode.OK


async def test_a_transcript_gone_from_the_host_comes_back_from_the_store(
    start_service: StartService, local_model: LocalModel
) -> None:
    _, env = local_model
    live = await start_service(claude_cmd=(str(CLAUDE_VERSIONS["2.1.330"]),), child_env=env)
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert (await talk.ask("Remember 42")).durable
    shutil.rmtree(Path(env["CLAUDE_CONFIG_DIR"]) / "projects")
    os.kill(opened.pid, signal.SIGKILL)
    await wait_dead(opened.pid)
    events = await talk.turn("What number?")
    assert events[-1].result.text == "42"
    assert [e.progress.subtype for e in events if e.progress.subtype == "resumed"] == ["resumed"]


async def test_a_conversation_gone_everywhere_is_lost_not_retried(
    local_model: LocalModel, tmp_path: Path
) -> None:
    _, env = local_model
    data = tmp_path / "data"
    args = (
        "--claude-cmd",
        str(CLAUDE_VERSIONS["2.1.330"]),
        "--data-dir",
        str(data),
        "--pool-size",
        "0",
    )
    async with ServerProcess(*args, env=env) as server:
        talk = Conversation(server.stub())
        opened = await talk.open()
        assert (await talk.ask("Remember 9")).durable
        assert await talk.finish() == grpc.StatusCode.OK
    # Gone from the host and from the store, as after a lost disk and a wiped database.
    shutil.rmtree(Path(env["CLAUDE_CONFIG_DIR"]) / "projects")
    with sqlite3.connect(data / "registry.sqlite3") as db:
        db.execute("DELETE FROM transcript_chunks")
    async with ServerProcess(*args, env=env) as server:
        stub = server.stub()
        for attempt in range(2):  # the same answer each time, and no process started
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await Conversation(stub).open(session_id=opened.session_id)
            got = refusal(failed.value)
            assert (got.code, got.reason) == (grpc.StatusCode.DATA_LOSS, "TRANSCRIPT_LOST")
            assert "delete it and open a new session" in got.message, attempt
        status = await stub.PoolStatus(pb.PoolStatusRequest())
        (row,) = status.sessions
        assert row.state == pb.SESSION_STATE_LOST
        assert status.spawn_stats.spawned == 0
