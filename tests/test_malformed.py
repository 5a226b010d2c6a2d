"""Requests that are malformed on the wire, oversized identifiers and silent streams: each
answered with a status that names what to fix, on the first request or any later one."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb

from tests.conftest import DEADLINE, EOF, Conversation, StartService
from tests.test_bad_input import refusal, refused_open, refused_read

PLACEHOLDER = "\u2603\u2603"  # replaced by bytes that are not UTF-8
NOT_UTF8 = b"\xff\xfe\xfd\xfc\xfb\xfa"
assert len(PLACEHOLDER.encode()) == len(NOT_UTF8)


def corrupt(message: pb.PromptRequest) -> bytes:
    data = message.SerializeToString()
    assert data.count(PLACEHOLDER.encode()) == 1
    return data.replace(PLACEHOLDER.encode(), NOT_UTF8)


def raw_prompt(channel: grpc.aio.Channel) -> Any:
    """A Prompt call that writes bytes as they are, as a broken client would."""
    method = channel.stream_stream(
        "/hotsession.v1.HotSession/Prompt",
        request_serializer=lambda data: data,
        response_deserializer=pb.PromptResponse.FromString,
    )
    return method(timeout=DEADLINE)  # type: ignore[call-arg]  # aio's write() form


async def drain(
    call: Any, events: list[pb.PromptResponse] | None = None
) -> list[pb.PromptResponse]:
    """Every event until the stream ends, into `events`; raises the stream's error, if any."""
    events = [] if events is None else events
    while (response := await call.read()) is not EOF:
        assert isinstance(response, pb.PromptResponse)
        events.append(response)
    return events


async def test_invalid_utf8_in_the_first_request_names_the_field(
    start_service: StartService,
) -> None:
    live = await start_service()
    call = raw_prompt(live.channel)
    await call.write(corrupt(pb.PromptRequest(open=pb.OpenSession(profile=PLACEHOLDER))))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call.read()
    got = refusal(failed.value)
    assert (got.code, got.reason, got.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "open.profile",
    )
    assert "open.profile is not valid UTF-8" in got.message
    assert (await live.status()).sessions == []


async def test_invalid_utf8_later_ends_the_stream_after_the_accepted_turns(
    start_service: StartService,
) -> None:
    live = await start_service()
    call = raw_prompt(live.channel)
    await call.write(pb.PromptRequest(open=pb.OpenSession()).SerializeToString())
    assert (await call.read()).HasField("opened")
    await call.write(
        pb.PromptRequest(turn=pb.UserTurn(text="Remember 5", turn_id="a")).SerializeToString()
    )
    await call.write(corrupt(pb.PromptRequest(turn=pb.UserTurn(text=PLACEHOLDER, turn_id="b"))))
    events: list[pb.PromptResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await drain(call, events)
    # Never an OK that drops a turn: the accepted one has its result, then the refusal.
    results = [(e.turn_id, e.result.text) for e in events if e.HasField("result")]
    assert results == [("a", "OK")]
    got = refusal(failed.value)
    assert (got.code, got.field) == (grpc.StatusCode.INVALID_ARGUMENT, "turn.text")


async def test_invalid_utf8_in_a_unary_request(start_service: StartService) -> None:
    live = await start_service()
    close = live.channel.unary_unary(
        "/hotsession.v1.HotSession/CloseSession",
        request_serializer=lambda data: data,
        response_deserializer=pb.CloseSessionResponse.FromString,
    )
    data = pb.CloseSessionRequest(session_id=PLACEHOLDER).SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await close(data.replace(PLACEHOLDER.encode(), NOT_UTF8), timeout=DEADLINE)
    assert refusal(failed.value).field == "session_id"


async def test_a_stream_that_never_opens_is_closed_at_the_open_deadline(
    start_service: StartService,
) -> None:
    live = await start_service(open_timeout=0.3)
    silent = [live.stub.Prompt(timeout=DEADLINE) for _ in range(20)]  # type: ignore[call-arg]
    for call in silent:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call.read()
        got = refusal(failed.value)
        assert (got.code, got.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "OPEN_TIMEOUT")
        assert "send open{} (or open{session_id}) as the first request" in got.message


@pytest.mark.parametrize("spelling", ["urn", "braces", "no-dashes", "uppercase"])
async def test_only_canonical_uuids(start_service: StartService, spelling: str) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert await talk.finish() == grpc.StatusCode.OK
    canonical = opened.session_id
    other = {
        "urn": f"urn:uuid:{canonical}",
        "braces": f"{{{canonical}}}",
        "no-dashes": canonical.replace("-", ""),
        "uppercase": canonical.upper(),
    }[spelling]
    got = await refused_open(Conversation(live.stub), session_id=other)
    assert (got.code, got.field) == (grpc.StatusCode.INVALID_ARGUMENT, "session_id")
    assert "lowercase 8-4-4-4-12" in got.message
    assert (await Conversation(live.stub).open(session_id=canonical)).session_id == canonical


async def test_turn_ids_are_bounded(start_service: StartService) -> None:
    live = await start_service()
    talk = Conversation(live.stub)
    await talk.open()
    assert (await talk.turn("echo a", turn_id="t" * 128))[-1].result.text == "echo: a"
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="echo b", turn_id="t" * 129)))
    got = await refused_read(talk)
    assert (got.code, got.field, got.metadata["limit"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "turn.turn_id",
        "128",
    )


async def test_turns_past_the_pending_limit_are_refused_and_the_stream_stays(
    start_service: StartService,
) -> None:
    live = await start_service(max_pending_turns=2, child_env={"HOTSVC_EMU_SLOW_DELAY": "0.02"})
    talk = Conversation(live.stub)
    await talk.open()
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="slow", turn_id="running")))
    while not (await talk.read()).HasField("turn_started"):
        pass
    for n in range(5):  # two wait behind the running one; three are refused
        await talk.send(pb.PromptRequest(turn=pb.UserTurn(text=f"echo {n}", turn_id=f"q{n}")))
    await talk.call.done_writing()
    events = await drain(talk.call)
    refused = [e for e in events if e.HasField("error")]
    assert [e.turn_id for e in refused] == ["q2", "q3", "q4"]
    error = refused[0].error
    assert (error.code, error.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        "CAPACITY_EXHAUSTED",
    )
    assert error.metadata["maxPendingTurns"] == "2" and error.retry_delay.ToNanoseconds() > 0
    results = [(e.turn_id, e.result.text) for e in events if e.HasField("result")]
    assert results == [("running", results[0][1]), ("q0", "echo: 0"), ("q1", "echo: 1")]
    assert await talk.call.code() == grpc.StatusCode.OK
    (row,) = (await live.status()).sessions
    assert row.turns == 3  # refused turns never ran
    assert uuid.UUID(row.session_id)
