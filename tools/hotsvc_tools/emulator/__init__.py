"""A stand-in for the Claude Code CLI in stream-json mode, for tests.

It speaks the protocol of ``claude -p --input-format stream-json --output-format
stream-json --verbose`` as recorded in shared/reference/claude-code-stream-json:
JSON lines in on stdin, JSON lines out on stdout, one ``result`` per user turn,
``control_request``/``control_response`` for initialize and interrupt. The "model"
is a script (see ``classify``) and env knobs inject faults (see ``Knobs``).

Where the local scripted model (hotsvc.localmodel) has the same trigger ("Remember N",
"What number?", "slow", "echo X", "fail500"/"fail529", "stall", "run tool[: CMD]"), the
emulator answers as the real CLI 2.1.330 does against it: tests/test_fidelity.py runs the
same scenarios on both through hotsvc and compares what callers see.

Only light stdlib modules are imported: the pool measures spawn-to-first-turn.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import stat
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

Json = dict[str, Any]

VERSION = "emulator-1"
DEFAULT_MODEL = "claude-opus-4-8[1m]"
# Largest stdin line accepted; the driver may send big prompts.
STDIN_LIMIT = 64 * 1024 * 1024

# Fixed per-turn accounting, copied from the recordings.
TURN_INPUT_TOKENS = 10
TURN_OUTPUT_TOKENS = 5
TURN_COST_USD = 0.000175

DEFAULT_TOOLS = [
    "Task", "Bash", "CronCreate", "CronDelete", "CronList", "Edit", "EnterWorktree",
    "ExitWorktree", "NotebookEdit", "Read", "ReportFindings", "ScheduleWakeup",
    "SendMessage", "Skill", "TaskCreate", "TaskGet", "TaskList", "TaskOutput", "TaskStop",
    "TaskUpdate", "WebFetch", "WebSearch", "Workflow", "Write",
]  # fmt: skip
SLASH_COMMANDS = ["clear", "compact", "config", "context", "init", "review", "usage"]
AGENTS = ["claude", "Explore", "general-purpose", "Plan", "statusline-setup"]

INTERRUPTED_TEXT = "[Request interrupted by user]"
PERMISSION_HINT = "Claude Code asks before a shell command that may change files; allow Bash"
SLOW_WORDS = 30
GARBAGE_LINE = "this is not json"
CRASH_DELTA = "partial "

REMEMBER_RE = re.compile(r"\bremember\s+(-?\d+)\b", re.IGNORECASE)
HUGE_RE = re.compile(r"\bhuge\s+(\d+)\b", re.IGNORECASE)
WORD_RE = re.compile(r"\s*\S+\s*")


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Options:
    """The subset of the real CLI's argv that changes what the emulator says."""

    print_mode: bool
    input_format: str
    output_format: str
    verbose: bool
    include_partial: bool
    session_id: str | None
    resume: str | None
    model: str
    permission_mode: str
    allowed_tools: tuple[str, ...]
    disallowed_tools: tuple[str, ...]
    persist: bool


def parse_options(argv: list[str]) -> Options:
    """Parse the real CLI's flags; anything unknown is ignored like a newer flag would be."""
    p = argparse.ArgumentParser(prog="hotsvc-emulator", allow_abbrev=False)
    p.add_argument("-p", "--print", dest="print_mode", action="store_true")
    p.add_argument("--input-format", default="text")
    p.add_argument("--output-format", default="text")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--include-partial-messages", dest="include_partial", action="store_true")
    p.add_argument("--session-id")
    p.add_argument("-r", "--resume")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--system-prompt")
    p.add_argument("--append-system-prompt")
    p.add_argument("--allowedTools", "--allowed-tools", nargs="+", action="extend", default=[])
    p.add_argument(
        "--disallowedTools", "--disallowed-tools", nargs="+", action="extend", default=[]
    )
    p.add_argument("--permission-mode", default="default")
    p.add_argument("--permission-prompt-tool")
    p.add_argument("--max-turns", type=int)
    p.add_argument("--bare", action="store_true")
    p.add_argument("--no-session-persistence", action="store_true")
    ns, _unknown = p.parse_known_args(argv)
    # The real CLI takes "A,B" as well as "A B" for tool lists.
    def tools(args: list[str]) -> tuple[str, ...]:
        return tuple(t for arg in args for t in re.split(r"[,\s]+", arg) if t)

    return Options(
        print_mode=ns.print_mode,
        input_format=ns.input_format,
        output_format=ns.output_format,
        verbose=ns.verbose,
        include_partial=ns.include_partial,
        session_id=ns.session_id,
        resume=ns.resume,
        model=ns.model,
        permission_mode=ns.permission_mode,
        allowed_tools=tools(ns.allowedTools),
        disallowed_tools=tools(ns.disallowedTools),
        persist=not ns.no_session_persistence,
    )


