"""Rich turns, mid-session controls, per-session options and Ask, on the real CLI against
the local model, which records the Messages requests it receives."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from hotsession.client import ControlFailedError, HotSessionClient, image
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.localmodel import LocalModelServer
from hotsvc.localmodel.script import slow_words
from hotsvc.profiles import DEFAULT_CONTROLS, DEFAULT_PROFILE, Profile
from tests.conftest import (
    CLAUDE_VERSIONS,
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    Live,
    StartService,
    refusal,
)

LocalModel = tuple[LocalModelServer, dict[str, str]]

# A 1x1 PNG, and the smallest PDF the CLI forwards as is.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAACAAFUok9dAAAAAElFTkSuQmCC"
)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


async def start_real(
    start_service: StartService,
    env: dict[str, str],
    pool_size: int = 0,
    claude: Path = REAL_CLAUDE,
    **profile: Any,
) -> Live:
    profiles = {DEFAULT_PROFILE: Profile(name=DEFAULT_PROFILE, pool_size=pool_size, **profile)}
    return await start_service(claude_cmd=(str(claude),), child_env=env, profiles=profiles)


def control(request_id: str, subtype: str, **params: Any) -> pb.PromptRequest:
    fields = struct_pb2.Struct()
    fields.update(params)
    return pb.PromptRequest(
        control=pb.ControlRequest(request_id=request_id, subtype=subtype, params=fields)
    )


async def answer(talk: Conversation, request_id: str, subtype: str, **params: Any) -> Any:
    """Send a control and return its control_result (or error) event."""
    await talk.send(control(request_id, subtype, **params))
    event = await talk.read()
    while event.WhichOneof("event") == "heartbeat":
        event = await talk.read()
    assert event.WhichOneof("event") in ("control_result", "error"), event
    assert event.turn_id == ""
    return event


def last_user_content(server: LocalModelServer) -> list[dict[str, Any]]:
    """The blocks of the last user message the model got, without the CLI's reminders."""
    body = server.message_requests[-1].body
    messages = [m for m in body["messages"] if m["role"] == "user"]
    content = messages[-1]["content"]
    blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
    return [b for b in blocks if not str(b.get("text", "")).startswith("<system-reminder>")]


async def test_image_and_document_blocks_reach_the_model(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    live = await start_real(start_service, env)
    talk = Conversation(live.stub)
    await talk.open()
    turn = pb.UserTurn(
        text="echo look",
        content=[
            pb.ContentBlock(image=pb.ImageBlock(media_type="image/png", data=PNG)),
            pb.ContentBlock(
                document=pb.DocumentBlock(media_type="application/pdf", data=PDF, title="Spec")
            ),
        ],
    )
    await talk.send(pb.PromptRequest(turn=turn))
    events = await talk.until_result()
    assert not events[-1].result.is_error

    blocks = last_user_content(server)
    kinds = [b["type"] for b in blocks]
    assert kinds[:3] == ["text", "image", "document"], kinds
    assert blocks[0]["text"] == "echo look"
    assert blocks[1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }
    assert blocks[2]["source"]["data"] == base64.b64encode(PDF).decode()
    assert blocks[2]["title"] == "Spec"

    # The conversation keeps the blocks: they read back as they were sent.
    said = await live.stub.GetSessionMessages(
        pb.GetSessionMessagesRequest(session_id=events[-1].session_id), timeout=DEADLINE
    )
    first = said.messages[0]
    assert first.content[1].image == pb.ImageBlock(media_type="image/png", data=PNG)
    assert first.content[2].document.data == PDF
    assert await talk.finish() == grpc.StatusCode.OK


async def test_content_limits_are_named(start_service: StartService) -> None:
    live = await start_service(max_image_bytes=8)

    async def refused(*blocks: pb.ContentBlock) -> Any:
        talk = Conversation(live.stub)
        await talk.open()
        await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="look", content=blocks)))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await talk.read()
        return refusal(failed.value)

    big = await refused(pb.ContentBlock(image=pb.ImageBlock(media_type="image/png", data=PNG)))
    assert (big.code, big.field) == (grpc.StatusCode.INVALID_ARGUMENT, "turn.content[0]")
    assert f"has {len(PNG)} bytes, over the limit of 8" in big.message
    assert "--max-image-bytes" in big.message
    svg = await refused(pb.ContentBlock(image=pb.ImageBlock(media_type="image/svg", data=b"<")))
    assert svg.field == "turn.content[0].image.media_type"
    assert "use one of image/png, image/jpeg, image/gif, image/webp" in svg.message
    other = await refused(pb.ContentBlock(thinking=pb.ThinkingBlock(thinking="hm")))
    assert "a turn takes text, image and document blocks" in other.message


