"""`hotsvc status` and `hotsvc close`: the service for a person at a terminal.

Both call the API like any other caller, with the generated stubs and the same
credentials (grpcurl's flags: `--cacert`, `--cert`/`--key`, and a bearer token from
HOTSVC_TOKEN or `--token-file`, e.g. one `hotsvc token` made); an admin's token sees
every session, another only its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
STATES = {
    pb.SESSION_STATE_IDLE: "idle",
    pb.SESSION_STATE_BUSY: "busy",
    pb.SESSION_STATE_ATTACHED: "attached",
    pb.SESSION_STATE_STOPPED: "stopped",
    pb.SESSION_STATE_LOST: "lost",
}


def add_client_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    parser.add_argument(
        "--address",
        default=environ.get("HOTSVC_ADDRESS", DEFAULT_ADDRESS),
        help=f"HOST:PORT of hotsvc (env HOTSVC_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="a file holding the bearer token (else env HOTSVC_TOKEN, if set)",
    )
    parser.add_argument("--tls", action="store_true", help="TLS, with the system's CA roots")
    parser.add_argument("--cacert", type=Path, help="TLS, trusting this PEM CA bundle")
    parser.add_argument("--cert", type=Path, help="PEM client certificate (mTLS), with --key")
    parser.add_argument("--key", type=Path, help="PEM private key of --cert")


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"hotsvc: {flag} {path}: {exc.strerror}") from None


def channel_of(args: argparse.Namespace) -> grpc.aio.Channel:
    if (args.cert is None) != (args.key is None):
        raise SystemExit("hotsvc: --cert and --key go together")
    if not (args.tls or args.cacert or args.cert):
        return grpc.aio.insecure_channel(args.address)
    credentials = grpc.ssl_channel_credentials(
        _read(args.cacert, "--cacert"), _read(args.key, "--key"), _read(args.cert, "--cert")
    )
    return grpc.aio.secure_channel(args.address, credentials)


def metadata_of(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    token = environ.get("HOTSVC_TOKEN", "")
    if (raw := _read(args.token_file, "--token-file")) is not None:
        token = raw.decode().strip()
    return (("authorization", f"Bearer {token}"),) if token else ()


# -- the table ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d{seconds // 3600 % 24:02d}h"


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB" if size else "-"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in [header, *rows]
    ]


def render(status: pb.PoolStatusResponse, address: str, now: float) -> str:
    """PoolStatus as a person reads it: a summary line, the pools, the sessions."""
    stats = status.spawn_stats
    cap = str(status.max_sessions) if status.max_sessions else "no cap"
    lines = [
        f"hotsvc at {address}{' (draining)' if status.draining else ''}: "
        f"{status.active_sessions} live sessions, {status.stopped_sessions} stopped, "
        f"{status.pool_size}/{status.target_size} warm; max sessions {cap}; "
        f"spawned {stats.spawned} ({stats.failed} failed), "
        f"mean ready {stats.mean_spawn_time.ToNanoseconds() / 1e9:.2f}s",
        "",
    ]
    pools = [[p.profile, str(p.pool_size), str(p.target_size)] for p in status.pools]
    lines += _table(["PROFILE", "WARM", "TARGET"], pools, right={1, 2})
    lines.append("")
    sessions = [
        [
            s.session_id,
            STATES.get(s.state, "?"),
            _duration(s.age.ToNanoseconds() / 1e9),
            str(s.turns),
            "-"
            if s.state == pb.SESSION_STATE_BUSY
            else _duration(now - s.last_active_time.ToNanoseconds() / 1e9),
            str(s.pid) if s.pid else "-",
            _megabytes(s.rss_bytes),
            s.profile,
            s.owner,
        ]
        for s in status.sessions
    ]
    header = ["SESSION", "STATE", "AGE", "TURNS", "IDLE FOR", "PID", "RSS", "PROFILE", "OWNER"]
    lines += _table(header, sessions, right={2, 3, 4, 5, 6}) if sessions else ["no sessions"]
    return "\n".join(lines)


async def status(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> None:
    """Print the table once, or with --watch every --interval seconds until Ctrl-C."""
    metadata = metadata_of(args, environ)
    async with channel_of(args) as channel:
        stub = pb_grpc.HotSessionStub(channel)
        while True:
            try:
                answer = await stub.PoolStatus(
                    pb.PoolStatusRequest(), metadata=metadata, timeout=args.timeout
                )
            except grpc.aio.AioRpcError as exc:
                raise SystemExit(f"hotsvc status: {_failure(exc, args.address)}") from None
            table = render(answer, args.address, time.time())
            if args.watch:  # clear the screen, then draw: a terminal shows the latest
                sys.stdout.write("\x1b[H\x1b[2J")
            print(table, flush=True)
            if not args.watch:
                return
            await asyncio.sleep(args.interval)


async def close(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> None:
    metadata = (*metadata_of(args, environ), ("hotsvc-session-id", args.session_id))
    async with channel_of(args) as channel:
        stub = pb_grpc.HotSessionStub(channel)
        try:
            answer = await stub.CloseSession(
                pb.CloseSessionRequest(session_id=args.session_id),
                metadata=metadata,
                timeout=args.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise SystemExit(f"hotsvc close: {_failure(exc, args.address)}") from None
    print(
        f"closed session {answer.session_id} (its process exited with {answer.exit_code}); "
        "the conversation is kept: opening it again resumes it"
    )


def _failure(exc: grpc.aio.AioRpcError, address: str) -> str:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach hotsvc at {address}: {exc.details()}"
    return f"{exc.code().name}: {exc.details()}"


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    shown = commands.add_parser(
        "status", help="the warm pools and the sessions as a table (PoolStatus)"
    )
    add_client_arguments(shown, environ)
    shown.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    shown.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    shown.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for hotsvc")
    ending = commands.add_parser(
        "close", help="end a session's process; its conversation is kept (CloseSession)"
    )
    ending.add_argument("session_id", help="the session's id (hotsvc status lists them)")
    add_client_arguments(ending, environ)
    ending.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for hotsvc")
