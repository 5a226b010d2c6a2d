"""Entry point: ``hotsvc-emulator`` or ``python -m hotsvc.emulator``, with the real CLI's argv."""

import sys

from hotsvc.emulator import run


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
