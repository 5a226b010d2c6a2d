"""The reply script: what the emulator's "model" answers to a prompt (see ``classify``)."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from .options import Knobs

SLOW_WORDS = 30
GARBAGE_LINE = "this is not json"
CRASH_DELTA = "partial "

REMEMBER_RE = re.compile(r"\bremember\s+(-?\d+)\b", re.IGNORECASE)
HUGE_RE = re.compile(r"\bhuge\s+(\d+)\b", re.IGNORECASE)
WORD_RE = re.compile(r"\s*\S+\s*")

# Triggers shared with the local scripted model (hotsvc.localmodel.script), so one scenario
# runs alike here and on the real CLI against that model (tests/test_fidelity.py).
FAIL_RE = re.compile(r"\bfail(500|529)\b", re.IGNORECASE)
STALL_RE = re.compile(r"\bstall\b", re.IGNORECASE)
RUN_TOOL_RE = re.compile(r"\brun\s+tool\b(?::\s*(.+))?", re.IGNORECASE | re.DOTALL)
ECHO_RE = re.compile(r"^\s*echo\b[:\s]*", re.IGNORECASE)
NO_NUMBER_TEXT = "I was not asked to remember a number."
DEFAULT_TOOL_COMMAND = "echo hi"
TOOL_PREAMBLE = "Running a scripted Bash command."
TOOL_DESCRIPTION = "Run a command scripted by the emulator"
PERMISSION_HINT = "Claude Code asks before a shell command that may change files; allow Bash"
# Bash commands the real CLI runs without asking; any other needs --allowedTools Bash
# (or --permission-mode bypassPermissions), else it is denied: -p mode has no one to ask.
READ_ONLY_COMMANDS = frozenset({"echo", "ls", "pwd", "cat", "true", "date", "whoami"})
SHELL_WRITES = re.compile(r"[>;&|`]|\$\(")

# HTTP status -> (error message, api_retry "error", result "api_error_type"), as recorded.
API_ERRORS = {
    500: ("Internal server error", "server_error", "api_error"),
    529: ("Overloaded", "overloaded", "overloaded_error"),
}


@dataclass(frozen=True)
class Intent:
    """What a prompt asks of the scripted model: ``arg`` is its number, ``command`` a tool's."""

    kind: str  # crash | hang | huge | fail | stall | tool | slow | remember | recall | echo
    arg: int = 0
    command: str = ""


def classify(text: str) -> Intent:
    """Map a prompt to an intent; fault triggers win over ordinary replies."""
    lowered = text.lower()
    if "crash" in lowered:
        return Intent("crash")
    if "hang" in lowered:
        return Intent("hang")
    if huge := HUGE_RE.search(text):
        return Intent("huge", int(huge.group(1)))
    if fail := FAIL_RE.search(text):
        return Intent("fail", int(fail.group(1)))
    if STALL_RE.search(text):
        return Intent("stall")
    if tool := RUN_TOOL_RE.search(text):
        return Intent("tool", command=(tool.group(1) or "").strip() or DEFAULT_TOOL_COMMAND)
    if "slow" in lowered:
        return Intent("slow")
    if remember := REMEMBER_RE.search(text):
        return Intent("remember", int(remember.group(1)))
    if "what number" in lowered:
        return Intent("recall")
    return Intent("echo")


def wants_garbage(text: str) -> bool:
    """Whether a line that is not JSON goes out ahead of the reply."""
    return "garbage" in text.lower()


@dataclass(frozen=True)
class Reply:
    """The reply text as the deltas it streams in, and the pause between deltas."""

    chunks: list[str]
    delay: float

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def words(text: str) -> list[str]:
    return WORD_RE.findall(text) or [text]


def compose_reply(intent: Intent, prompt: str, number: int | None, knobs: Knobs) -> Reply:
    """The scripted model's answer; ``number`` is what it was last told to remember."""
    if intent.kind == "huge":
        return Reply(["x" * intent.arg], 0.0)  # one delta, to test very long lines
    if intent.kind == "slow":
        return Reply([f"word{i} " for i in range(SLOW_WORDS)], knobs.slow_delay)
    if intent.kind == "remember":
        text = "OK"
    elif intent.kind == "recall":
        text = str(number) if number is not None else NO_NUMBER_TEXT
    elif ECHO_RE.match(prompt):
        text = f"echo: {ECHO_RE.sub('', prompt, count=1)}"  # "echo X" says X, as scripted
    else:
        text = f"echo: {prompt}"
    return Reply(words(text), knobs.token_delay)


def tool_report(output: str, is_error: bool) -> str:
    """What the scripted model says once it has a tool's result."""
    verb = "failed" if is_error else "said"
    return f"Bash tool {verb}: {json.dumps(output, ensure_ascii=False)}"


def api_error_text(status: int) -> str:
    message = API_ERRORS[status][0]
    return (
        f"API Error: {status} {message} (hotsvc-emulator). This is a server-side issue, "
        "usually temporary — try again in a moment."
    )


def retry_delay_ms(attempt: int) -> int:
    """The real CLI's backoff: 0.5 s doubling to 32 s, plus up to 25% jitter."""
    base = min(500 << min(attempt - 1, 16), 32_000)
    return int(base * (1 + 0.25 * random.random()))


def needs_permission(command: str) -> bool:
    """Whether the real CLI would ask before running this Bash command."""
    parts = command.split()
    return not parts or parts[0] not in READ_ONLY_COMMANDS or bool(SHELL_WRITES.search(command))
