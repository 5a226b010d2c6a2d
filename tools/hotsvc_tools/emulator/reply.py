"""The reply script: what the emulator's "model" answers to a prompt.

The triggers it shares with hotsvc's local scripted model ("Remember N", "What number?",
"slow", "echo X", "fail500"/"fail529", "stall", "run tool[: CMD]") are read by that model's
own ``classify`` (hotsvc.localmodel.script), so the emulator answers a scenario as the real
CLI does against that model (tests/test_fidelity.py). The faults only the emulator plays
are read here and win over the script: "crash", "hang", "huge N", "ask host SUBTYPE" (the
CLI sends its host a control request of that subtype and replies with the answer), and
"garbage" (a line that is not JSON ahead of the reply).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from hotsvc.localmodel import script
from hotsvc.localmodel.script import NO_NUMBER_TEXT, Intent, slow_words

from .options import Knobs

HUGE_RE = re.compile(r"\bhuge\s+(\d+)\b", re.IGNORECASE)
ASK_HOST_RE = re.compile(r"\bask\s+host\s+(\w+)", re.IGNORECASE)
WORD_RE = re.compile(r"\s*\S+\s*")
GARBAGE_LINE = "this is not json"
CRASH_DELTA = "partial "

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
class Fault:
    """An emulator-only trigger: the process crashes, hangs, or sends one huge line."""

    kind: Literal["crash", "hang", "huge", "ask"]
    size: int = 0  # huge: the reply's length in characters
    subtype: str = ""  # ask: the control request the CLI sends its host


def classify(text: str) -> Fault | Intent:
    """Map a prompt to what the turn plays; the emulator's faults win over the script."""
    lowered = text.lower()
    if "crash" in lowered:
        return Fault("crash")
    if "hang" in lowered:
        return Fault("hang")
    if huge := HUGE_RE.search(text):
        return Fault("huge", int(huge.group(1)))
    if ask := ASK_HOST_RE.search(text):
        return Fault("ask", subtype=ask.group(1))
    return script.classify(text)


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


def compose_reply(intent: Fault | Intent, prompt: str, number: str | None, knobs: Knobs) -> Reply:
    """The scripted model's answer; ``number`` is what it was last told to remember."""
    if isinstance(intent, Fault):  # "huge": a crash or hang never gets this far
        return Reply(["x" * intent.size], 0.0)  # one delta, to test very long lines
    if intent.kind == "slow":
        return Reply(slow_words(), knobs.slow_delay)
    if intent.kind == "remember":
        text = "OK"
    elif intent.kind == "recall":
        text = number if number is not None else NO_NUMBER_TEXT
    elif intent.kind == "echo":
        text = f"echo: {intent.said}"  # "echo X" says X, as scripted
    else:
        # The local model adds its disclaimer here. "write file" lands here too: the
        # emulator has no Write tool.
        text = f"echo: {prompt}"
    return Reply(words(text), knobs.token_delay)


def tool_report(output: str, is_error: bool) -> str:
    """What the scripted model says once it has the Bash tool's result."""
    return script.tool_report("Bash", output, is_error)


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
