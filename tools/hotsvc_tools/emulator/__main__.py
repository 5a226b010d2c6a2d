"""Entry point: ``hotsvc-emulator`` or ``python -m hotsvc_tools.emulator``, with the CLI's argv."""

import sys

from hotsvc_tools.emulator import run


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
