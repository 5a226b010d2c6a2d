"""`hotsvc serve`: the flags come from hotsvc.settings, environment variables their defaults.
`hotsvc token`: a new bearer token for `--auth-tokens`.
`hotsvc status`, `hotsvc close`: the pools and sessions of a running hotsvc, for people."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hotsvc import flags, logs, settings
from hotsvc.errors import StoreUnavailable
from hotsvc.local import local_model, wants_local_model
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig

log = logging.getLogger("hotsvc")


def build_parser(environ: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotsvc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC service")
    flags.add_arguments(serve, environ)
    token = commands.add_parser(
        "token",
        help="make a bearer token: append its digest line to FILE, print the token once",
    )
    token.add_argument("principal", help="who the token authenticates, e.g. a team's name")
    token.add_argument("--admin", action="store_true", help="sees and may close every session")
    token.add_argument(
        "--file", type=Path, required=True, help="the --auth-tokens file (created 0600)"
    )
    from hotsvc import console  # imports grpc: main() prepares its environment first

    console.add_commands(commands, environ)
    return parser


def make_token(args: argparse.Namespace) -> None:
    from hotsvc.auth.tokens import TokenFileError, add_token

    try:
        token = add_token(args.file, args.principal, args.admin)
    except (TokenFileError, OSError) as exc:
        raise SystemExit(f"hotsvc token: {exc}") from None
    print(token)
    print(
        f"hotsvc token: added {args.principal}{' (admin)' if args.admin else ''} to "
        f"{args.file}; this is the only time the token is shown. Callers send "
        "`authorization: Bearer TOKEN`; a running hotsvc reads the file again on SIGHUP",
        file=sys.stderr,
    )


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """The validated configuration; the Claude Code command must exist."""
    config = flags.from_args(args)
    command = config.claude_cmd[0]
    if not shutil.which(command):
        raise ConfigError(
            f"Claude Code command {command!r} not found: install it (npm install -g "
            "@anthropic-ai/claude-code; in a checkout `make setup` installs the pinned one "
            "under node_modules) or pass --claude-cmd"
        )
    return config


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """--event-loop: uvloop's factory, or None for asyncio's own loop."""
    if name != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    # Before anything imports grpc, which reads it once: uvloop starts children with
    # fork(), and gRPC's fork handlers then log a line per spawn and now and then crash
    # the child between fork and exec (SIGSEGV, seen as a spawn that "did not start").
    # No child of ours uses gRPC.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from hotsvc import console  # imports grpc

    args = build_parser().parse_args(argv)
    if args.command == "token":
        make_token(args)
        return
    if args.command in ("status", "close"):
        with contextlib.suppress(KeyboardInterrupt):  # --watch ends with Ctrl-C
            asyncio.run(getattr(console, args.command)(args))
        return
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        raise SystemExit(f"hotsvc: {exc}") from None
    logs.configure(config.log_level, config.log_format, sys.stderr)
    from hotsvc.grpc.server import serve  # grpc loads only once the config is known to be good

    with contextlib.ExitStack() as stack:
        claude_cmd_given = config.claude_cmd != settings.ServiceConfig.claude_cmd
        if wants_local_model(config.local_model, claude_cmd_given=claude_cmd_given):
            data_dir = config.data_dir or settings.ServiceConfig.data_dir
            assert data_dir is not None
            env = stack.enter_context(local_model(data_dir / "claude-local"))
            config = dataclasses.replace(config, env={**config.env, **env})
            # A log line, so that --log-format json keeps every stderr line JSON.
            log.warning(
                "no Anthropic credentials, so sessions run the real Claude Code CLI against "
                "a local scripted model at %s (not Claude); set ANTHROPIC_API_KEY or pass "
                "--claude-cmd to use the real API",
                env["ANTHROPIC_BASE_URL"],
            )
        try:
            with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
                runner.run(serve(config))
        # At start: a wrong --store or a database down; files or a layout that cannot work.
        except (StoreUnavailable, ConfigError) as exc:
            raise SystemExit(f"hotsvc: {exc}") from None


if __name__ == "__main__":
    main()
