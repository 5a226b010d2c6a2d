"""Every bad input gets the right status, a message that says what to do, and details a
client can branch on (google.rpc.ErrorInfo, BadRequest, RetryInfo), read the way a
client reads them: `grpc_status.rpc_status.from_call` on the failed call."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import Conversation, Refusal, StartService, refusal


async def refused_open(talk: Conversation, **open_args: Any) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await talk.open(**open_args)
    return refusal(failed.value)


async def refused_read(talk: Conversation) -> Refusal:
    """The stream's next read fails: the answer to what was just sent."""
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        while True:  # turns sent before the bad request still stream their events first
            await talk.read()
    return refusal(failed.value)


# -- INVALID_ARGUMENT ----------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        pb.PromptRequest(turn=pb.UserTurn(text="hi")),
        pb.PromptRequest(interrupt=pb.Interrupt()),
    ],
    ids=["turn", "interrupt"],
)
async def test_a_stream_must_open_first(
    start_service: StartService, first: pb.PromptRequest
) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.send(first)
    got = await refused_read(talk)
    assert (got.code, got.reason, got.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "open",
    )
    assert "send open{} for a new session or open{session_id} to re-attach" in got.message
    assert got.retry_delay is None  # the same request can never succeed
    assert (await live.status()).sessions == []  # nothing was opened


async def test_a_second_open_on_one_stream(start_service: StartService) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert (await talk.ask("Remember 6")).text == "OK"
    await talk.send(pb.PromptRequest(open=pb.OpenSession()))
    got = await refused_read(talk)
    assert (got.code, got.reason, got.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "open",
    )
    assert got.metadata["sessionId"] == opened.session_id
    assert "start a new stream to open another" in got.message
    # The refusal ended the stream, not the session: it re-attaches with its memory.
    again = Conversation(live.stub)
    assert (await again.open(session_id=opened.session_id)).pid == opened.pid
    assert (await again.ask("What number?")).text == "6"


@pytest.mark.parametrize("text", ["", " \n\t "], ids=["empty", "blank"])
async def test_empty_turn_text(start_service: StartService, text: str) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open()
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text=text)))
    got = await refused_read(talk)
    assert (got.code, got.reason, got.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "turn.text",
    )
    assert got.message == "turn.text is empty: send the prompt text (or content blocks)"
    assert (await live.status()).sessions[0].turns == 0  # never reached the process


async def test_oversized_turn_text(start_service: StartService) -> None:
    live = await start_service(max_turn_chars=100)
    talk = Conversation(live.stub)
    await talk.open()
    at_limit = "x" * 100
    assert (await talk.ask(at_limit)).text == f"echo: {at_limit}"
    # Sent right behind an accepted turn: that one still gets its result, then the refusal.
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="Remember 4", turn_id="ok")))
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="y" * 101, turn_id="too-long")))
    events = await talk.until_result()
    assert (events[-1].turn_id, events[-1].result.text) == ("ok", "OK")
    got = await refused_read(talk)
    assert (got.code, got.reason, got.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "turn.text",
    )
    assert (got.metadata["length"], got.metadata["limit"]) == ("101", "100")
    assert "101 characters, over the limit of 100" in got.message
    assert "split the prompt or raise --max-turn-chars" in got.message
    assert (await live.status()).sessions[0].turns == 2


# A long id is quoted shortened: status trailers over 8-16 KiB reach the caller as
# RESOURCE_EXHAUSTED ("metadata size exceeds limit"), not as this error.
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "z" * 100_000], ids=["short", "100k"])
async def test_malformed_session_id(start_service: StartService, bad_id: str) -> None:
    live = await start_service()
    opening = await refused_open(Conversation(live.stub), session_id=bad_id)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await live.stub.CloseSession(pb.CloseSessionRequest(session_id=bad_id))
    closing = refusal(failed.value)
    for got in (opening, closing):
        assert (got.code, got.reason, got.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
            "session_id",
        )
        assert (
            "is not a UUID; leave it empty to open a new session, or pass the id "
            "from SessionOpened" in got.message
        )
        assert bad_id[:10] in got.message and bad_id[:10] in got.metadata["sessionId"]
        assert len(got.message) < 300


# -- NOT_FOUND -----------------------------------------------------------------------


