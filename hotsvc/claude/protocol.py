"""Claude Code's stream-json protocol: stdout lines to typed events (hotsvc.claude.events),
and the lines we write.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from hotsvc.claude.events import (
    ApiRetry,
    AssistantMessage,
    ContentBlock,
    ControlCancel,
    ControlRequest,
    ControlResponse,
    Event,
    JsonObject,
    Result,
    StreamEvent,
    SystemEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ToolResult,
    ToolUseBlock,
    TranscriptMirror,
    Unknown,
    Usage,
    UserMessage,
)


class _Delta(msgspec.Struct):
    type: Any = None
    text: Any = None


class _Stream(msgspec.Struct):
    type: Any = None
    index: Any = None
    delta: _Delta | None = None


class _Head(msgspec.Struct):
    """What routes a line. Decoding into it skips every other field without building it,
    so the lines no caller sees (most of a turn's) cost a fraction of a full parse."""

    type: Any = None
    subtype: Any = None
    status: Any = None
    model: Any = None
    filePath: Any = None  # the CLI's spelling
    event: _Stream | None = None


_head = msgspec.json.Decoder(_Head)
# Lines read in full: what callers see of them, or the request_id a control line names,
# needs more than the head. A kind missing here reads as Unknown (a withdrawn permission
# prompt once did, so it waited until its timeout).
_FULL = {
    "assistant",
    "user",
    "result",
    "control_request",
    "control_response",
    "control_cancel_request",
}


def parse_line(line: str | bytes | bytearray) -> Event:
    """Parse one stdout line; raises ValueError when it is not a JSON object."""
    raw: bytes | bytearray
    if isinstance(line, str):
        text, raw = line, line.encode()
    else:
        raw, text = line, line.decode(errors="replace")
    text = text.rstrip("\r\n")
    try:
        head = _head.decode(raw)
    except msgspec.DecodeError:  # not JSON, not an object, or an odd shape: the slow way
        return _parse_slow(text)
    kind = head.type
    if not isinstance(kind, str):
        return Unknown(str(kind), line=text)
    if kind in _FULL or (kind == "system" and head.subtype == "api_retry"):
        try:
            message = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return _parse_slow(text)
        return _PARSERS[kind](message, text)
    if kind == "stream_event":
        event = head.event
        if event is None:
            return StreamEvent("", line=text)
        delta = event.delta
        if event.type == "content_block_delta" and delta is not None and delta.type == "text_delta":
            return TextDelta(str(delta.text or ""), int(event.index or 0), line=text)
        return StreamEvent(str(event.type or ""), line=text)
    if kind == "system":
        subtype = str(head.subtype or "")
        model = str(head.model or "") if subtype == "init" else ""
        return SystemEvent(subtype, status=str(head.status or ""), model=model, line=text)
    if kind == "transcript_mirror":
        return TranscriptMirror(str(head.filePath or ""), line=text)
    return Unknown(kind, line=text)


def _parse_slow(line: str) -> Event:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("stream-json line is not an object")
    parser = _PARSERS.get(message.get("type", ""))
    return parser(message, line) if parser else Unknown(str(message.get("type")), line=line)


def _system(message: JsonObject, line: str) -> Event:
    subtype = str(message.get("subtype", ""))
    if subtype == "api_retry":
        return ApiRetry(
            subtype,
            attempt=int(message.get("attempt") or 0),
            max_retries=int(message.get("max_retries") or 0),
            retry_delay_ms=float(message.get("retry_delay_ms") or 0.0),
            error_status=int(message.get("error_status") or 0),
            error=str(message.get("error") or ""),
            line=line,
        )
    return SystemEvent(
        subtype,
        status=str(message.get("status") or ""),
        model=str(message.get("model") or "") if subtype == "init" else "",
        line=line,
    )


def _stream_event(message: JsonObject, line: str) -> Event:
    event = message.get("event") or {}
    kind = str(event.get("type", ""))
    delta = event.get("delta") or {}
    if kind == "content_block_delta" and delta.get("type") == "text_delta":
        return TextDelta(str(delta.get("text", "")), int(event.get("index") or 0), line=line)
    return StreamEvent(kind, line=line)


def _content_block(block: JsonObject) -> ContentBlock | None:
    kind = block.get("type")
    if kind == "text":
        return TextBlock(str(block.get("text", "")))
    if kind == "thinking":
        return ThinkingBlock(str(block.get("thinking", "")))
    if kind == "tool_use":
        return ToolUseBlock(
            str(block.get("id", "")), str(block.get("name", "")), dict(block.get("input") or {})
        )
    return None


def _assistant(message: JsonObject, line: str) -> Event:
    body = message.get("message") or {}
    blocks = (_content_block(b) for b in body.get("content") or () if isinstance(b, dict))
    return AssistantMessage(
        message_id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        content=tuple(b for b in blocks if b is not None),
        parent_tool_use_id=str(message.get("parent_tool_use_id") or ""),
        error=str(message.get("error") or ""),
        line=line,
        uuid=str(message.get("uuid") or ""),
    )


def text_of(content: Any) -> str:
    """Join the text of a string-or-blocks content field."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _user(message: JsonObject, line: str) -> Event:
    content = (message.get("message") or {}).get("content")
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                return ToolResult(
                    tool_use_id=str(block.get("tool_use_id", "")),
                    content=text_of(block.get("content")),
                    is_error=bool(block.get("is_error")),
                    line=line,
                    uuid=str(message.get("uuid") or ""),
                )
    return UserMessage(text_of(content), line=line, uuid=str(message.get("uuid") or ""))


def _result(message: JsonObject, line: str) -> Event:
    usage = message.get("usage") or {}
    return Result(
        text=str(message.get("result") or ""),
        is_error=bool(message.get("is_error")),
        subtype=str(message.get("subtype") or ""),
        stop_reason=str(message.get("stop_reason") or ""),
        duration_ms=int(message.get("duration_ms") or 0),
        num_turns=int(message.get("num_turns") or 0),
        usage=Usage(
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
        ),
        total_cost_usd=float(message.get("total_cost_usd") or 0.0),
        api_error_status=int(message.get("api_error_status") or 0),
        errors=tuple(str(e) for e in message.get("errors") or ()),
        user_message_uuids=tuple(
            str(u) for u in message.get("user_message_uuids") or () if isinstance(u, str)
        ),
        line=line,
    )


def _control_request(message: JsonObject, line: str) -> Event:
    request = dict(message.get("request") or {})
    return ControlRequest(
        str(message.get("request_id", "")), str(request.get("subtype", "")), request, line=line
    )


def _control_response(message: JsonObject, line: str) -> Event:
    response = message.get("response") or {}
    return ControlResponse(
        request_id=str(response.get("request_id", "")),
        ok=response.get("subtype") == "success",
        response=dict(response.get("response") or {}),
        error=str(response.get("error") or ""),
        error_code=str(response.get("error_code") or ""),
        line=line,
    )


def _control_cancel(message: JsonObject, line: str) -> Event:
    return ControlCancel(str(message.get("request_id", "")), line=line)


def _transcript_mirror(message: JsonObject, line: str) -> Event:
    return TranscriptMirror(str(message.get("filePath") or ""), line=line)


_PARSERS = {
    "transcript_mirror": _transcript_mirror,
    "system": _system,
    "stream_event": _stream_event,
    "assistant": _assistant,
    "user": _user,
    "result": _result,
    "control_request": _control_request,
    "control_response": _control_response,
    "control_cancel_request": _control_cancel,
}


# Lines we write. json.dumps never emits a raw newline, so each is exactly one line.


def encode(message: JsonObject) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def user_message(content: str | list[JsonObject], uuid: str = "") -> JsonObject:
    """A user turn: its text, or a Messages API content block array (hotsvc.claude.content);
    with `uuid`, its transcript entry (and echo) carry that id."""
    message: JsonObject = {"type": "user", "message": {"role": "user", "content": content}}
    if uuid:
        message["uuid"] = uuid
    return message


def control_request(request_id: str, subtype: str, **fields: Any) -> JsonObject:
    return {
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": subtype, **fields},
    }


def control_success(request_id: str, response: JsonObject) -> JsonObject:
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }


def control_error(request_id: str, error: str) -> JsonObject:
    return {
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    }