def argv_error(opts: Options) -> str | None:
    """The real CLI refuses these combinations before reading stdin."""
    if opts.input_format == "stream-json" and opts.output_format != "stream-json":
        return "Error: --input-format=stream-json requires output-format=stream-json."
    if opts.print_mode and opts.output_format == "stream-json" and not opts.verbose:
        return "Error: When using --print, --output-format=stream-json requires --verbose"
    return None


@dataclass(frozen=True)
class Knobs:
    """Timing and fault injection, from HOTSVC_EMU_* environment variables.

    ``max_retries`` is the real CLI's own CLAUDE_CODE_MAX_RETRIES; ``retry_delay`` is how
    long the emulator really waits before each retry (the reported delay is the real
    CLI's backoff, which would make tests slow).
    """

    token_delay: float
    slow_delay: float
    startup_delay: float
    crash_code: int
    crash_after_turns: int | None
    stderr_noise: bool
    retry_delay: float
    max_retries: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Knobs:
        after = env.get("HOTSVC_EMU_CRASH_AFTER_TURNS", "")
        return cls(
            token_delay=float(env.get("HOTSVC_EMU_TOKEN_DELAY", "0")),
            slow_delay=float(env.get("HOTSVC_EMU_SLOW_DELAY", "0.1")),
            startup_delay=float(env.get("HOTSVC_EMU_STARTUP_DELAY", "0")),
            crash_code=int(env.get("HOTSVC_EMU_CRASH_CODE", "3")),
            crash_after_turns=int(after) if after else None,
            stderr_noise=env.get("HOTSVC_EMU_STDERR_NOISE", "") not in ("", "0"),
            retry_delay=float(env.get("HOTSVC_EMU_RETRY_DELAY", "0")),
            max_retries=int(env.get("CLAUDE_CODE_MAX_RETRIES") or DEFAULT_MAX_RETRIES),
        )


# ---------------------------------------------------------------- the scripted model

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
# Bash commands the real CLI runs without asking; any other needs --allowedTools Bash
# (or --permission-mode bypassPermissions), else it is denied: -p mode has no one to ask.
READ_ONLY_COMMANDS = frozenset({"echo", "ls", "pwd", "cat", "true", "date", "whoami"})
SHELL_WRITES = re.compile(r"[>;&|`]|\$\(")

# HTTP status -> (error message, api_retry "error", result "api_error_type"), as recorded.
API_ERRORS = {
    500: ("Internal server error", "server_error", "api_error"),
    529: ("Overloaded", "overloaded", "overloaded_error"),
}
# The real CLI's default retry budget (CLAUDE_CODE_MAX_RETRIES overrides it).
DEFAULT_MAX_RETRIES = 10


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


