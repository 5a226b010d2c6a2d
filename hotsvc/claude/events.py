"""The typed events of Claude Code's stream-json output, as hotsvc reads them.

Shapes follow real transcripts of `claude -p --input-format stream-json --output-format
stream-json --verbose --include-partial-messages` (see the shared reference folder). Every
event keeps its original line so callers can ask for fields the typed view leaves out;
hotsvc.claude.protocol makes them of lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

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


@dataclass(frozen=True, slots=True)
class ProcessExited(Event):
    """hotsvc's own, not a line: the child is gone. Always the last event a listener gets."""

    returncode: int
    stderr_tail: str