async def test_reattach_to_a_session_that_never_existed(start_service: StartService) -> None:
    live = await start_service()
    never = str(uuid.uuid4())
    got = await refused_open(Conversation(live.stub), session_id=never)
    assert (got.code, got.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert got.metadata == {"sessionId": never}
    assert "open a new session with an empty session_id" in got.message
    assert got.field is None and got.retry_delay is None


async def test_reattach_to_a_deleted_session(start_service: StartService) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert (await talk.ask("Remember 2")).text == "OK"
    assert await talk.finish() == grpc.StatusCode.OK
    await live.stub.DeleteSession(pb.DeleteSessionRequest(session_id=opened.session_id))

    got = await refused_open(Conversation(live.stub), session_id=opened.session_id)
    assert (got.code, got.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert got.metadata == {"sessionId": opened.session_id}
    assert "it was closed or never existed" in got.message
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await live.stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    again = refusal(failed.value)
    assert (again.code, again.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert again.message == f"no session {opened.session_id}; nothing to close"


async def test_unknown_profile(start_service: StartService) -> None:
    profiles = {name: Profile(name=name, pool_size=0) for name in (DEFAULT_PROFILE, "review")}
    live = await start_service(profiles=profiles)
    got = await refused_open(Conversation(live.stub), profile="nope")
    assert (got.code, got.reason) == (grpc.StatusCode.NOT_FOUND, "PROFILE_NOT_FOUND")
    assert got.metadata == {"profile": "nope", "knownProfiles": "default, review"}
    assert got.message == "unknown profile 'nope'; known profiles: default, review"
    assert (await Conversation(live.stub).open(profile="review")).profile == "review"


# -- FAILED_PRECONDITION -------------------------------------------------------------


async def test_second_stream_on_an_attached_session(start_service: StartService) -> None:
    live = await start_service()
    holder = Conversation(live.stub)
    opened = await holder.open()
    got = await refused_open(Conversation(live.stub), session_id=opened.session_id)
    assert (got.code, got.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_ATTACHED")
    assert got.metadata == {"sessionId": opened.session_id}
    assert "one stream per session: end that stream first" in got.message
    assert got.retry_delay is None  # waiting alone does not help: the holder must let go

    assert await holder.finish() == grpc.StatusCode.OK  # ... and once it has:
    assert (await Conversation(live.stub).open(session_id=opened.session_id)).pid == opened.pid


# -- RESOURCE_EXHAUSTED and UNAVAILABLE: RetryInfo -----------------------------------


async def test_capacity_exhausted_says_the_figures_and_when_to_retry(
    start_service: StartService,
) -> None:
    live = await start_service(max_sessions=2, open_queue_timeout=0.5)
    first, second = Conversation(live.stub), Conversation(live.stub)
    await first.open()
    await second.open()  # both attached: neither can be evicted
    waiting = Conversation(live.stub)
    got = await refused_open(waiting)
    # It waited in line for the bound, told its place, then was refused.
    assert waiting.queued == ["waiting for a session slot: 1 of 1 in line"]
    assert (got.code, got.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CAPACITY_EXHAUSTED")
    assert got.message == (
        "no session slot came free within 0.5s: all 2 are held by busy or "
        "attached sessions; close an idle session with CloseSession, or "
        "retry later"
    )
    assert got.metadata == {"maxSessions": "2", "liveProcesses": "2", "waiting": "1"}
    assert got.retry_delay is not None and got.retry_delay > 0

    # A retry can succeed: once a session is left idle, a new one takes its slot.
    assert await first.finish() == grpc.StatusCode.OK
    assert (await Conversation(live.stub).open()).start == pb.SESSION_START_COLD


async def test_draining_is_unavailable_with_retry_info(start_service: StartService) -> None:
    live = await start_service(child_env={"HOTSVC_EMU_SLOW_DELAY": "0.05"})
    talk = Conversation(live.stub)
    opened = await talk.open()
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="slow please")))
    while not (await talk.read()).HasField("text_delta"):
        pass
    stopping = asyncio.create_task(live.service.stop())
    while not (await talk.read()).HasField("go_away"):
        pass

    for open_args in ({}, {"session_id": opened.session_id}):
        got = await refused_open(Conversation(live.stub), **open_args)
        assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
        assert "retry on another instance or after it restarts" in got.message
        assert got.retry_delay is not None and got.retry_delay > 0
        assert float(got.metadata["drainSecondsLeft"]) >= 0
    assert not (await talk.until_result())[-1].result.is_error
    await stopping


async def test_spawn_failure_is_unavailable_with_retry_info(
    start_service: StartService, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir"
    live = await start_service(
        profiles={DEFAULT_PROFILE: Profile(name=DEFAULT_PROFILE, pool_size=0, cwd=str(missing))}
    )
    got = await refused_open(Conversation(live.stub))
    assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "SPAWN_FAILED")
    assert "check --claude-cmd / HOTSVC_CLAUDE_CMD and the profile's cwd" in got.message
    assert str(missing) in got.message
    assert got.metadata["profile"] == DEFAULT_PROFILE
    assert got.retry_delay is not None and got.retry_delay > 0
