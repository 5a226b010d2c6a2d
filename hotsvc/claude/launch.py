"""How a Claude Code process is started: its command line and its environment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from hotsvc.settings import Profile

# The stream-json session every process runs; partial messages give token deltas.
BASE_ARGS = (
    "-p",
    "--input-format", "stream-json",
    "--output-format", "stream-json",
    "--verbose",
    "--include-partial-messages",
)  # fmt: skip

# Children die with the service even when it is SIGKILLed: the kernel's parent-death
# signal, set by util-linux's setpriv right before it execs the CLI (same pid), so no
# preexec_fn runs in a forked copy of this multi-threaded process.
_SETPRIV = shutil.which("setpriv")
PARENT_DEATH_SIGNAL: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()


def argv(claude_cmd: Sequence[str], profile: Profile, session_id: str, resume: bool) -> list[str]:
    """The full command line of a session's process.

    `--resume` restores the transcript under the same id; a session with no turn yet has
    no transcript, and starts afresh under its id.
    """
    session = ["--resume" if resume else "--session-id", session_id]
    return [*PARENT_DEATH_SIGNAL, *claude_cmd, *BASE_ARGS, *session, *profile.cli_args()]


def environment(service_env: Mapping[str, str], profile: Profile, tmpdir: Path) -> dict[str, str]:
    """The service's environment, then the service-wide extras, then the profile's; and
    the child's own TMPDIR (hotsvc.tmpdirs), which none of those can move."""
    return {**os.environ, **service_env, **profile.env, "TMPDIR": str(tmpdir)}
