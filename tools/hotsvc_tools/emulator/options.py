"""What a run is told: the real CLI's argv, and the HOTSVC_EMU_* fault knobs."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MODEL = "claude-opus-4-8[1m]"
# The real CLI's default retry budget (CLAUDE_CODE_MAX_RETRIES overrides it).
DEFAULT_MAX_RETRIES = 10


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
    replay: bool  # --replay-user-messages: echo each user message back
    # --permission-prompt-tool stdio: ask the host (`can_use_tool`) instead of denying.
    permission_prompt_tool: str = ""


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
    p.add_argument("--replay-user-messages", dest="replay", action="store_true")
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
        replay=ns.replay,
        permission_prompt_tool=ns.permission_prompt_tool or "",
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
