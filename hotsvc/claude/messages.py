"""A conversation read back from Claude Code's transcript (`<id>.jsonl`).

The transcript holds far more than the conversation: queue operations, attachments
(environment, date, skill listings), API request records, cost state. Only `user` and
`assistant` lines are messages, and of those not the CLI's own: meta lines (e.g. the
"[Image: source: ...]" note 2.1.330 adds after an image) and subagents' sidechains.
The CLI writes one assistant line per content block, all with the API message's id;
consecutive lines of one message are joined back into one message here.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from hotsvc.claude.content import Block, parse_blocks


class Role(enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class Message:
    uuid: str
    role: Role
    content: tuple[Block, ...]
    created_at: float  # seconds since the epoch; 0 when the line has no timestamp
    model: str = ""  # assistant messages only
    message_id: str = ""  # the API's id of an assistant message


def read_messages(lines: Iterable[bytes | str]) -> list[Message]:
    """The user and assistant messages of a transcript, oldest first; lines that are not
    JSON objects (a torn last line, say) are skipped."""
    messages: list[Message] = []
    for line in lines:
        entry = _entry(line)
        if entry is None:
            continue
        message = _message(entry)
        if message is None:
            continue
        last = messages[-1] if messages else None
        if (
            last is not None
            and message.role is Role.ASSISTANT
            and last.role is Role.ASSISTANT
            and message.message_id
            and message.message_id == last.message_id
        ):
            messages[-1] = Message(
                last.uuid,
                last.role,
                last.content + message.content,
                last.created_at,
                last.model,
                last.message_id,
            )
        elif message.content:
            messages.append(message)
    return messages


def _entry(line: bytes | str) -> dict[str, object] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _message(entry: dict[str, object]) -> Message | None:
    kind = entry.get("type")
    if kind not in ("user", "assistant") or entry.get("isMeta") or entry.get("isSidechain"):
        return None
    body = entry.get("message")
    if not isinstance(body, dict):
        return None
    role = Role.USER if kind == "user" else Role.ASSISTANT
    return Message(
        uuid=str(entry.get("uuid") or ""),
        role=role,
        content=parse_blocks(body.get("content")),
        created_at=_seconds(entry.get("timestamp")),
        model=str(body.get("model") or "") if role is Role.ASSISTANT else "",
        message_id=str(body.get("id") or "") if role is Role.ASSISTANT else "",
    )


def _seconds(timestamp: object) -> float:
    if not isinstance(timestamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
