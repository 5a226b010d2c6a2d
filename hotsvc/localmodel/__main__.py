"""`hotsvc-local-model --listen HOST:PORT`: serve the scripted model until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .script import MODEL_NAME
from .server import DEFAULT_SLOW_DELAY, LocalModelServer


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="hotsvc-local-model",
        description=f"Serve {MODEL_NAME}, a scripted local stand-in for the Anthropic "
        "Messages API (not Claude), for running Claude Code offline.",
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free one (default 127.0.0.1:0)",
    )
    parser.add_argument(
        "--slow-delay",
        type=float,
        default=DEFAULT_SLOW_DELAY,
        metavar="SECONDS",
        help=f"pause between the words of a 'slow' reply (default {DEFAULT_SLOW_DELAY})",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    args = parser.parse_args()
    host, port = args.listen

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with LocalModelServer(
        host, port, slow_delay=args.slow_delay, log_requests=not args.quiet
    ) as server:
        # One line on stdout, so a parent process can read the URL (port 0 included).
        print(server.url, flush=True)
        while not stop.wait(1.0):
            pass
    sys.stderr.write("hotsvc-local-model: stopped\n")


if __name__ == "__main__":
    main()
