"""Message content beyond assistant text: what a user sends (images, documents) and what a
transcript holds (tool results), as values, and the Messages API's JSON for them.

Claude Code takes a user message's `content` as the Messages API's block array (measured
on 2.1.197 and 2.1.330: image and document blocks reach the model unchanged), and keeps
the blocks so in its transcript.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from hotsvc.claude.events import JsonObject, TextBlock, ThinkingBlock, ToolUseBlock
from hotsvc.claude.protocol import text_of

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DOCUMENT_TYPES = ("application/pdf", "text/plain")


@dataclass(frozen=True, slots=True)
class ImageBlock:
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DocumentBlock:
    media_type: str
    data: bytes  # a PDF's bytes, or UTF-8 text for text/plain
    title: str = ""


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    tool_use_id: str
    content: str
    is_error: bool = False


# What a caller may put in a turn, and everything a conversation holds.
UserBlock = TextBlock | ImageBlock | DocumentBlock
Block = TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock | ImageBlock | DocumentBlock


def to_json(block: UserBlock) -> JsonObject:
    """A user block as the Messages API (and Claude Code's stream-json input) takes it."""
    match block:
        case TextBlock(text=text):
            return {"type": "text", "text": text}
        case ImageBlock(media_type=media_type, data=data):
            return {"type": "image", "source": _base64(media_type, data)}
        case DocumentBlock(media_type="text/plain", data=data, title=title):
            source = {"type": "text", "media_type": "text/plain", "data": data.decode()}
            return _titled({"type": "document", "source": source}, title)
        case DocumentBlock(media_type=media_type, data=data, title=title):
            return _titled({"type": "document", "source": _base64(media_type, data)}, title)
    raise TypeError(f"not a user block: {block!r}")


def user_content(text: str, blocks: tuple[UserBlock, ...]) -> str | list[JsonObject]:
    """A user message's content: the plain text, or (with blocks) a block array that
    starts with the text when there is one."""
    if not blocks:
        return text
    head = [to_json(TextBlock(text))] if text else []
    return head + [to_json(block) for block in blocks]


def parse_blocks(content: Any) -> tuple[Block, ...]:
    """The blocks of a transcript message's content (a string or a block array); block
    types this module does not model (e.g. server tool results) are left out."""
    if isinstance(content, str):
        return (TextBlock(content),) if content else ()
    if not isinstance(content, list):
        return ()
    blocks = (_block(item) for item in content if isinstance(item, dict))
    return tuple(block for block in blocks if block is not None)


def _block(item: JsonObject) -> Block | None:
    match item.get("type"):
        case "text":
            return TextBlock(str(item.get("text", "")))
        case "thinking":
            return ThinkingBlock(str(item.get("thinking", "")))
        case "tool_use":
            return ToolUseBlock(
                str(item.get("id", "")), str(item.get("name", "")), dict(item.get("input") or {})
            )
        case "tool_result":
            return ToolResultBlock(
                str(item.get("tool_use_id", "")),
                text_of(item.get("content")),
                bool(item.get("is_error")),
            )
        case "image":
            source = item.get("source") or {}
            data = _decoded(source)
            return ImageBlock(str(source.get("media_type", "")), data) if data is not None else None
        case "document":
            source = item.get("source") or {}
            data = _decoded(source)
            if data is None:
                return None
            return DocumentBlock(
                str(source.get("media_type", "")), data, str(item.get("title", ""))
            )
    return None


def _base64(media_type: str, data: bytes) -> JsonObject:
    return {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()}


def _titled(block: JsonObject, title: str) -> JsonObject:
    return {**block, "title": title} if title else block


def _decoded(source: JsonObject) -> bytes | None:
    """A source's bytes: base64 decoded, or a text source's UTF-8; None for URL and file
    sources, which hold no bytes."""
    data = source.get("data")
    if not isinstance(data, str):
        return None
    if source.get("type") == "text":
        return data.encode()
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
