"""The scripted model: pick a deterministic reply from the conversation in one request.

Keyed on the last text the user typed (`<system-reminder>` sections ignored):

    "Remember N"          -> "OK"
    "What number?"        -> the last N the user asked to remember anywhere in the conversation
    "slow"                -> "word0 " .. "word29 ", streamed with a pause before each word
    "run tool"            -> a Bash tool_use running `echo hi` (read-only: no permission asked)
    "run tool: CMD"       -> a Bash tool_use running CMD (e.g. `touch x`, which needs permission)
    "write file [NAME]"   -> a Write tool_use creating NAME (default hotsvc-local-model.txt)
    (a tool_result)       -> a text quoting it, e.g. 'Bash tool said: "hi"'
    "fail500", "fail529"  -> that HTTP status with an Anthropic-style error body
    "stall"               -> start the stream, then send nothing more
    "echo X"              -> "echo: X"; anything else is echoed with a not-Claude disclaimer

Stateless on purpose: everything it "remembers" is read back from the messages the client
sends, so a resumed session in a new process recalls what an earlier process was told.

`classify` is the one reading of these triggers: the stand-in CLI (hotsvc-tools' emulator)
answers through it too, so a scenario plays alike on both (tests/test_fidelity.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MODEL_NAME = "hotsvc-local-scripted"
# Said in replies that would otherwise read like a real model's, so nobody mistakes one.
DISCLAIMER = f"[{MODEL_NAME}: a local scripted model, not Claude]"

SLOW_WORDS = 30
# The file "write file" creates when the user names none.
DEFAULT_WRITE_NAME = "hotsvc-local-model.txt"
# What "run tool" runs when the user names no command: read-only, so no permission asked.
DEFAULT_TOOL_COMMAND = "echo hi"
# The text block ahead of a scripted Bash tool_use.
TOOL_PREAMBLE = "Running a scripted Bash command."
NO_NUMBER_TEXT = "I was not asked to remember a number."

_REMINDER = re.compile(r"<system-reminder>.*?(?:</system-reminder>|\Z)", re.DOTALL)
_REMEMBER = re.compile(r"\bremember\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_RECALL = re.compile(r"\bwhat\s+number\b", re.IGNORECASE)
_FAIL = re.compile(r"\bfail(500|529)\b", re.IGNORECASE)
_STALL = re.compile(r"\bstall\b", re.IGNORECASE)
_SLOW = re.compile(r"\bslow\b", re.IGNORECASE)
_RUN_TOOL = re.compile(r"\brun\s+tool\b(?::\s*(.+))?", re.IGNORECASE | re.DOTALL)
_WRITE_FILE = re.compile(r"\bwrite\s+file\b(?:\s+(\S+))?", re.IGNORECASE)
_ECHO = re.compile(r"^\s*echo\b[:\s]*", re.IGNORECASE)
# Claude Code states its working directory in the system prompt; Write needs absolute paths.
_CWD = re.compile(r"(?:Primary working directory|Working directory):\s*(\S+)")


IntentKind = Literal[
    "fail", "stall", "tool", "write", "slow", "remember", "recall", "echo", "other"
]


@dataclass(frozen=True)
class Intent:
    """What the user's text asks of the scripted model; only its kind's field is set."""

    kind: IntentKind
    status: int = 0  # fail: the HTTP status to answer with
    command: str = ""  # tool: the Bash command to run
    path: str = ""  # write: the file to create, as typed (DEFAULT_WRITE_NAME if none)
    number: str = ""  # remember: the last N the text asks to remember, as typed
    said: str = ""  # echo: the X of "echo X"


def classify(text: str) -> Intent:
    """Map what the user typed to an intent; a trigger earlier in this list wins.

    "other" is text with no trigger: the model echoes it with its disclaimer.
    """
    if match := _FAIL.search(text):
        return Intent("fail", status=int(match.group(1)))
    if _STALL.search(text):
        return Intent("stall")
    if match := _RUN_TOOL.search(text):
        return Intent("tool", command=(match.group(1) or "").strip() or DEFAULT_TOOL_COMMAND)
    if match := _WRITE_FILE.search(text):
        return Intent("write", path=match.group(1) or DEFAULT_WRITE_NAME)
    if _SLOW.search(text):
        return Intent("slow")
    if numbers := _REMEMBER.findall(text):
        return Intent("remember", number=numbers[-1])
    if _RECALL.search(text):
        return Intent("recall")
    if _ECHO.match(text):
        return Intent("echo", said=_ECHO.sub("", text, count=1))
    return Intent("other")


def tool_report(name: str, output: str, is_error: bool) -> str:
    """What the model says once it has a tool's result, e.g. 'Bash tool said: "hi"'."""
    verb = "failed" if is_error else "said"
    return f"{name} tool {verb}: {json.dumps(output, ensure_ascii=False)}"


@dataclass(frozen=True)
class TextReply:
    text: str
    # Stream word by word with the server's slow delay between words.
    slow: bool = False


@dataclass(frozen=True)
class ToolUseReply:
    tool_use_id: str
    name: str
    input: dict[str, Any]
    # A short text block ahead of the tool_use, as real models often send.
    preamble: str = ""


@dataclass(frozen=True)
class FailReply:
    status: int


@dataclass(frozen=True)
class StallReply:
    pass


Reply = TextReply | ToolUseReply | FailReply | StallReply