@dataclass(frozen=True)
class Block:
    """One content block of a scripted API message and the pieces it streams in."""

    content: Json  # the whole block, as the assistant message carries it
    pieces: list[str]  # text deltas, or a tool_use's input JSON in parts
    delay: float = 0.0

    @classmethod
    def text(cls, chunks: list[str], delay: float = 0.0) -> Block:
        return cls({"type": "text", "text": "".join(chunks)}, chunks, delay)

    @classmethod
    def tool_use(cls, tool_id: str, name: str, tool_input: Json) -> Block:
        arguments = json.dumps(tool_input)
        half = len(arguments) // 2
        content = {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}
        return cls(content, [arguments[:half], arguments[half:]])

    def start(self) -> Json:
        """The block as content_block_start announces it: empty."""
        if self.content["type"] == "text":
            return {"type": "text", "text": ""}
        return {**self.content, "input": {}}

    def delta(self, piece: str) -> Json:
        if self.content["type"] == "text":
            return {"type": "text_delta", "text": piece}
        return {"type": "input_json_delta", "partial_json": piece}


@dataclass
class ApiCall:
    """The API message being streamed now: what an interrupt has to close."""

    message_id: str
    blocks_started: int = 0
    open_block: Block | None = None
    sent: str = ""  # the open block's streamed text


def prompt_text(msg: Json) -> str:
    """The text of a stdin ``user`` message: a string, or its text blocks joined."""
    message = msg.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


# ---------------------------------------------------------------- persistence


def config_dir() -> Path:
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")


def project_dir(cwd: str) -> Path:
    """Where the real CLI keeps a working directory's sessions: /srv/app -> -srv-app."""
    return config_dir() / "projects" / re.sub(r"[^a-zA-Z0-9]", "-", cwd)


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class Transcript:
    """One session's conversation on disk, so ``--resume`` works across processes."""

    def __init__(self, path: Path, session_id: str, cwd: str, enabled: bool) -> None:
        self.path = path
        self._session_id = session_id
        self._cwd = cwd
        self._enabled = enabled
        self._parent: str | None = None

    def append(self, role: str, text: str) -> None:
        if not self._enabled:
            return
        entry_id = str(uuid.uuid4())
        entry = {
            "type": role,
            "parentUuid": self._parent,
            "sessionId": self._session_id,
            "cwd": self._cwd,
            "uuid": entry_id,
            "timestamp": iso_now(),
            "message": {"role": role, "content": text},
        }
        self._parent = entry_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def load_history(path: Path) -> list[str] | None:
    """A stored session's lines, or None when there is no such session."""
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return None


def remembered_number(lines: list[str]) -> int | None:
    """Replay stored user prompts through the script to recover what it remembers."""
    number = None
    for line in lines:
        entry = json.loads(line)
        if entry.get("type") == "user":
            intent = classify(prompt_text(entry))
            if intent.kind == "remember":
                number = intent.arg
    return number


# ---------------------------------------------------------------- I/O


def die(code: int, *stderr_lines: str) -> NoReturn:
    """Exit at once, as the real process does when it crashes or rejects input."""
    for line in stderr_lines:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
    try:
        sys.stdout.flush()
    finally:
        os._exit(code)


class Output:
    """The single stdout write path: whole lines, flushed, never interleaved."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def send(self, msg: Json) -> None:
        # Compact separators, like the real CLI's JSON.stringify.
        self.raw(json.dumps(msg, ensure_ascii=False, separators=(",", ":")))

    def raw(self, line: str) -> None:
        try:
            self._stream.write(line.encode("utf-8") + b"\n")
            self._stream.flush()
        except BrokenPipeError:
            os._exit(1)  # the reader is gone; nothing left to say


async def open_stdin(limit: int) -> asyncio.StreamReader:
    """An async line reader on stdin, so control requests are read while a reply streams."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return reader
    # Files and terminals cannot go through connect_read_pipe (a tty would also turn
    # stdout non-blocking), so a thread feeds them in instead.
    threading.Thread(target=_feed_stdin, args=(loop, reader), daemon=True).start()
    return reader


def _feed_stdin(loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader) -> None:
    for line in iter(sys.stdin.buffer.readline, b""):
        loop.call_soon_threadsafe(reader.feed_data, line)
    loop.call_soon_threadsafe(reader.feed_eof)


def parse_line(line: bytes) -> Json:
    """A stdin line as a JSON object; anything else kills the process like the real CLI."""
    try:
        msg = json.loads(line)
    except ValueError as exc:
        die(1, f"Error parsing streaming input line: {exc}: {line[:200]!r}")
    if not isinstance(msg, dict):
        die(1, f"Error parsing streaming input line: not a JSON object: {line[:200]!r}")
    return msg


