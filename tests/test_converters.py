"""The gRPC layer's pure conversions, domain values to hotsession.v1 messages and back."""

from __future__ import annotations

import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.attachment import GoAway, Heartbeat
from hotsvc.claude.content import DocumentBlock, ImageBlock, ToolResultBlock, user_content
from hotsvc.claude.events import (
    ApiRetry,
    AssistantMessage,
    Event,
    Result,
    StreamEvent,
    SystemEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ToolResult,
    ToolUseBlock,
    Unknown,
    Usage,
    UserMessage,
)
from hotsvc.claude.messages import Message, Role
from hotsvc.controls import ControlOutcome
from hotsvc.errors import InvalidRequest
from hotsvc.grpc import converters, resources
from hotsvc.grpc.content import TurnLimits, TurnRequest, struct, turn_request
from hotsvc.opening import OpenRequest
from hotsvc.options import SessionOptions
from hotsvc.resources import SessionResource
from hotsvc.snapshot import (
    Opened,
    PoolView,
    SessionState,
    SessionView,
    Snapshot,
    SpawnView,
    Start,
)
from hotsvc.turn import TurnStarted

RESULT = Result(
    text="42",
    is_error=False,
    subtype="success",
    duration_ms=12,
    num_turns=1,
    usage=Usage(10, 5, 1, 2),
    total_cost_usd=0.5,
    line='{"type":"result"}',
)


def test_open_request_must_come_first() -> None:
    first = pb.PromptRequest(open=pb.OpenSession(session_id="s", profile="p"))
    assert converters.open_request(first) == OpenRequest("s", "p")
    for bad in (None, pb.PromptRequest(turn=pb.UserTurn(text="hi"))):
        with pytest.raises(InvalidRequest) as refused:
            converters.open_request(bad)
        assert refused.value.field == "open"


def test_opened_carries_the_last_result_only_when_asked() -> None:
    view = Opened("s1", Start.RESUMED, 7, "default", "t9", RESULT)
    plain = converters.opened(view, include_last_result=False)
    assert (plain.session_id, plain.opened.start, plain.opened.pid, plain.opened.profile) == (
        "s1",
        pb.SESSION_START_RESUMED,
        7,
        "default",
    )
    assert not plain.opened.HasField("last_result")
    full = converters.opened(view, include_last_result=True)
    assert (full.opened.last_turn_id, full.opened.last_result.text) == ("t9", "42")