@dataclass(frozen=True)
class _ToolResult:
    tool_use_id: str
    text: str
    is_error: bool


@dataclass
class _UserTurn:
    texts: list[str] = field(default_factory=list)
    tool_results: list[_ToolResult] = field(default_factory=list)


def strip_reminders(text: str) -> str:
    """The text a person typed, without the `<system-reminder>` sections the CLI adds."""
    return _REMINDER.sub("", text).strip()


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, Mapping)]
    return []


def _flatten(content: Any) -> str:
    """Content is a string or a list of blocks; keep its text."""
    return "\n".join(str(b.get("text", "")) for b in _blocks(content) if b.get("type") == "text")


def _user_turn(message: Mapping[str, Any]) -> _UserTurn:
    turn = _UserTurn()
    for block in _blocks(message.get("content")):
        kind = block.get("type")
        if kind == "text":
            text = strip_reminders(str(block.get("text", "")))
            if text:
                turn.texts.append(text)
        elif kind == "tool_result":
            turn.tool_results.append(
                _ToolResult(
                    tool_use_id=str(block.get("tool_use_id", "")),
                    text=_flatten(block.get("content")),
                    is_error=bool(block.get("is_error", False)),
                )
            )
    return turn


def _user_turns(messages: Sequence[Mapping[str, Any]]) -> Iterator[_UserTurn]:
    for message in messages:
        if message.get("role") == "user":
            yield _user_turn(message)


def _tool_names(messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    names: dict[str, str] = {}
    for message in messages:
        if message.get("role") == "assistant":
            for block in _blocks(message.get("content")):
                if block.get("type") == "tool_use":
                    names[str(block.get("id", ""))] = str(block.get("name", "tool"))
    return names


def _system_text(request: Mapping[str, Any]) -> str:
    """The system prompt plus any role "system" messages, where the CLI states its cwd."""
    parts = [request.get("system")]
    raw = request.get("messages")
    if isinstance(raw, list):
        parts += [
            m.get("content") for m in raw if isinstance(m, Mapping) and m.get("role") == "system"
        ]
    return "\n".join(_flatten(part) for part in parts)


def _tool_use_id(messages: Sequence[Mapping[str, Any]]) -> str:
    # Derived from the conversation so replies stay deterministic yet unique within it.
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, default=str).encode())
    return "toolu_local_" + digest.hexdigest()[:24]


def _last_user_message(messages: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    # Recent CLIs put context in role "system" messages after the user's; skip those.
    for index in range(len(messages) - 1, -1, -1):
        message: Mapping[str, Any] = messages[index]
        role = message.get("role")
        if role == "user":
            return message
        if role == "assistant":
            return None
    return None


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The last thing the user typed in the latest user message ("" if it carries none)."""
    message = _last_user_message(messages)
    texts = _user_turn(message).texts if message is not None else []
    return texts[-1] if texts else ""


def remembered_number(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The last N from a "Remember N" the user said anywhere in the conversation."""
    found: str | None = None
    for turn in _user_turns(messages):
        for text in turn.texts:
            for match in _REMEMBER.finditer(text):
                found = match.group(1)
    return found


def slow_words(count: int = SLOW_WORDS) -> list[str]:
    return [f"word{i} " for i in range(count)]


def reply_for(request: Mapping[str, Any]) -> Reply:
    """Decide the scripted reply to one Messages API request body."""
    raw = request.get("messages")
    messages: list[Mapping[str, Any]] = (
        [m for m in raw if isinstance(m, Mapping)] if isinstance(raw, list) else []
    )
    text = last_user_text(messages)

    # A tool_result with nothing typed after it is the CLI reporting back: finish the turn.
    last_user = _last_user_message(messages)
    if last_user is not None and not text:
        results = _user_turn(last_user).tool_results
        if results:
            names = _tool_names(messages)
            parts = [
                tool_report(names.get(result.tool_use_id, "tool"), result.text, result.is_error)
                for result in results
            ]
            return TextReply("; ".join(parts))

    intent = classify(text)
    if intent.kind == "fail":
        return FailReply(intent.status)
    if intent.kind == "stall":
        return StallReply()
    if intent.kind == "tool":
        return ToolUseReply(
            tool_use_id=_tool_use_id(messages),
            name="Bash",
            input={
                "command": intent.command,
                "description": "Run a command scripted by the local model",
            },
            preamble=TOOL_PREAMBLE,
        )
    if intent.kind == "write":
        name = intent.path
        if not name.startswith("/"):
            cwd = _CWD.search(_system_text(request))
            name = f"{cwd.group(1).rstrip('/')}/{name}" if cwd else name
        return ToolUseReply(
            tool_use_id=_tool_use_id(messages),
            name="Write",
            input={"file_path": name, "content": f"written by {MODEL_NAME}\n"},
            preamble="Writing a scripted file.",
        )
    if intent.kind == "slow":
        return TextReply("".join(slow_words()), slow=True)
    if intent.kind == "remember":
        return TextReply("OK")
    if intent.kind == "recall":
        number = remembered_number(messages)
        return TextReply(number if number is not None else NO_NUMBER_TEXT)
    if intent.kind == "echo":
        return TextReply(f"echo: {intent.said}")
    return TextReply(f"echo: {text} {DISCLAIMER}" if text else DISCLAIMER)
