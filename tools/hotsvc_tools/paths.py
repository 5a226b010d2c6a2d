"""Where the checkout is: the tools work on a checkout of hotsvc, never on an installed copy.

`make setup-dev` installs this distribution editable (`pip install -e tools`), so this file
stays at tools/hotsvc_tools/paths.py in the checkout and REPO is the checkout's root.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The real Claude Code CLI that `make setup-dev` installs (npm ci, pinned in package.json).
PROJECT_CLAUDE = REPO / "node_modules" / ".bin" / "claude"
