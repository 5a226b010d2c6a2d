"""``hotsvc-emulator``: run with the real CLI's argv until stdin closes."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from .options import Knobs, argv_error, parse_options
from .session import Session
from .stdio import Output, die
from .transcript import resolve_session


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


def main() -> None:
    sys.exit(run())
