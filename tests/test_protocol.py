"""protocol.parse_line on lines recorded from the real CLI (shared/reference transcripts)."""

from __future__ import annotations

import json

import pytest

from hotsvc.claude import protocol
from hotsvc.claude.events import (
    ApiRetry,
    AssistantMessage,
    ControlCancel,
    ControlRequest,
    ControlResponse,
    Result,
    StreamEvent,
    SystemEvent,
    TextBlock,
    TextDelta,
    ToolResult,
    ToolUseBlock,
    TranscriptMirror,
    Unknown,
    Usage,
    UserMessage,
)

SID = "2d71df82-0fca-46b5-947c-b354b9f4b64e"


def line(message: dict[str, object]) -> str:
    return json.dumps(message)


def test_system_status_and_init() -> None:
    raw = line({"type": "system", "subtype": "status", "status": "requesting", "session_id": SID})
    assert protocol.parse_line(raw) == SystemEvent("status", status="requesting", line=raw)
    init = protocol.parse_line(
        line({"type": "system", "subtype": "init", "cwd": "/srv/app", "tools": ["Bash"]})
    )
    assert init == SystemEvent("init", line=init.line)


def test_api_retry_keeps_its_figures() -> None:
    event = protocol.parse_line(
        line(
            {
                "type": "system",
                "subtype": "api_retry",
                "attempt": 1,
                "max_retries": 1,
                "retry_delay_ms": 543.0889254807386,
                "error_status": 500,
                "error": "server_error",
            }
        )
    )
    assert isinstance(event, ApiRetry)
    assert (event.attempt, event.max_retries, event.error_status, event.error) == (
        1,
        1,
        500,
        "server_error",
    )
    assert event.retry_delay_ms == pytest.approx(543.09, abs=0.01)


def test_text_delta_and_other_stream_events() -> None:
    delta = protocol.parse_line(
        line(
            {
                "type": "stream_event",
                "event": {
                    "type": "content_block_delta",
                    "index": 2,
                    "delta": {"type": "text_delta", "text": "OK"},
                },
            }
        )
    )
    assert isinstance(delta, TextDelta) and (delta.text, delta.index) == ("OK", 2)
    stop = protocol.parse_line(
        line({"type": "stream_event", "event": {"type": "content_block_stop", "index": 0}})
    )
    assert isinstance(stop, StreamEvent) and stop.kind == "content_block_stop"
    # A thinking or JSON delta is not text.
    thinking = protocol.parse_line(
        line(
            {
                "type": "stream_event",
                "event": {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": "{"},
                },
            }
        )
    )
    assert isinstance(thinking, StreamEvent)


def test_assistant_message_blocks() -> None:
    event = protocol.parse_line(
        line(
            {
                "type": "assistant",
                "parent_tool_use_id": None,
                "message": {
                    "id": "msg_1",
                    "model": "claude-opus-4-8",
                    "content": [
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01",
                            "name": "Bash",
                            "input": {"command": "echo hi"},
                        },
                        {"type": "server_tool_use", "id": "srv"},
                    ],
                },
            }
        )
    )
    assert isinstance(event, AssistantMessage)
    assert (event.message_id, event.model, event.parent_tool_use_id) == (
        "msg_1",
        "claude-opus-4-8",
        "",
    )
    # Block types the protocol does not model are left out; raw_json keeps them.
    assert event.content == (
        TextBlock("Let me check."),
        ToolUseBlock("toolu_01", "Bash", {"command": "echo hi"}),
    )


def test_user_lines_are_tool_results_or_echoed_text() -> None:
    tool = protocol.parse_line(
        line(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "tool_use_id": "toolu_01",
                            "type": "tool_result",
                            "is_error": False,
                            "content": [
                                {"type": "text", "text": "h"},
                                {"type": "text", "text": "i"},
                            ],
                        }
                    ],
                },
            }
        )
    )
    assert isinstance(tool, ToolResult)
    assert (tool.tool_use_id, tool.content, tool.is_error) == ("toolu_01", "hi", False)
    echoed = protocol.parse_line(
        line(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"type": "text", "text": "[Request interrupted by user]"}],
                },
            }
        )
    )
    assert echoed == UserMessage("[Request interrupted by user]", line=echoed.line)


