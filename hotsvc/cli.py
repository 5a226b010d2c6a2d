"""`hotsvc serve`: flags, with environment variables as their defaults."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from hotsvc.config import (
    DEFAULT_PROFILE,
    ConfigError,
    Profile,
    ServiceConfig,
    load_profiles,
    parse_claude_cmd,
)
from hotsvc.local import default_claude_cmd, local_model, wants_local_model


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"hotsvc: {name}={value!r} is not a whole number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotsvc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC service")
    serve.add_argument("--listen", default=os.environ.get("HOTSVC_LISTEN", "127.0.0.1:50051"),
                       help="HOST:PORT to listen on; port 0 picks a free one "
                            "(env HOTSVC_LISTEN, default %(default)s)")
    serve.add_argument("--claude-cmd", default=os.environ.get("HOTSVC_CLAUDE_CMD") or None,
                       help="the Claude Code command, split like a shell would (env "
                            "HOTSVC_CLAUDE_CMD; default `claude` from PATH, else the CLI "
                            "`make setup` installs under node_modules)")
    serve.add_argument("--local-model", choices=("auto", "always", "never"),
                       default=os.environ.get("HOTSVC_LOCAL_MODEL", "never"),
                       help="run the CLI against hotsvc's local scripted model: auto = when "
                            "no Anthropic credentials exist and no --claude-cmd is given "
                            "(env HOTSVC_LOCAL_MODEL, default %(default)s)")
    serve.add_argument("--data-dir", type=Path,
                       default=Path(os.environ.get("HOTSVC_DATA_DIR", ".hotsvc")),
                       help="where hotsvc keeps its state (env HOTSVC_DATA_DIR, "
                            "default %(default)s)")
    serve.add_argument("--pool-size", type=int, default=_env_int("HOTSVC_POOL_SIZE", 2),
                       help="idle warm processes per profile, 0 = spawn on demand "
                            "(env HOTSVC_POOL_SIZE, default %(default)s)")
    serve.add_argument("--max-sessions", type=int, default=_env_int("HOTSVC_MAX_SESSIONS", 0),
                       help="cap on live processes, warm ones included; 0 = no cap "
                            "(env HOTSVC_MAX_SESSIONS)")
    serve.add_argument("--max-concurrent-spawns", type=int, default=2,
                       help="processes started at once by the pools (default %(default)s)")
    serve.add_argument("--max-turn-chars", type=int, default=1024 * 1024,
                       help="longest accepted turn text (default %(default)s)")
    serve.add_argument("--shutdown-grace", type=float, default=10.0,
                       help="seconds running turns get to finish on SIGTERM (default %(default)s)")
    lifecycle = serve.add_argument_group("session lifecycle (0 turns a limit off)")
    lifecycle.add_argument("--idle-timeout", type=float, default=0.0,
                           help="end an unattached idle session's process after this many "
                                "seconds; it resumes on the next open")
    lifecycle.add_argument("--recycle-after-turns", type=int, default=0,
                           help="replace a session's process (by resume) after this many turns")
    lifecycle.add_argument("--recycle-after-seconds", type=float, default=0.0,
                           help="... or once its process is this old")
    lifecycle.add_argument("--recycle-above-rss-mb", type=int, default=0,
                           help="... or once its process holds this much resident memory")
    lifecycle.add_argument("--turn-inactivity-timeout", type=float, default=600.0,
                           help="a turn with no output this long is interrupted, then killed "
                                "(default %(default)s)")
    lifecycle.add_argument("--heartbeat-interval", type=float, default=30.0,
                           help="send a heartbeat on a stream silent this long, for proxies "
                                "with idle timeouts (default %(default)s)")
    lifecycle.add_argument("--on-disconnect", choices=("interrupt", "finish"),
                           default="interrupt",
                           help="what happens to a running turn whose caller went away "
                                "(default %(default)s); its result is kept for re-attach")
    lifecycle.add_argument("--max-line-bytes", type=int, default=64 * 1024 * 1024,
                           help="longest stdout line read from Claude Code; longer ones are "
                                "dropped (default %(default)s)")
    serve.add_argument("--config", type=Path, default=os.environ.get("HOTSVC_CONFIG") or None,
                       help="TOML file with [profiles.NAME] tables (env HOTSVC_CONFIG)")
    default = serve.add_argument_group("default profile")
    default.add_argument("--model", default="")
    default.add_argument("--system-prompt", default="")
    default.add_argument("--append-system-prompt", default="")
    default.add_argument("--permission-mode", default="")
    default.add_argument("--allowed-tools", default="", help="comma-separated")
    default.add_argument("--disallowed-tools", default="", help="comma-separated")
    default.add_argument("--cwd", default="", help="working directory of the sessions")
    default.add_argument("--claude-arg", action="append", default=[], dest="claude_args",
                         help="extra argument for claude (repeatable)")
    serve.add_argument("--log-level", default=os.environ.get("HOTSVC_LOG_LEVEL", "INFO"))
    return parser


def _split(csv: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in csv.split(",") if t.strip())


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    for flag in ("pool_size", "max_sessions"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 0")
    if args.max_concurrent_spawns < 1:
        raise ConfigError("--max-concurrent-spawns must be >= 1")
    for flag in ("turn_inactivity_timeout", "heartbeat_interval"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be > 0")
    default = Profile(
        name=DEFAULT_PROFILE,
        pool_size=args.pool_size,
        model=args.model,
        system_prompt=args.system_prompt,
        append_system_prompt=args.append_system_prompt,
        permission_mode=args.permission_mode,
        allowed_tools=_split(args.allowed_tools),
        disallowed_tools=_split(args.disallowed_tools),
        cwd=args.cwd,
        extra_args=tuple(args.claude_args),
    )
    profiles = load_profiles(args.config, default) if args.config else {DEFAULT_PROFILE: default}
    claude_cmd = parse_claude_cmd(args.claude_cmd or default_claude_cmd())
    if not shutil.which(claude_cmd[0]):
        raise ConfigError(f"Claude Code command {claude_cmd[0]!r} not found: run `make setup` "
                          "(installs it under node_modules) or pass --claude-cmd")
    return ServiceConfig(
        listen=args.listen,
        claude_cmd=claude_cmd,
        max_sessions=args.max_sessions,
        max_concurrent_spawns=args.max_concurrent_spawns,
        max_turn_chars=args.max_turn_chars,
        shutdown_grace=args.shutdown_grace,
        profiles=profiles,
        data_dir=args.data_dir,
        idle_timeout=args.idle_timeout,
        recycle_after_turns=args.recycle_after_turns,
        recycle_after_seconds=args.recycle_after_seconds,
        recycle_above_rss_mb=args.recycle_above_rss_mb,
        turn_inactivity_timeout=args.turn_inactivity_timeout,
        heartbeat_interval=args.heartbeat_interval,
        interrupt_on_disconnect=args.on_disconnect == "interrupt",
        line_limit=args.max_line_bytes,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        raise SystemExit(f"hotsvc: {exc}") from None
    from hotsvc.server import serve  # grpc loads only once the config is known to be good

    with contextlib.ExitStack() as stack:
        if wants_local_model(args.local_model, claude_cmd_given=bool(args.claude_cmd)):
            env = stack.enter_context(local_model(args.data_dir / "claude-local"))
            config = dataclasses.replace(config, env={**config.env, **env})
            print(f"hotsvc: no Anthropic credentials, so sessions run the real Claude Code CLI "
                  f"against a local scripted model at {env['ANTHROPIC_BASE_URL']} (not Claude); "
                  "set ANTHROPIC_API_KEY or pass --claude-cmd to use the real API",
                  file=sys.stderr, flush=True)
        asyncio.run(serve(config))


if __name__ == "__main__":
    main()