@pytest.mark.parametrize(
    ("event", "field", "check"),
    [
        (TurnStarted("hi"), "turn_started", lambda r: r.turn_started.text == "hi"),
        (
            TextDelta("O", 1),
            "text_delta",
            lambda r: (r.text_delta.text, r.text_delta.block_index) == ("O", 1),
        ),
        (
            ToolResult("toolu_1", "out", True),
            "tool_result",
            lambda r: (r.tool_result.tool_use_id, r.tool_result.is_error) == ("toolu_1", True),
        ),
        (
            SystemEvent("status", status="requesting"),
            "progress",
            lambda r: (r.progress.subtype, r.progress.status.status) == ("status", "requesting"),
        ),
        (
            ApiRetry("api_retry", attempt=2, error_status=529),
            "progress",
            lambda r: (r.progress.api_retry.attempt, r.progress.api_retry.error_status) == (2, 529),
        ),
        (
            RESULT,
            "result",
            lambda r: (
                (r.result.text, r.result.usage.cache_read_input_tokens, r.result.total_cost_usd)
                == ("42", 2, 0.5)
            ),
        ),
        (Heartbeat(True), "heartbeat", lambda r: r.heartbeat.turn_running),
        (
            GoAway(1.5, "bye"),
            "go_away",
            lambda r: (
                (r.go_away.reason, r.go_away.time_left.ToNanoseconds()) == ("bye", 1_500_000_000)
            ),
        ),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_each_event_kind(event: Event, field: str, check: object) -> None:
    response = converters.event_response(event, "s1", "t1", include_raw_json=False)
    assert response is not None
    assert (response.session_id, response.turn_id, response.WhichOneof("event")) == (
        "s1",
        "t1",
        field,
    )
    assert callable(check) and check(response)
    assert response.raw_json == ""


def test_assistant_blocks_and_raw_json() -> None:
    event = AssistantMessage(
        message_id="m1",
        model="x",
        line='{"type":"assistant"}',
        content=(
            TextBlock("a"),
            ThinkingBlock("hm"),
            ToolUseBlock("toolu_1", "Bash", {"command": "ls", "n": 2}),
        ),
    )
    response = converters.event_response(event, "s1", "t1", include_raw_json=True)
    assert response is not None and response.raw_json == '{"type":"assistant"}'
    text, thinking, tool = response.assistant.content
    assert (text.text.text, thinking.thinking.thinking, tool.tool_use.name) == ("a", "hm", "Bash")
    assert dict(tool.tool_use.input) == {"command": "ls", "n": 2.0}


def test_bookkeeping_events_are_not_sent() -> None:
    for event in (
        StreamEvent("message_stop"),
        UserMessage("echo"),
        Unknown("transcript_mirror"),
    ):
        assert converters.event_response(event, "s", "t", include_raw_json=True) is None


def test_pool_status_from_a_snapshot() -> None:
    snapshot = Snapshot(
        pools=(PoolView("default", 2, 2, (11, 12)), PoolView("review", 0, 1, ())),
        sessions=(
            SessionView("a", SessionState.BUSY, 21, 100.0, 150.0, 3, "default", True, "alice"),
            SessionView("b", SessionState.STOPPED, 0, 90.0, 95.0, 1, "review", False, "bob"),
        ),
        live_sessions=4,  # service-wide: more than the viewer sees
        stopped_sessions=2,
        spawns=SpawnView(5, 1, 0, 1, 3, 2, 0.25),
        max_sessions=8,
        draining=False,
    )
    status = converters.pool_status(snapshot, now=160.0, show_pids=True)
    assert (
        status.pool_size,
        status.target_size,
        status.active_sessions,
        status.stopped_sessions,
        status.max_sessions,
    ) == (2, 3, 4, 2, 8)
    assert [p.idle_pids for p in status.pools] == [[11, 12], []]
    busy = status.sessions[0]
    assert (busy.state, busy.pid, busy.turns, busy.attached) == (pb.SESSION_STATE_BUSY, 21, 3, True)
    assert busy.age.ToSeconds() == 60
    assert [row.owner for row in status.sessions] == ["alice", "bob"]
    assert status.sessions[1].state == pb.SESSION_STATE_STOPPED
    assert status.spawn_stats.mean_spawn_time.ToMilliseconds() == 250
    # A pid lets a tool signal or inspect a process: only admins see them.
    hidden = converters.pool_status(snapshot, now=160.0, show_pids=False)
    assert [p.idle_pids for p in hidden.pools] == [[], []]
    assert [row.pid for row in hidden.sessions] == [0, 0]


def test_no_response_is_larger_than_a_default_client_accepts() -> None:
    limit = 4 * 1024 * 1024
    # A result whose text alone is over the limit (4-byte characters), with its line.
    text = "𝄞" * 1_200_000
    result = Result(text=text, is_error=False, subtype="success", line=text)
    (response,) = converters.responses(result, "s", "t", include_raw_json=True)
    assert response.ByteSize() <= limit
    assert response.raw_json_truncated and response.raw_json == ""
    assert response.result.text.startswith("𝄞" * 1000)
    assert response.result.text.endswith("characters cut by hotsvc: an event must fit in 4 MiB]")
    # The caller's own long turn, echoed in turn_started.
    (started,) = converters.responses(TurnStarted(text), "s", "t", include_raw_json=False)
    assert started.ByteSize() <= limit
    # A long delta is split, in order, and nothing is lost.
    delta = TextDelta("x" * 200_000, 0, line="x" * 200_000)
    pieces = list(converters.responses(delta, "s", "t", include_raw_json=True))
    assert len(pieces) == 4 and "".join(p.text_delta.text for p in pieces) == delta.text
    # Small events are untouched.
    (small,) = converters.responses(RESULT, "s", "t", include_raw_json=True)
    assert small.raw_json == RESULT.line and not small.raw_json_truncated


# -- the caller API's conversions --------------------------------------------------------

LIMITS = TurnLimits(chars=20, image_bytes=4, document_bytes=8, turn_bytes=200)


def test_open_and_ask_carry_the_callers_options() -> None:
    options = pb.SessionOptions(model="m", allowed_tools=["Read"], max_turns=3)
    first = pb.PromptRequest(open=pb.OpenSession(session_id="s", options=options))
    opening = converters.open_request(first)
    assert opening.options == SessionOptions(model="m", allowed_tools=("Read",), max_turns=3)
    ask = pb.AskRequest(session_id="s", create_if_missing=True, options=options)
    assert converters.ask_open(ask) == OpenRequest("s", "", True, opening.options)
    with pytest.raises(InvalidRequest) as refused:
        converters.ask_open(pb.AskRequest(create_if_missing=True))
    assert refused.value.field == "session_id"
    with pytest.raises(InvalidRequest) as empty:
        converters.open_request(
            pb.PromptRequest(open=pb.OpenSession(options=pb.SessionOptions(allowed_tools=[" "])))
        )
    assert empty.value.field == "open.options.allowed_tools"


def image(data: bytes, media_type: str = "image/png") -> pb.ContentBlock:
    return pb.ContentBlock(image=pb.ImageBlock(media_type=media_type, data=data))


def test_a_turns_content_becomes_blocks_within_the_limits() -> None:
    turn = pb.UserTurn(
        text="look",
        turn_id="t1",
        content=[
            pb.ContentBlock(text=pb.TextBlock(text="and")),
            image(b"\x89PNG"),
            pb.ContentBlock(
                document=pb.DocumentBlock(media_type="text/plain", data=b"notes", title="N")
            ),
        ],
    )
    parsed = turn_request(turn, LIMITS)
    assert parsed == TurnRequest(
        "look",
        "t1",
        (
            TextBlock("and"),
            ImageBlock("image/png", b"\x89PNG"),
            DocumentBlock("text/plain", b"notes", "N"),
        ),
    )
    assert user_content(parsed.text, parsed.content) == [
        {"type": "text", "text": "look"},
        {"type": "text", "text": "and"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
            "title": "N",
        },
    ]
    assert turn_request(pb.UserTurn(content=[image(b"ab")]), LIMITS).text == ""


@pytest.mark.parametrize(
    ("turn", "field", "says"),
    [
        (pb.UserTurn(text=" "), "turn.text", "turn.text is empty"),
        (pb.UserTurn(text="x" * 21), "turn.text", "21 characters, over the limit of 20"),
        (
            pb.UserTurn(text="x" * 15, content=[pb.ContentBlock(text=pb.TextBlock(text="y" * 6))]),
            "turn.text",
            "21 characters",
        ),
        (pb.UserTurn(text="x", content=[image(b"12345")]), "turn.content[0]", "--max-image-bytes"),
        (
            pb.UserTurn(text="x", content=[image(b"1", "image/bmp")]),
            "turn.content[0].image.media_type",
            "use one of image/png",
        ),
        (pb.UserTurn(text="x", content=[image(b"")]), "turn.content[0].image.data", "is empty"),
        (
            pb.UserTurn(
                text="x",
                content=[
                    pb.ContentBlock(
                        document=pb.DocumentBlock(media_type="application/pdf", data=b"123456789")
                    )
                ],
            ),
            "turn.content[0]",
            "--max-document-bytes",
        ),
        (
            pb.UserTurn(
                text="x",
                content=[
                    pb.ContentBlock(
                        document=pb.DocumentBlock(media_type="text/plain", data=b"\xff")
                    )
                ],
            ),
            "turn.content[0].document.data",
            "not UTF-8",
        ),
        (pb.UserTurn(text="x", content=[pb.ContentBlock()]), "turn.content[0]", "is empty"),
        (
            pb.UserTurn(
                text="x", content=[pb.ContentBlock(tool_use=pb.ToolUseBlock(id="1", name="Bash"))]
            ),
            "turn.content[0]",
            "a turn takes text, image and document blocks",
        ),
        (
            pb.UserTurn(text="x", content=[image(b"1234")] * 12),
            "turn",
            "bytes, over the limit of 200; send fewer or smaller blocks",
        ),
    ],
)
def test_a_turn_past_a_limit_names_it(turn: pb.UserTurn, field: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        turn_request(turn, LIMITS)
    assert refused.value.field == field
    assert says in refused.value.message


def test_control_results_are_events() -> None:
    ok = ControlOutcome("r1", "set_model", {"model": "sonnet"})
    response = converters.event_response(ok, "s", "", include_raw_json=False)
    assert response is not None
    assert response.control_result == pb.ControlResult(
        request_id="r1", subtype="set_model", response=struct({"model": "sonnet"})
    )
    failed = ControlOutcome("r2", "x", error="Unsupported", error_code="unsupported_request")
    response = converters.event_response(failed, "s", "", include_raw_json=False)
    assert response is not None
    assert (response.control_result.error, response.control_result.error_code) == (
        "Unsupported",
        "unsupported_request",
    )


def test_a_session_resource_and_its_messages() -> None:
    resource = SessionResource(
        id="s1",
        owner="alice",
        profile="default",
        state=SessionState.LOST,
        created_at=1.5,
        last_used_at=2.0,
        turns=3,
        model="claude",
        cwd="/w",
        usage=Usage(1, 2, 3, 4),
        cost_usd=0.25,
        options=SessionOptions(model="claude"),
        replica_id="host",
    )
    session = resources.session(resource)
    assert (session.state, session.turns, session.pid, session.replica_id) == (
        pb.SESSION_STATE_LOST,
        3,
        0,
        "host",
    )
    assert session.create_time.ToNanoseconds() == 1_500_000_000
    assert session.usage == pb.Usage(
        input_tokens=1, output_tokens=2, cache_creation_input_tokens=3, cache_read_input_tokens=4
    )
    assert session.options == pb.SessionOptions(model="claude")

    message = Message(
        "u1",
        Role.ASSISTANT,
        (
            ThinkingBlock("hm"),
            ToolUseBlock("t1", "Bash", {"command": "ls"}),
            ToolResultBlock("t1", "a b", is_error=True),
        ),
        created_at=3.0,
        model="claude",
    )
    converted = resources.session_message(message)
    assert (converted.uuid, converted.role, converted.model) == (
        "u1",
        pb.MESSAGE_ROLE_ASSISTANT,
        "claude",
    )
    kinds = [block.WhichOneof("block") for block in converted.content]
    assert kinds == ["thinking", "tool_use", "tool_result"]
    assert converted.content[1].tool_use.input == struct({"command": "ls"})
    assert converted.content[2].tool_result == pb.ToolResultBlock(
        tool_use_id="t1", content="a b", is_error=True
    )
