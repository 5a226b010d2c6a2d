"""Claude Code's stream-json protocol: stdout lines to typed events, and the lines we write.

Shapes follow real transcripts of `claude -p --input-format stream-json --output-format
stream-json --verbose --include-partial-messages` (see the shared reference folder). Every
event keeps its original line so callers can ask for fields the typed view leaves out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """One line from the CLI's stdout; `line` is the original text ("" for synthesized events).

    `uuid` is the line's own id; for assistant and user lines it is also the id of their
    entry in the session's transcript, which is how a turn is known to be saved.
    """

    line: str = field(default="", repr=False, kw_only=True)
    uuid: str = field(default="", repr=False, kw_only=True)
    # Whether callers see it (hotsvc.grpc.converters makes a response of it): the session
    # passes only these on, so bookkeeping lines never wake the stream.
    visible: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class SystemEvent(Event):
    """`system` messages: `init` at the start of every turn, `status`, `api_retry`, ..."""

    visible: ClassVar[bool] = True
    subtype: str
    status: str = ""
    model: str = ""  # init: the model the turn runs with


@dataclass(frozen=True, slots=True)
class ApiRetry(SystemEvent):
    attempt: int = 0
    max_retries: int = 0
    retry_delay_ms: float = 0.0
    error_status: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta(Event):
    """A `stream_event` content_block_delta carrying text (needs --include-partial-messages)."""

    visible: ClassVar[bool] = True
    text: str
    index: int


@dataclass(frozen=True, slots=True)
class StreamEvent(Event):
    """Any other partial-message stream event (message_start, content_block_stop, ...)."""

    kind: str


@dataclass(frozen=True, slots=True)
class TextBlock:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    thinking: str


@dataclass(frozen=True, slots=True)
class ToolUseBlock:
    id: str
    name: str
    input: JsonObject


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock


@dataclass(frozen=True, slots=True)
class AssistantMessage(Event):
    visible: ClassVar[bool] = True

    message_id: str
    model: str
    content: tuple[ContentBlock, ...]
    parent_tool_use_id: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult(Event):
    visible: ClassVar[bool] = True

    tool_use_id: str
    content: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class UserMessage(Event):
    """A `user` message echoed by the CLI (e.g. "[Request interrupted by user]")."""

    text: str


@dataclass(frozen=True, slots=True)
class TranscriptMirror(Event):
    """`--session-mirror`: transcript entries the CLI has written, ahead of the `result`."""

    path: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Result(Event):
    """The end of a turn: the CLI's `result` line, or one hotsvc made when the turn failed."""

    visible: ClassVar[bool] = True
    text: str
    is_error: bool
    subtype: str
    stop_reason: str = ""
    duration_ms: int = 0
    num_turns: int = 0
    usage: Usage = field(default_factory=Usage)
    total_cost_usd: float = 0.0
    api_error_status: int = 0
    errors: tuple[str, ...] = ()
    durable: bool = False  # hotsvc's: the transcript was seen to hold the turn
    # The user messages the result answers (CLI 2.1.330 on; empty from older ones).
    user_message_uuids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ControlRequest(Event):
    """The CLI asks us something (e.g. `can_use_tool`) and waits for a control_response."""

    request_id: str
    subtype: str
    request: JsonObject


@dataclass(frozen=True, slots=True)
class ControlCancel(Event):
    """The CLI withdraws a control request it sent (e.g. a `can_use_tool` pending when the
    turn was interrupted): stop waiting for its answer, and send none."""

    request_id: str


@dataclass(frozen=True, slots=True)
class ControlResponse(Event):
    """The CLI's answer to one of our control requests."""

    request_id: str
    ok: bool
    response: JsonObject
    error: str = ""
    error_code: str = ""  # e.g. "unsupported_request" (2.1.330; 2.1.197 gives none)


@dataclass(frozen=True, slots=True)
class Unknown(Event):
    """A JSON line of a type this module does not model; still forwarded as raw JSON."""

    type: str


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
