"""Claude Code's side: its stream-json protocol, how it is launched, one running process."""
