"""``python -m hotsvc_tools.emulator``: the same as ``hotsvc-emulator``."""

from .cli import main

if __name__ == "__main__":
    main()
