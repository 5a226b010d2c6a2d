"""The Anthropic Messages API wire format: SSE events, message objects and error bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .script import MODEL_NAME, TextReply, ToolUseReply

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {500: "Internal server error", 529: "Overloaded"}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    text = message or _ERROR_MESSAGES.get(status, kind.replace("_", " "))
    return {"type": "error", "error": {"type": kind, "message": f"{text} ({MODEL_NAME})"}}


def estimate_tokens(payload: Any) -> int:
    """About four characters a token: plausible, cheap and deterministic."""
    return max(1, len(json.dumps(payload, default=str)) // 4)


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event, named after its type as the real API does."""
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def content_blocks(reply: TextReply | ToolUseReply) -> list[dict[str, Any]]:
    if isinstance(reply, TextReply):
        return [{"type": "text", "text": reply.text}]
    blocks: list[dict[str, Any]] = []
    if reply.preamble:
        blocks.append({"type": "text", "text": reply.preamble})
    blocks.append(
        {"type": "tool_use", "id": reply.tool_use_id, "name": reply.name, "input": reply.input}
    )
    return blocks


def stop_reason(reply: TextReply | ToolUseReply) -> str:
    return "tool_use" if isinstance(reply, ToolUseReply) else "end_turn"


def output_tokens(reply: TextReply | ToolUseReply) -> int:
    return estimate_tokens(content_blocks(reply))


def message(message_id: str, reply: TextReply | ToolUseReply, input_tokens: int) -> dict[str, Any]:
    """The whole reply as one message object, for `stream: false`."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": MODEL_NAME,
        "content": content_blocks(reply),
        "stop_reason": stop_reason(reply),
        "stop_sequence": None,
        "usage": _usage(input_tokens, output_tokens(reply)),
    }


def message_start(message_id: str, input_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": MODEL_NAME,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(input_tokens, 1),
        },
    }


def block_events(
    index: int, block: dict[str, Any], text_chunks: list[str]
) -> Iterator[dict[str, Any]]:
    """content_block_start, its deltas and content_block_stop for one block.

    Text blocks stream the given chunks; tool_use blocks stream their input JSON in two
    pieces, so clients must join input_json_delta fragments as with the real API.
    """
    if block["type"] == "text":
        yield {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "text", "text": ""},
        }
        for chunk in text_chunks:
            yield {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": chunk},
            }
    else:
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        yield {"type": "content_block_start", "index": index, "content_block": start}
        arguments = json.dumps(block["input"])
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield {"type": "content_block_delta", "index": index, "delta": delta}
    yield {"type": "content_block_stop", "index": index}


def message_end(reply: TextReply | ToolUseReply) -> Iterator[dict[str, Any]]:
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(reply), "stop_sequence": None},
        "usage": {"output_tokens": output_tokens(reply)},
    }
    yield {"type": "message_stop"}
