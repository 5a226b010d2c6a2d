"""Pure conversions of content blocks: a caller's UserTurn (text, images, documents) into
the domain's turn with every limit checked, and a conversation's blocks back to protos."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import struct_pb2
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.claude.content import (
    DOCUMENT_TYPES,
    IMAGE_TYPES,
    Block,
    DocumentBlock,
    ImageBlock,
    ToolResultBlock,
    UserBlock,
)
from hotsvc.claude.events import JsonObject, TextBlock, ThinkingBlock, ToolUseBlock
from hotsvc.errors import InvalidRequest
from hotsvc.settings import ServiceConfig

# The longest caller-chosen identifiers: each is repeated on many events or stored.
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class TurnLimits:
    chars: int  # text, all of it
    image_bytes: int  # one image
    document_bytes: int  # one document
    turn_bytes: int  # text and blocks together

    @classmethod
    def of(cls, config: ServiceConfig) -> TurnLimits:
        return cls(
            config.max_turn_chars,
            config.max_image_bytes,
            config.max_document_bytes,
            config.max_turn_bytes,
        )


@dataclass(frozen=True)
class TurnRequest:
    text: str
    turn_id: str
    content: tuple[UserBlock, ...] = ()


def turn_request(turn: pb.UserTurn, limits: TurnLimits, field: str = "turn") -> TurnRequest:
    check_length(f"{field}.turn_id", turn.turn_id)
    blocks = tuple(
        _user_block(block, f"{field}.content[{i}]") for i, block in enumerate(turn.content)
    )
    texts = [turn.text, *(b.text for b in blocks if isinstance(b, TextBlock))]
    if not any(text.strip() for text in texts) and not blocks:
        raise InvalidRequest(
            f"{field}.text is empty: send the prompt text (or content blocks)",
            field=f"{field}.text",
        )
    chars = sum(len(text) for text in texts)
    _limit(
        chars,
        limits.chars,
        f"{field}.text",
        "characters",
        "split the prompt or raise --max-turn-chars",
    )
    for index, block in enumerate(blocks):
        where = f"{field}.content[{index}]"
        if isinstance(block, ImageBlock):
            _limit(
                len(block.data),
                limits.image_bytes,
                where,
                "bytes",
                "scale the image down or raise --max-image-bytes",
            )
        elif isinstance(block, DocumentBlock):
            _limit(
                len(block.data),
                limits.document_bytes,
                where,
                "bytes",
                "split the document or raise --max-document-bytes",
            )
    total = turn.ByteSize()
    _limit(
        total,
        limits.turn_bytes,
        field,
        "bytes",
        "send fewer or smaller blocks, or raise --max-turn-bytes",
    )
    return TurnRequest(turn.text, turn.turn_id, blocks)


def _limit(size: int, limit: int, field: str, unit: str, advice: str) -> None:
    if size > limit:
        raise InvalidRequest(
            f"{field} has {size} {unit}, over the limit of {limit}; {advice}",
            field=field,
            metadata={"length": size, "limit": limit},
        )


def _user_block(block: pb.ContentBlock, field: str) -> UserBlock:
    match block.WhichOneof("block"):
        case "text":
            return TextBlock(block.text.text)
        case "image":
            image = block.image
            _media_type(image.media_type, IMAGE_TYPES, f"{field}.image.media_type")
            _not_empty(image.data, f"{field}.image.data")
            return ImageBlock(image.media_type, image.data)
        case "document":
            document = block.document
            _media_type(document.media_type, DOCUMENT_TYPES, f"{field}.document.media_type")
            _not_empty(document.data, f"{field}.document.data")
            check_length(f"{field}.document.title", document.title, 1024)
            if document.media_type == "text/plain":
                try:
                    document.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidRequest(
                        f"{field}.document.data is not UTF-8 text; send text/plain documents "
                        "as UTF-8, or a PDF as application/pdf",
                        field=f"{field}.document.data",
                    ) from None
            return DocumentBlock(document.media_type, document.data, document.title)
        case None:
            raise InvalidRequest(f"{field} is empty: set text, image or document", field=field)
        case kind:
            raise InvalidRequest(
                f"{field} is a {kind} block; a turn takes text, image and document blocks",
                field=field,
            )


def _media_type(media_type: str, allowed: tuple[str, ...], field: str) -> None:
    if media_type not in allowed:
        raise InvalidRequest(
            f"{field} {media_type[:64]!r} is not supported; use one of {', '.join(allowed)}",
            field=field,
            metadata={"mediaType": media_type[:64], "allowed": ",".join(allowed)},
        )


def _not_empty(data: bytes, field: str) -> None:
    if not data:
        raise InvalidRequest(f"{field} is empty", field=field)


def check_length(field: str, value: str, limit: int = MAX_ID_CHARS) -> None:
    if len(value) > limit:
        raise InvalidRequest(
            f"{field} has {len(value)} characters, over the limit of {limit}: use a shorter "
            "identifier",
            field=field,
            metadata={"length": len(value), "limit": limit},
        )


def fill_block(out: pb.ContentBlock, block: Block) -> None:
    """One block of a message or a conversation as the proto's ContentBlock."""
    match block:
        case TextBlock(text=text):
            out.text.text = text
        case ThinkingBlock(thinking=thinking):
            out.thinking.thinking = thinking
        case ToolUseBlock(id=tool_id, name=name, input=tool_input):
            out.tool_use.id = tool_id
            out.tool_use.name = name
            out.tool_use.input.CopyFrom(struct(tool_input))
        case ToolResultBlock(tool_use_id=tool_use_id, content=content, is_error=is_error):
            out.tool_result.tool_use_id = tool_use_id
            out.tool_result.content = content
            out.tool_result.is_error = is_error
        case ImageBlock(media_type=media_type, data=data):
            out.image.media_type = media_type
            out.image.data = data
        case DocumentBlock(media_type=media_type, data=data, title=title):
            out.document.media_type = media_type
            out.document.data = data
            out.document.title = title


def struct(value: JsonObject) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result