async def test_set_model_changes_the_model_the_api_sees_and_survives_a_resume(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    live = await start_real(start_service, env)
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert (await talk.ask("Remember 1")).text == "OK"
    default_model = server.message_requests[-1].body["model"]
    assert default_model != "claude-sonnet-4-5"

    event = await answer(talk, "m1", "set_model", model="claude-sonnet-4-5")
    assert (event.control_result.request_id, event.control_result.subtype) == ("m1", "set_model")
    assert event.control_result.error == ""
    assert (await talk.ask("What number?")).text == "1"
    assert server.message_requests[-1].body["model"] == "claude-sonnet-4-5"
    assert await talk.finish() == grpc.StatusCode.OK
    session = await live.stub.GetSession(pb.GetSessionRequest(session_id=opened.session_id))
    assert session.model == "claude-sonnet-4-5"
    assert session.options.model == "claude-sonnet-4-5"

    # A resumed process starts with the model the session was switched to.
    await live.stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    again = Conversation(live.stub)
    assert (await again.open(session_id=opened.session_id)).start == pb.SESSION_START_RESUMED
    assert (await again.ask("What number?")).text == "1"
    assert server.message_requests[-1].body["model"] == "claude-sonnet-4-5"
    assert await again.finish() == grpc.StatusCode.OK


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_controls_answer_and_refusals_keep_the_stream(
    start_service: StartService, local_model: LocalModel, version: str
) -> None:
    _, env = local_model
    controls = (*DEFAULT_CONTROLS, "no_such_control")
    live = await start_real(
        start_service,
        env,
        claude=CLAUDE_VERSIONS[version],
        controls=controls,
        permission_mode="default",
    )
    talk = Conversation(live.stub)
    await talk.open()

    usage = (await answer(talk, "u1", "get_context_usage")).control_result
    assert usage.error == ""
    assert json_format.MessageToDict(usage.response)["totalTokens"] > 0

    # Outside the profile's list: refused by hotsvc, naming the list.
    refused = (await answer(talk, "l1", "list_models")).error
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert refused.metadata["requestId"] == "l1"
    assert refused.metadata["field"] == "control.subtype"
    assert f"its controls: {', '.join(controls)}" in refused.message

    # Allowed, but the CLI does not know it: its error, with the code (2.1.330 sends it,
    # 2.1.197 only the text).
    unknown = (await answer(talk, "n1", "no_such_control")).control_result
    assert unknown.error == "Unsupported control request subtype: no_such_control"
    assert unknown.error_code == "unsupported_request"

    # Permission modes up to the profile's own (no max_permission_mode consent).
    plan = (await answer(talk, "p1", "set_permission_mode", mode="plan")).control_result
    assert (plan.error, json_format.MessageToDict(plan.response)) == ("", {"mode": "plan"})
    bypass = (await answer(talk, "p2", "set_permission_mode", mode="bypassPermissions")).error
    assert bypass.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "up to 'default', not 'bypassPermissions'" in bypass.message
    assert "max_permission_mode" in bypass.message

    assert (await talk.ask("Remember 3")).text == "OK"  # the stream goes on
    assert await talk.finish() == grpc.StatusCode.OK


async def test_options_need_the_profiles_consent_and_pick_their_own_process(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    profiles = {
        DEFAULT_PROFILE: Profile(name=DEFAULT_PROFILE, pool_size=1, caller_may_set=("model",)),
        # A pool for a frequently used option: the same signature as default + that model.
        "custom": Profile(name="custom", pool_size=1, model="claude-custom-1"),
    }
    live = await start_service(claude_cmd=(str(REAL_CLAUDE),), child_env=env, profiles=profiles)
    pools = {pool.profile: list(pool.idle_pids) for pool in (await live.status()).pools}

    async def opened_with(options: pb.SessionOptions) -> pb.SessionOpened:
        talk = Conversation(live.stub)
        await talk.send(pb.PromptRequest(open=pb.OpenSession(options=options)))
        opened = (await talk.read()).opened
        assert (await talk.ask("Remember 4")).text == "OK"
        assert await talk.finish() == grpc.StatusCode.OK
        return opened

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await opened_with(pb.SessionOptions(model="m", allowed_tools=["Bash"], max_turns=2))
    got = refusal(failed.value)
    assert got.code == grpc.StatusCode.PERMISSION_DENIED
    assert "does not let callers set allowed_tools, max_turns (its caller_may_set: model)" in (
        got.message
    )

    # No warm process was started with this model: one is spawned for it.
    other = await opened_with(pb.SessionOptions(model="claude-other-1"))
    assert other.start == pb.SESSION_START_COLD
    assert server.message_requests[-1].body["model"] == "claude-other-1"
    # The custom profile's pool has processes started with this one.
    custom = await opened_with(pb.SessionOptions(model="claude-custom-1"))
    assert (custom.start, [custom.pid], custom.profile) == (
        pb.SESSION_START_WARM,
        pools["custom"],
        DEFAULT_PROFILE,
    )
    assert server.message_requests[-1].body["model"] == "claude-custom-1"
    plain = await opened_with(pb.SessionOptions())
    assert (plain.start, [plain.pid]) == (pb.SESSION_START_WARM, pools[DEFAULT_PROFILE])
    assert server.message_requests[-1].body["model"] not in ("claude-other-1", "claude-custom-1")

    # Options are kept for resumes.
    await live.stub.CloseSession(pb.CloseSessionRequest(session_id=other.session_id))
    again = Conversation(live.stub)
    assert (await again.open(session_id=other.session_id)).start == pb.SESSION_START_RESUMED
    assert (await again.ask("What number?")).text == "4"
    assert server.message_requests[-1].body["model"] == "claude-other-1"
    assert await again.finish() == grpc.StatusCode.OK
    session = await live.stub.GetSession(pb.GetSessionRequest(session_id=other.session_id))
    assert session.options == pb.SessionOptions(model="claude-other-1")


async def test_ask_streams_deltas_and_one_result(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    server.set_slow_delay(0.01)
    live = await start_real(start_service, env)
    session_id = "6f1c3a52-0d7e-4d8e-9a53-2b1f0c9e7a10"

    async def ask(text: str, **request: Any) -> list[pb.PromptResponse]:
        call = live.stub.Ask(
            pb.AskRequest(session_id=session_id, turn=pb.UserTurn(text=text), **request),
            timeout=DEADLINE,
        )
        return [event async for event in call]

    first = await ask("Remember 42", create_if_missing=True)
    assert first[0].opened.session_id == session_id
    assert first[0].opened.start == pb.SESSION_START_COLD
    assert first[-1].result.text == "OK"

    events = await ask("please be slow")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "opened" and kinds[1] == "turn_started" and kinds[-1] == "result"
    assert kinds.count("result") == 1
    deltas = [e.text_delta.text for e in events if e.HasField("text_delta")]
    assert len(deltas) >= 3 and "".join(deltas) == "".join(slow_words())
    assert (await ask("What number?"))[-1].result.text == "42"

    # A new session when no id is given; the id is in `opened`.
    call = live.stub.Ask(pb.AskRequest(turn=pb.UserTurn(text="What number?")), timeout=DEADLINE)
    fresh = [event async for event in call]
    assert fresh[0].opened.session_id != session_id
    assert fresh[-1].result.text != "42"


async def test_the_python_helper_drives_the_caller_api(
    start_service: StartService, local_model: LocalModel
) -> None:
    server, env = local_model
    live = await start_real(start_service, env)
    async with HotSessionClient(live.address) as client:
        async with await client.open_session() as session:
            assert await session.ask("Remember 42") == "OK"
            reply = await session.ask("echo look", content=[image(PNG), "and this"])
            assert reply.startswith("echo: ")
            kinds = [b["type"] for b in last_user_content(server)]
            assert kinds[:3] == ["text", "image", "text"]
            assert await session.set_model("claude-sonnet-4-5") == {"model": "claude-sonnet-4-5"}
            assert (await session.context_usage())["totalTokens"] > 0
            with pytest.raises(ControlFailedError, match="its controls: set_model") as refused:
                await session.control("list_models")
            assert refused.value.code == "INVALID_REQUEST"
            assert await session.ask("What number?") == "42"  # the stream went on
            assert server.message_requests[-1].body["model"] == "claude-sonnet-4-5"
            original = session.session_id
        # Leaving the block closed the session; its conversation is kept.
        (listed,) = [s async for s in client.list_sessions(filter="state = STOPPED")]
        assert (listed.session_id, listed.turns) == (original, 3)
        fork = await client.fork(original)
        said = [m.content[0].text.text for m in await client.get_session_messages(fork.session_id)]
        assert said[:2] == ["Remember 42", "OK"] and said[-1] == "42"
        async with await client.open_session(fork.session_id) as forked:
            assert await forked.ask("What number?") == "42"
            await forked.delete()
        await client.delete(original)
        assert [s async for s in client.list_sessions()] == []
