"""`python -m hotsvc_tools.soak` (`make soak`): run the soak, print the report, exit 1 on
any failure."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from hotsvc_tools import soak
from hotsvc_tools.soak.figures import Options
from hotsvc_tools.soak.report import render
from hotsvc_tools.soak.runner import run


def main(argv: list[str] | None = None) -> None:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m hotsvc_tools.soak",
        description=soak.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sessions", type=int, default=defaults.sessions)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--turns", type=int, default=defaults.turns, help="per session")
    parser.add_argument("--max-sessions", type=int, default=defaults.max_sessions)
    parser.add_argument("--pool-size", type=int, default=defaults.pool_size)
    parser.add_argument("--hangs", type=int, default=defaults.hangs)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="0 picks one (printed)")
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit)
    parser.add_argument("--growth-limit-mb", type=float, default=defaults.growth_limit_mb)
    parser.add_argument("--work-dir", type=Path, help="keep hotsvc.log and state here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    options = Options(**vars(args))
    figures = asyncio.run(run(options))
    print(render(options, figures))
    sys.exit(0 if figures.ok else 1)


if __name__ == "__main__":
    main()
