"""The messages the emulator prints, shaped as CLI 2.1.330 prints them.

The shapes (and field orders) are those recorded in shared/reference/claude-code-stream-json:
init and status lines, assistant and user messages, stream events, retries and permission
denials. Result lines are in ``results``, control responses in ``control``.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from .options import Options
from .reply import API_ERRORS, api_error_text

Json = dict[str, Any]

VERSION = "emulator-1"
DEFAULT_TOOLS = [
    "Task", "Bash", "CronCreate", "CronDelete", "CronList", "Edit", "EnterWorktree",
    "ExitWorktree", "NotebookEdit", "Read", "ReportFindings", "ScheduleWakeup",
    "SendMessage", "Skill", "TaskCreate", "TaskGet", "TaskList", "TaskOutput", "TaskStop",
    "TaskUpdate", "WebFetch", "WebSearch", "Workflow", "Write",
]  # fmt: skip
SLASH_COMMANDS = ["clear", "compact", "config", "context", "init", "review", "usage"]
AGENTS = ["claude", "Explore", "general-purpose", "Plan", "statusline-setup"]
INTERRUPTED_TEXT = "[Request interrupted by user]"

# Fixed per-turn accounting, copied from the recordings.
TURN_INPUT_TOKENS = 10
TURN_OUTPUT_TOKENS = 5


def new_uuid() -> str:
    return str(uuid.uuid4())


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def usage_block(input_tokens: int, output_tokens: int) -> Json:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
        "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
        "inference_geo": "",
        "iterations": [],
        "speed": "standard",
    }


def api_model(model: str) -> str:
    """The API-side name: the recordings show "claude-opus-4-8" for "claude-opus-4-8[1m]"."""
    return model.removesuffix("[1m]")


def context_window(model: str) -> int:
    return 1_000_000 if model.endswith("[1m]") else 200_000


def api_key_source() -> str:
    return "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else "none"


class Wire:
    """One session's messages, but for results and control responses."""

    def __init__(self, opts: Options, session_id: str, cwd: str, project: Path) -> None:
        self.opts = opts
        self.session_id = session_id
        self.cwd = cwd
        self.project = project  # where the session's transcript and memory live
        self.tools = [t for t in DEFAULT_TOOLS if t not in opts.disallowed_tools]

    def init(self) -> Json:
        return {
            "type": "system",
            "subtype": "init",
            "cwd": self.cwd,
            "session_id": self.session_id,
            "tools": self.tools,
            "mcp_servers": [],
            "model": self.opts.model,
            "permissionMode": self.opts.permission_mode,
            "slash_commands": SLASH_COMMANDS,
            "apiKeySource": api_key_source(),
            "claude_code_version": VERSION,
            "output_style": "default",
            "agents": AGENTS,
            "skills": [],
            "plugins": [],
            "analytics_disabled": True,
            "product_feedback_disabled": True,
            "uuid": new_uuid(),
            "memory_paths": {"auto": f"{self.project}/memory/"},
            "fast_mode_state": "off",
        }

    def echo(self, prompt: str, uuid: str) -> Json:
        """--replay-user-messages: the user message as written, with its uuid."""
        return {
            "type": "user",
            "message": {"role": "user", "content": prompt},
            "session_id": self.session_id,
            "parent_tool_use_id": None,
            "uuid": uuid or new_uuid(),
            "timestamp": iso_now(),
            "isReplay": True,
        }

    def status(self) -> Json:
        return {
            "type": "system",
            "subtype": "status",
            "status": "requesting",
            "session_id": self.session_id,
            "uuid": new_uuid(),
        }

    def message(self, message_id: str, content: list[Json]) -> Json:
        """An API message as message_start and the assistant line carry it."""
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": api_model(self.opts.model),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": TURN_INPUT_TOKENS, "output_tokens": 1},
        }

    def assistant(self, message_id: str, content: list[Json], aborted: bool = False) -> Json:
        message = self.message(message_id, content)
        message["context_management"] = None
        msg: Json = {
            "type": "assistant",
            "message": message,
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
            "timestamp": iso_now(),
        }
        if aborted:
            msg["aborted"] = True
        return msg

    def interrupted_marker(self) -> Json:
        """The user message the real CLI adds when an interrupt stops a turn."""
        return {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "text", "text": INTERRUPTED_TEXT}],
            },
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
            "timestamp": iso_now(),
        }

    def synthetic_error(self, status: int) -> Json:
        """The assistant message the real CLI makes up when the API keeps failing."""
        return {
            "type": "assistant",
            "message": {
                "id": new_uuid(),
                "model": "<synthetic>",
                "role": "assistant",
                "stop_reason": "stop_sequence",
                "stop_sequence": "",
                "type": "message",
                "usage": usage_block(0, 0),
                "content": [{"type": "text", "text": api_error_text(status)}],
                "context_management": None,
            },
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
            "timestamp": iso_now(),
            "error": "server_error",
            "is_api_error_message": True,
            "api_error_status": status,
            "api_error_type": API_ERRORS[status][2],
        }

    def api_retry(self, attempt: int, max_retries: int, status: int, delay_ms: int) -> Json:
        return {
            "type": "system",
            "subtype": "api_retry",
            "attempt": attempt,
            "max_retries": max_retries,
            "retry_delay_ms": delay_ms,
            "error_status": status,
            "error": API_ERRORS[status][1],
            "session_id": self.session_id,
            "uuid": new_uuid(),
        }

    def permission_denied(self, tool_name: str, tool_id: str, message: str) -> Json:
        return {
            "type": "system",
            "subtype": "permission_denied",
            "tool_name": tool_name,
            "tool_use_id": tool_id,
            "message": message,
            "uuid": new_uuid(),
            "session_id": self.session_id,
        }

    def tool_result(self, tool_id: str, output: str, is_error: bool) -> Json:
        block = {
            "tool_use_id": tool_id,
            "type": "tool_result",
            "content": output,
            "is_error": is_error,
        }
        return {
            "type": "user",
            "message": {"role": "user", "content": [block]},
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": new_uuid(),
            "timestamp": iso_now(),
        }

    def stream_event(
        self, event: Json, message_id: str | None, ttft_ms: int | None = None, **extra: Any
    ) -> Json:
        """A stream_event line (with --include-partial-messages) of API message message_id."""
        msg: Json = {
            "type": "stream_event",
            "event": event,
            "session_id": self.session_id,
            "parent_tool_use_id": None,
            "uuid": new_uuid(),
        }
        if message_id is not None:
            msg["api_message_id"] = message_id
        if ttft_ms is not None:
            msg["ttft_ms"] = ttft_ms
        return {**msg, **extra}