def test_result_success_and_error() -> None:
    ok = protocol.parse_line(
        line(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "api_error_status": None,
                "duration_ms": 64,
                "num_turns": 1,
                "result": "OK",
                "stop_reason": "end_turn",
                "total_cost_usd": 0.000175,
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 5,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 3,
                },
            }
        )
    )
    assert isinstance(ok, Result)
    assert (ok.text, ok.is_error, ok.subtype, ok.stop_reason, ok.duration_ms, ok.num_turns) == (
        "OK",
        False,
        "success",
        "end_turn",
        64,
        1,
    )
    assert ok.usage == Usage(10, 5, 0, 3) and ok.total_cost_usd == 0.000175
    failed = protocol.parse_line(
        line(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "is_error": True,
                "stop_reason": None,
                "api_error_status": 500,
                "errors": ["boom"],
            }
        )
    )
    assert isinstance(failed, Result)
    assert (failed.is_error, failed.api_error_status, failed.errors, failed.text) == (
        True,
        500,
        ("boom",),
        "",
    )


def test_control_lines() -> None:
    request = protocol.parse_line(
        line(
            {
                "type": "control_request",
                "request_id": "881a",
                "request": {
                    "subtype": "can_use_tool",
                    "tool_name": "Bash",
                    "input": {"command": "touch x"},
                },
            }
        )
    )
    assert isinstance(request, ControlRequest)
    assert (request.request_id, request.subtype, request.request["tool_name"]) == (
        "881a",
        "can_use_tool",
        "Bash",
    )
    ok = protocol.parse_line(
        line(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": "req_int"},
            }
        )
    )
    assert ok == ControlResponse("req_int", True, {}, line=ok.line)
    error = protocol.parse_line(
        line(
            {
                "type": "control_response",
                "response": {
                    "subtype": "error",
                    "request_id": "r2",
                    "error": "Unsupported control request subtype: list_models",
                },
            }
        )
    )
    assert isinstance(error, ControlResponse) and not error.ok
    assert error.error == "Unsupported control request subtype: list_models"
    # The CLI withdrawing a can_use_tool it asked (an interrupt, say).
    raw = line({"type": "control_cancel_request", "request_id": "881a"})
    assert protocol.parse_line(raw) == ControlCancel("881a", line=raw)


@pytest.mark.parametrize("kind", sorted(protocol._PARSERS))
def test_the_fast_path_reads_every_known_kind_as_the_full_parse_does(kind: str) -> None:
    # A kind the head-only decode does not route must be read in full (_FULL).
    raw = line({"type": kind, "request_id": "r1", "subtype": "s", "filePath": "/f"})
    assert protocol.parse_line(raw) == protocol._parse_slow(raw)


def test_unknown_types_keep_their_line_and_bad_lines_raise() -> None:
    raw = line({"type": "command_lifecycle", "state": "queued"})
    assert protocol.parse_line(raw) == Unknown("command_lifecycle", line=raw)
    mirror = protocol.parse_line(line({"type": "transcript_mirror", "filePath": "/c/s.jsonl"}))
    assert isinstance(mirror, TranscriptMirror) and mirror.path == "/c/s.jsonl"
    for bad in ("this is not json", "[1, 2]", '"text"'):
        with pytest.raises(ValueError):
            protocol.parse_line(bad)


def test_lines_we_write_are_single_json_lines() -> None:
    data = protocol.encode(protocol.user_message("two\nlines € ok"))
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {
        "type": "user",
        "message": {"role": "user", "content": "two\nlines € ok"},
    }
    assert json.loads(protocol.encode(protocol.control_success("r1", {"behavior": "deny"}))) == {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": "r1", "response": {"behavior": "deny"}},
    }