# ---------------------------------------------------------------- message shapes


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


# ---------------------------------------------------------------- the session


class Session:
    """One CLI process: reads stdin, runs queued turns one at a time, answers controls."""

    def __init__(
        self, opts: Options, knobs: Knobs, out: Output, session_id: str, number: int | None
    ) -> None:
        self.opts = opts
        self.knobs = knobs
        self.out = out
        self.session_id = session_id
        self.cwd = os.getcwd()
        self.transcript = Transcript(
            project_dir(self.cwd) / f"{session_id}.jsonl", session_id, self.cwd, opts.persist
        )
        self.number = number
        self.tools = [t for t in DEFAULT_TOOLS if t not in opts.disallowed_tools]
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.interrupt = asyncio.Event()
        self.turn_running = False
        self.hung = False
        self.billed_turns = 0  # successful turns; cost and modelUsage are per process
        self.message_ids = itertools.count(1)
        self.call: ApiCall | None = None  # the API message streaming now
        self.results = 0
        self.last_ok = True

    # -- main loops

    async def run(self) -> int:
        """Serve until stdin closes and queued turns are done; the exit code."""
        worker = asyncio.create_task(self.work())
        reader = await open_stdin(STDIN_LIMIT)
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                die(1, f"Error: input line longer than {STDIN_LIMIT} bytes")
            if not line:
                break
            if not self.hung and line.strip():
                await self.dispatch(parse_line(line))
        await self.queue.put(None)
        await worker
        return 0 if self.last_ok else 1

    async def work(self) -> None:
        while (prompt := await self.queue.get()) is not None:
            await self.turn(prompt)

    async def dispatch(self, msg: Json) -> None:
        kind = msg.get("type")
        if kind == "user":
            self.queue.put_nowait(prompt_text(msg))
            # Let an idle worker start the turn before later lines are looked at, so an
            # interrupt written right after a prompt finds that turn running (or hung).
            await asyncio.sleep(0)
        elif kind == "control_request":
            self.control(msg)
        # Anything else (control_response, keep_alive, ...) needs no answer here.

    # -- control requests

    def control(self, msg: Json) -> None:
        request_id = msg.get("request_id")
        request = msg.get("request")
        subtype = request.get("subtype") if isinstance(request, dict) else None
        if subtype == "interrupt":
            # CLI 2.1.330 lists the prompts still queued behind the interrupted turn.
            self.out.send(self._control_response(request_id, {"still_queued": []}))
            if self.turn_running:
                self.interrupt.set()
        elif subtype == "initialize":
            self.out.send(self._control_response(request_id, self._initialize_response()))
        elif subtype == "get_context_usage":
            self.out.send(self._control_response(request_id, self._context_usage()))
        else:
            error = f"Unsupported control request subtype: {subtype}"
            self.out.send(
                {
                    "type": "control_response",
                    "response": {"subtype": "error", "request_id": request_id, "error": error},
                }
            )

    @staticmethod
    def _control_response(request_id: Any, response: Json | None) -> Json:
        body: Json = {"subtype": "success", "request_id": request_id}
        if response is not None:
            body["response"] = response
        return {"type": "control_response", "response": body}

    def _initialize_response(self) -> Json:
        return {
            "commands": [],
            "agents": [],
            "output_style": "default",
            "available_output_styles": ["default"],
            "models": [
                {
                    "value": "default",
                    "resolvedModel": self.opts.model,
                    "displayName": "Default (recommended)",
                    "description": "The emulator's scripted model",
                }
            ],
            "account": {
                "tokenSource": "none",
                "apiKeySource": self._api_key_source(),
                "apiProvider": "firstParty",
            },
            "pid": os.getpid(),
        }

    def _context_usage(self) -> Json:
        system = 3000
        messages = (TURN_INPUT_TOKENS + TURN_OUTPUT_TOKENS) * self.billed_turns
        window = context_window(self.opts.model)
        total = system + messages
        return {
            "categories": [
                {"name": "System prompt", "tokens": system},
                {"name": "Messages", "tokens": messages},
                {"name": "Free space", "tokens": window - total},
            ],
            "totalTokens": total,
            "maxTokens": window,
            "rawMaxTokens": window,
            "percentage": round(100 * total / window, 2),
            "model": self.opts.model,
            "memoryFiles": [],
            "mcpTools": [],
            "agents": [],
        }

    # -- one turn

    async def turn(self, prompt: str) -> None:
        started = time.monotonic()
        self.interrupt.clear()
        self.turn_running = True
        self.call = None
        try:
            intent = classify(prompt)
            self.transcript.append("user", prompt)
            if self.knobs.stderr_noise:
                sys.stderr.write(f"emulator: noise for turn {self.results + 1}\n")
                sys.stderr.flush()
            self.out.send(self._init())
            if self.opts.include_partial:
                # The recordings show status/requesting only with partial messages.
                self.out.send(self._status())
            if intent.kind == "crash":
                self._crash()
            if intent.kind == "hang":
                await self._hang()
            if "garbage" in prompt.lower():
                self.out.raw(GARBAGE_LINE)
            if intent.kind == "remember":
                self.number = intent.arg
            await self._answer(intent, prompt, started)
        except Interrupted:
            self._finish_interrupted(started)
        finally:
            self.turn_running = False
            self.call = None

    async def _answer(self, intent: Intent, prompt: str, started: float) -> None:
        """Play the scripted model's part of the turn, through to its result."""
        if intent.kind == "fail":
            await self._fail_api(intent.arg, started)
            return
        if intent.kind == "stall":
            self._start_call()  # the stream starts, then nothing more until an interrupt
            await self._wait(None)
        if intent.kind == "tool":
            await self._tool_turn(intent.command, started)
            return
        reply = compose_reply(intent, prompt, self.number, self.knobs)
        await self._api_call([Block.text(reply.chunks, reply.delay)], "end_turn")
        self._finish(reply.text, started, num_turns=1)

    async def _api_call(self, blocks: list[Block], stop_reason: str) -> None:
        """Stream one API message: per block its deltas, then its complete assistant line."""
        call = self._start_call()
        for index, block in enumerate(blocks):
            call.blocks_started, call.open_block, call.sent = index + 1, block, ""
            if self.opts.include_partial:
                start = {"type": "content_block_start", "index": index}
                self._send_event({**start, "content_block": block.start()})
            for position, piece in enumerate(block.pieces):
                await self._wait(block.delay if position else 0.0)
                if self.opts.include_partial:
                    delta = {"type": "content_block_delta", "index": index}
                    self._send_event({**delta, "delta": block.delta(piece)})
                if block.content["type"] == "text":
                    call.sent += piece
            await self._wait(0.0)  # an interrupt that came with the last piece still counts
            self.out.send(self._assistant([block.content]))
            call.open_block = None
            if self.opts.include_partial:
                self._send_event({"type": "content_block_stop", "index": index})
        if self.opts.include_partial:
            self._send_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": TURN_OUTPUT_TOKENS},
                }
            )
            self._send_event({"type": "message_stop"})
        self.call = None

    def _start_call(self) -> ApiCall:
        self.call = ApiCall(f"msg_emu_{next(self.message_ids):06d}")
        if self.opts.include_partial:
            self._send_event({"type": "message_start", "message": self._message([])}, ttft_ms=1)
        return self.call

    async def _wait(self, seconds: float | None) -> None:
        """Pause (None: until interrupted), waking early on interrupt; raises Interrupted."""
        if seconds is not None and seconds <= 0:
            await asyncio.sleep(0)  # let a pending control request be read
        elif seconds is None:
            await self.interrupt.wait()
        else:
            try:
                await asyncio.wait_for(self.interrupt.wait(), seconds)
            except TimeoutError:
                return
        if self.interrupt.is_set():
            raise Interrupted

    async def _fail_api(self, status: int, started: float) -> None:
        """The API answers every attempt with ``status``: retries, then an error result."""
        _message, retry_error, _type = API_ERRORS[status]
        for attempt in range(1, self.knobs.max_retries + 1):
            self.out.send(
                {
                    "type": "system",
                    "subtype": "api_retry",
                    "attempt": attempt,
                    "max_retries": self.knobs.max_retries,
                    "retry_delay_ms": retry_delay_ms(attempt),
                    "error_status": status,
                    "error": retry_error,
                    "session_id": self.session_id,
                    "uuid": _uuid(),
                }
            )
            await self._wait(self.knobs.retry_delay)
        self.out.send(self._synthetic_error(status))
        self._send_result(self._api_error_result(status, started), ok=False)

    async def _tool_turn(self, command: str, started: float) -> None:
        """A Bash tool_use, its result (run, or denied), then a reply quoting it."""
        tool_id = f"toolu_emu_{uuid.uuid4().hex[:24]}"
        tool_input = {"command": command, "description": TOOL_DESCRIPTION}
        preamble = Block.text(words(TOOL_PREAMBLE), self.knobs.token_delay)
        await self._api_call([preamble, Block.tool_use(tool_id, "Bash", tool_input)], "tool_use")
        denials: list[Json] = []
        if self._may_run(command):
            output, is_error = await run_bash(command, self.cwd)
        else:
            output, is_error = f"{command} needs approval: {PERMISSION_HINT}", True
            denials.append({"tool_name": "Bash", "tool_use_id": tool_id, "tool_input": tool_input})
            self.out.send(
                {
                    "type": "system",
                    "subtype": "permission_denied",
                    "tool_name": "Bash",
                    "tool_use_id": tool_id,
                    "message": output,
                    "uuid": _uuid(),
                    "session_id": self.session_id,
                }
            )
        self.out.send(self._tool_result(tool_id, output, is_error))
        if self.opts.include_partial:
            self.out.send(self._status())  # the second API call of the turn
        text = tool_report(output, is_error)
        await self._api_call([Block.text(words(text), self.knobs.token_delay)], "end_turn")
        self._finish(text, started, num_turns=2, denials=denials)

    def _may_run(self, command: str) -> bool:
        return (
            "Bash" in self.opts.allowed_tools
            or self.opts.permission_mode == "bypassPermissions"
            or not needs_permission(command)
        )

    def _crash(self) -> NoReturn:
        if self.opts.include_partial:
            self._start_call()
            self._send_event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            self._send_event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": CRASH_DELTA},
                }
            )
        die(
            self.knobs.crash_code,
            "emulator: crashing on purpose",
            "    at scriptedModel (emulator)",
            f"emulator: exit code {self.knobs.crash_code}",
        )

    async def _hang(self) -> NoReturn:
        """Go silent and deaf until killed; stdin is still drained so the writer never blocks."""
        self.hung = True
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def _finish(
        self, text: str, started: float, num_turns: int, denials: list[Json] | None = None
    ) -> None:
        self.transcript.append("assistant", text)
        self.billed_turns += 1
        result = self._success_result(text, started, num_turns, denials or [])
        self._send_result(result, ok=True)

    def _finish_interrupted(self, started: float) -> None:
        """As recorded: the partial assistant (aborted), the marker, then the stream closes."""
        call = self.call
        if call is not None and call.open_block is not None and call.sent:
            self.out.send(self._assistant([{"type": "text", "text": call.sent}], aborted=True))
            self.transcript.append("assistant", call.sent)
        self.out.send(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"type": "text", "text": INTERRUPTED_TEXT}],
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": _uuid(),
                "timestamp": iso_now(),
            }
        )
        if call is not None and self.opts.include_partial:
            if call.open_block is not None:
                self._send_event({"type": "content_block_stop", "index": call.blocks_started - 1})
            self._send_event(
                {
                    "type": "message_delta",
                    "context_management": None,
                    "delta": {
                        "container": None,
                        "stop_details": None,
                        "stop_reason": None,
                        "stop_sequence": None,
                    },
                    "usage": {"input_tokens": TURN_INPUT_TOKENS, "output_tokens": 1},
                }
            )
            abandoned = {"api_message_id": call.message_id, "from_block_index": call.blocks_started}
            self._send_event({"type": "message_stop"}, abandoned_blocks=abandoned)
        self.call = None
        self._send_result(self._interrupted_result(started), ok=False)

    def _send_result(self, result: Json, ok: bool) -> None:
        self.out.send(result)
        self.results += 1
        self.last_ok = ok
        if self.results == self.knobs.crash_after_turns:
            die(self.knobs.crash_code, f"emulator: crashing after {self.results} turns")

    # -- message builders

    def _api_key_source(self) -> str:
        return "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else "none"

    def _init(self) -> Json:
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
            "apiKeySource": self._api_key_source(),
            "claude_code_version": VERSION,
            "output_style": "default",
            "agents": AGENTS,
            "skills": [],
            "plugins": [],
            "analytics_disabled": True,
            "product_feedback_disabled": True,
            "uuid": _uuid(),
            "memory_paths": {"auto": f"{project_dir(self.cwd)}/memory/"},
            "fast_mode_state": "off",
        }

    def _status(self) -> Json:
        return {
            "type": "system",
            "subtype": "status",
            "status": "requesting",
            "session_id": self.session_id,
            "uuid": _uuid(),
        }

    def _message(self, content: list[Json]) -> Json:
        return {
            "id": self.call.message_id if self.call else f"msg_emu_{next(self.message_ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": api_model(self.opts.model),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": TURN_INPUT_TOKENS, "output_tokens": 1},
        }

    def _assistant(self, content: list[Json], aborted: bool = False) -> Json:
        message = self._message(content)
        message["context_management"] = None
        msg: Json = {
            "type": "assistant",
            "message": message,
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": _uuid(),
            "timestamp": iso_now(),
        }
        if aborted:
            msg["aborted"] = True
        return msg

    def _synthetic_error(self, status: int) -> Json:
        """The assistant message the real CLI makes up when the API keeps failing."""
        return {
            "type": "assistant",
            "message": {
                "id": _uuid(),
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
            "uuid": _uuid(),
            "timestamp": iso_now(),
            "error": "server_error",
            "is_api_error_message": True,
            "api_error_status": status,
            "api_error_type": API_ERRORS[status][2],
        }

    def _tool_result(self, tool_id: str, output: str, is_error: bool) -> Json:
        block = {"tool_use_id": tool_id, "type": "tool_result", "content": output,
                 "is_error": is_error}
        return {
            "type": "user",
            "message": {"role": "user", "content": [block]},
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": _uuid(),
            "timestamp": iso_now(),
        }

    def _send_event(self, event: Json, ttft_ms: int | None = None, **extra: Any) -> None:
        msg: Json = {
            "type": "stream_event",
            "event": event,
            "session_id": self.session_id,
            "parent_tool_use_id": None,
            "uuid": _uuid(),
        }
        if self.call is not None:
            msg["api_message_id"] = self.call.message_id
        if ttft_ms is not None:
            msg["ttft_ms"] = ttft_ms
        self.out.send({**msg, **extra})

    def _cost(self) -> float:
        return round(TURN_COST_USD * self.billed_turns, 6)

    def _model_usage(self) -> Json:
        """Per-process totals, keyed by model, empty before the first billed turn."""
        if not self.billed_turns:
            return {}
        return {
            self.opts.model: {
                "inputTokens": TURN_INPUT_TOKENS * self.billed_turns,
                "outputTokens": TURN_OUTPUT_TOKENS * self.billed_turns,
                "cacheReadInputTokens": 0,
                "cacheCreationInputTokens": 0,
                "webSearchRequests": 0,
                "costUSD": self._cost(),
                "contextWindow": context_window(self.opts.model),
                "maxOutputTokens": 64000,
            }
        }

    # Result lines keep the real CLI's field order: "type" is not first (CLI 2.1.330).

    def _success_result(
        self, text: str, started: float, num_turns: int, denials: list[Json]
    ) -> Json:
        duration_ms = _ms_since(started)
        return {
            "duration_api_ms": duration_ms,
            "stop_reason": "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": self._cost(),
            "usage": usage_block(TURN_INPUT_TOKENS * num_turns, TURN_OUTPUT_TOKENS * num_turns),
            "modelUsage": self._model_usage(),
            "permission_denials": denials,
            "terminal_reason": "completed",
            "fast_mode_state": "off",
            "is_error": False,
            "num_turns": num_turns,
            "subtype": "success",
            "api_error_status": None,
            "result": text,
            "ttft_ms": 1,
            "type": "result",
            "duration_ms": duration_ms,
            "uuid": _uuid(),
            "ttft_stream_ms": 1,
            "time_to_request_ms": 0,
        }

    def _interrupted_result(self, started: float) -> Json:
        # num_turns 2 and the diagnostic in "errors" are as recorded.
        return {
            "duration_api_ms": 0,
            "stop_reason": None,
            "session_id": self.session_id,
            "total_cost_usd": self._cost(),
            "usage": usage_block(0, 0),
            "modelUsage": self._model_usage(),
            "permission_denials": [],
            "terminal_reason": "aborted_streaming",
            "fast_mode_state": "off",
            "is_error": True,
            "num_turns": 2,
            "subtype": "error_during_execution",
            "errors": ["[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"],
            "type": "result",
            "duration_ms": _ms_since(started),
            "uuid": _uuid(),
        }

    def _api_error_result(self, status: int, started: float) -> Json:
        # As recorded: subtype "success" yet is_error, with the API's status and type.
        return {
            "duration_api_ms": 0,
            "stop_reason": "stop_sequence",
            "session_id": self.session_id,
            "total_cost_usd": self._cost(),
            "usage": usage_block(0, 0),
            "modelUsage": self._model_usage(),
            "permission_denials": [],
            "terminal_reason": "api_error",
            "fast_mode_state": "off",
            "is_error": True,
            "num_turns": 1,
            "subtype": "success",
            "api_error_status": status,
            "api_error_type": API_ERRORS[status][2],
            "result": api_error_text(status),
            "type": "result",
            "duration_ms": _ms_since(started),
            "uuid": _uuid(),
        }


class Interrupted(Exception):
    """An interrupt control request stopped the running turn."""


async def run_bash(command: str, cwd: str) -> tuple[str, bool]:
    """Run a Bash tool call for real: its output, and whether it failed."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await proc.communicate()
    output = stdout.decode(errors="replace").rstrip("\n")
    if proc.returncode:
        return f"Exit code {proc.returncode}\n{output}".rstrip("\n"), True
    return output, False


def _uuid() -> str:
    return str(uuid.uuid4())


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# ---------------------------------------------------------------- entry point


def resolve_session(opts: Options) -> tuple[str, int | None]:
    """The session id and remembered number; an unknown ``--resume`` id is fatal."""
    if opts.resume is None:
        return opts.session_id or _uuid(), None
    cwd_dir = project_dir(os.getcwd())
    history = load_history(cwd_dir / f"{opts.resume}.jsonl")
    if history is None:
        die(1, f"No conversation found with session ID: {opts.resume}")
    session_id = opts.session_id or opts.resume
    if session_id != opts.resume and opts.persist:
        # A fork (--resume X --session-id Y) starts from X's history, so Y resumes too.
        with (cwd_dir / f"{session_id}.jsonl").open("a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in history)
    return session_id, remembered_number(history)


def run(argv: list[str] | None = None) -> int:
    """Run the emulator with the real CLI's argv; returns the exit code."""
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    if error := argv_error(opts):
        die(1, error)
    knobs = Knobs.from_env(os.environ)
    session_id, number = resolve_session(opts)
    if knobs.startup_delay > 0:
        time.sleep(knobs.startup_delay)
    session = Session(opts, knobs, Output(sys.stdout.buffer), session_id, number)
    try:
        return asyncio.run(session.run())
    except KeyboardInterrupt:
        return 130
