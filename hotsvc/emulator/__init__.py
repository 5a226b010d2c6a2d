"""A stand-in for the Claude Code CLI in stream-json mode, for tests.

It speaks the protocol of ``claude -p --input-format stream-json --output-format
stream-json --verbose`` as recorded in shared/reference/claude-code-stream-json:
JSON lines in on stdin, JSON lines out on stdout, one ``result`` per user turn,
``control_request``/``control_response`` for initialize and interrupt. The "model"
is a script (see ``classify``) and env knobs inject faults (see ``Knobs``).

Only light stdlib modules are imported: the pool measures spawn-to-first-turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
    disallowed = tuple(t for arg in ns.disallowedTools for t in re.split(r"[,\s]+", arg) if t)
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
        disallowed_tools=disallowed,
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
    """Timing and fault injection, from HOTSVC_EMU_* environment variables."""

    token_delay: float
    slow_delay: float
    startup_delay: float
    crash_code: int
    crash_after_turns: int | None
    stderr_noise: bool

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
        )


# ---------------------------------------------------------------- the scripted model


@dataclass(frozen=True)
class Intent:
    """What a prompt asks of the scripted model; ``arg`` is its number, if any."""

    kind: str  # crash | hang | huge | slow | remember | recall | echo
    arg: int = 0


def classify(text: str) -> Intent:
    """Map a prompt to an intent; fault triggers win over ordinary replies."""
    lowered = text.lower()
    if "crash" in lowered:
        return Intent("crash")
    if "hang" in lowered:
        return Intent("hang")
    if huge := HUGE_RE.search(text):
        return Intent("huge", int(huge.group(1)))
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


def compose_reply(intent: Intent, prompt: str, number: int | None, knobs: Knobs) -> Reply:
    """The scripted model's answer; ``number`` is what it was last told to remember."""
    if intent.kind == "huge":
        return Reply(["x" * intent.arg], 0.0)  # one delta, to test very long lines
    if intent.kind == "slow":
        return Reply([f"word{i} " for i in range(SLOW_WORDS)], knobs.slow_delay)
    if intent.kind == "remember":
        text = "OK"
    elif intent.kind == "recall":
        text = str(number) if number is not None else "I don't remember a number."
    else:
        text = f"echo: {prompt}"
    return Reply(WORD_RE.findall(text) or [text], knobs.token_delay)


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
            # The recording's interrupt success carries no "response" object.
            self.out.send(self._control_response(request_id, None))
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
            reply = compose_reply(intent, prompt, self.number, self.knobs)
            sent, interrupted = await self._stream(reply)
            if interrupted:
                self._finish_interrupted(sent, started)
            else:
                self._finish(reply.text, started)
        finally:
            self.turn_running = False

    async def _stream(self, reply: Reply) -> tuple[str, bool]:
        """Stream the reply's deltas; the text sent and whether an interrupt stopped it."""
        if self.opts.include_partial:
            self._send_stream_head()
        sent: list[str] = []
        for i, chunk in enumerate(reply.chunks):
            if await self._pause(reply.delay if i else 0.0):
                return "".join(sent), True
            if self.opts.include_partial:
                self._send_event(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": chunk},
                    }
                )
            sent.append(chunk)
        return "".join(sent), await self._pause(0.0)

    async def _pause(self, seconds: float) -> bool:
        """Wait between deltas, waking early on interrupt; True if interrupted."""
        if seconds <= 0:
            await asyncio.sleep(0)  # let a pending control request be read
            return self.interrupt.is_set()
        try:
            await asyncio.wait_for(self.interrupt.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _crash(self) -> NoReturn:
        if self.opts.include_partial:
            self._send_stream_head()
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

    def _finish(self, text: str, started: float) -> None:
        self.out.send(self._assistant(text))
        if self.opts.include_partial:
            self._send_event({"type": "content_block_stop", "index": 0})
            self._send_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": TURN_OUTPUT_TOKENS},
                }
            )
            self._send_event({"type": "message_stop"})
        self.transcript.append("assistant", text)
        self.billed_turns += 1
        self._send_result(self._success_result(text, started), ok=True)

    def _finish_interrupted(self, sent: str, started: float) -> None:
        if sent:
            self.out.send(self._assistant(sent))
            self.transcript.append("assistant", sent)
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
            "uuid": _uuid(),
            "session_id": self.session_id,
        }

    def _message(self, content: list[Json]) -> Json:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": api_model(self.opts.model),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": TURN_INPUT_TOKENS, "output_tokens": 1},
        }

    def _assistant(self, text: str) -> Json:
        message = self._message([{"type": "text", "text": text}])
        message["context_management"] = None
        return {
            "type": "assistant",
            "message": message,
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": _uuid(),
        }

    def _send_stream_head(self) -> None:
        self._send_event({"type": "message_start", "message": self._message([])}, ttft_ms=1)
        self._send_event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        )

    def _send_event(self, event: Json, ttft_ms: int | None = None) -> None:
        msg: Json = {
            "type": "stream_event",
            "event": event,
            "session_id": self.session_id,
            "parent_tool_use_id": None,
            "uuid": _uuid(),
        }
        if ttft_ms is not None:
            msg["ttft_ms"] = ttft_ms
        self.out.send(msg)

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

    def _success_result(self, text: str, started: float) -> Json:
        duration_ms = _ms_since(started)
        return {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "api_error_status": None,
            "duration_ms": duration_ms,
            "duration_api_ms": duration_ms,
            "ttft_ms": 1,
            "ttft_stream_ms": 1,
            "time_to_request_ms": 0,
            "num_turns": 1,
            "result": text,
            "stop_reason": "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": self._cost(),
            "usage": usage_block(TURN_INPUT_TOKENS, TURN_OUTPUT_TOKENS),
            "modelUsage": self._model_usage(),
            "permission_denials": [],
            "terminal_reason": "completed",
            "fast_mode_state": "off",
            "uuid": _uuid(),
        }

    def _interrupted_result(self, started: float) -> Json:
        # Field order, num_turns 2 and the diagnostic in "errors" are as recorded.
        return {
            "type": "result",
            "subtype": "error_during_execution",
            "duration_ms": _ms_since(started),
            "duration_api_ms": 0,
            "is_error": True,
            "num_turns": 2,
            "stop_reason": None,
            "session_id": self.session_id,
            "total_cost_usd": self._cost(),
            "usage": usage_block(0, 0),
            "modelUsage": self._model_usage(),
            "permission_denials": [],
            "terminal_reason": "aborted_streaming",
            "fast_mode_state": "off",
            "uuid": _uuid(),
            "errors": ["[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"],
        }


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
