"""hotsvc's dev-only tools, kept out of the product package: the stand-in Claude Code CLI
(`hotsvc-emulator`), `make bench`, `make soak` and `make proto`.

Installed editable from a checkout (`make setup-dev`); see `hotsvc_tools.paths`.
"""
