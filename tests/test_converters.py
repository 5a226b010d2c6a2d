"""The gRPC layer's pure conversions, domain values to hotsession.v1 messages and back."""

from __future__ import annotations

import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.attachment import GoAway, Heartbeat
from hotsvc.claude import protocol
from hotsvc.errors import InvalidRequest
from hotsvc.grpc import converters
from hotsvc.manager import OpenRequest
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

RESULT = protocol.Result(
    text="42",
    is_error=False,
    subtype="success",
    duration_ms=12,
    num_turns=1,
    usage=protocol.Usage(10, 5, 1, 2),
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
            protocol.TextDelta("O", 1),
            "text_delta",
            lambda r: (r.text_delta.text, r.text_delta.block_index) == ("O", 1),
        ),
        (
            protocol.ToolResult("toolu_1", "out", True),
            "tool_result",
            lambda r: (r.tool_result.tool_use_id, r.tool_result.is_error) == ("toolu_1", True),
        ),
        (
            protocol.SystemEvent("status", status="requesting"),
            "progress",
            lambda r: (r.progress.subtype, r.progress.status.status) == ("status", "requesting"),
        ),
        (
            protocol.ApiRetry("api_retry", attempt=2, error_status=529),
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
def test_each_event_kind(event: protocol.Event, field: str, check: object) -> None:
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
    event = protocol.AssistantMessage(
        message_id="m1",
        model="x",
        line='{"type":"assistant"}',
        content=(
            protocol.TextBlock("a"),
            protocol.ThinkingBlock("hm"),
            protocol.ToolUseBlock("toolu_1", "Bash", {"command": "ls", "n": 2}),
        ),
    )
    response = converters.event_response(event, "s1", "t1", include_raw_json=True)
    assert response is not None and response.raw_json == '{"type":"assistant"}'
    text, thinking, tool = response.assistant.content
    assert (text.text.text, thinking.thinking.thinking, tool.tool_use.name) == ("a", "hm", "Bash")
    assert dict(tool.tool_use.input) == {"command": "ls", "n": 2.0}


def test_bookkeeping_events_are_not_sent() -> None:
    for event in (
        protocol.StreamEvent("message_stop"),
        protocol.UserMessage("echo"),
        protocol.Unknown("transcript_mirror"),
    ):
        assert converters.event_response(event, "s", "t", include_raw_json=True) is None


def test_pool_status_from_a_snapshot() -> None:
    snapshot = Snapshot(
        pools=(PoolView("default", 2, 2, (11, 12)), PoolView("review", 0, 1, ())),
        sessions=(
            SessionView("a", SessionState.BUSY, 21, 100.0, 150.0, 3, "default", True),
            SessionView("b", SessionState.STOPPED, 0, 90.0, 95.0, 1, "review", False),
        ),
        spawns=SpawnView(5, 1, 0, 1, 3, 2, 0.25),
        max_sessions=8,
        draining=False,
    )
    status = converters.pool_status(snapshot, now=160.0)
    assert (
        status.pool_size,
        status.target_size,
        status.active_sessions,
        status.stopped_sessions,
        status.max_sessions,
    ) == (2, 3, 1, 1, 8)
    assert [p.idle_pids for p in status.pools] == [[11, 12], []]
    busy = status.sessions[0]
    assert (busy.state, busy.pid, busy.turns, busy.attached) == (pb.SESSION_STATE_BUSY, 21, 3, True)
    assert busy.age.ToSeconds() == 60
    assert status.sessions[1].state == pb.SESSION_STATE_STOPPED
    assert status.spawn_stats.mean_spawn_time.ToMilliseconds() == 250


def test_no_response_is_larger_than_a_default_client_accepts() -> None:
    limit = 4 * 1024 * 1024
    # A result whose text alone is over the limit (4-byte characters), with its line.
    text = "𝄞" * 1_200_000
    result = protocol.Result(text=text, is_error=False, subtype="success", line=text)
    (response,) = converters.responses(result, "s", "t", include_raw_json=True)
    assert response.ByteSize() <= limit
    assert response.raw_json_truncated and response.raw_json == ""
    assert response.result.text.startswith("𝄞" * 1000)
    assert response.result.text.endswith("characters cut by hotsvc: an event must fit in 4 MiB]")
    # The caller's own long turn, echoed in turn_started.
    (started,) = converters.responses(TurnStarted(text), "s", "t", include_raw_json=False)
    assert started.ByteSize() <= limit
    # A long delta is split, in order, and nothing is lost.
    delta = protocol.TextDelta("x" * 200_000, 0, line="x" * 200_000)
    pieces = list(converters.responses(delta, "s", "t", include_raw_json=True))
    assert len(pieces) == 4 and "".join(p.text_delta.text for p in pieces) == delta.text
    # Small events are untouched.
    (small,) = converters.responses(RESULT, "s", "t", include_raw_json=True)
    assert small.raw_json == RESULT.line and not small.raw_json_truncated
