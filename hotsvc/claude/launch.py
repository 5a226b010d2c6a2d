"""How a Claude Code process is started: its command line and its environment."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from hotsvc.settings import Profile, ServiceConfig

# The stream-json session every process runs; partial messages give token deltas.
BASE_ARGS = (
    "-p",
    "--input-format", "stream-json",
    "--output-format", "stream-json",
    "--verbose",
    "--include-partial-messages",
    # Transcript entries on stdout before the result: written by then, on every version.
    "--session-mirror",
)  # fmt: skip

# Children die with the service even when it is SIGKILLed: the kernel's parent-death
# signal, set by util-linux's setpriv right before it execs the CLI (same pid), so no
# preexec_fn runs in a forked copy of this multi-threaded process.
_SETPRIV = shutil.which("setpriv")
PARENT_DEATH_SIGNAL: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()


# Claude Code deletes transcripts older than this many days (its cleanupPeriodDays) once
# a day; "never" is a number past any service's life (0 is outside its schema).
NEVER_DAYS = 99999


def argv(config: ServiceConfig, profile: Profile, session_id: str, resume: bool) -> list[str]:
    """The full command line of a session's process.

    `--resume` restores the transcript under the same id; a session with no turn yet has
    no transcript, and starts afresh under its id.
    """
    session = ["--resume" if resume else "--session-id", session_id]
    return [
        *PARENT_DEATH_SIGNAL,
        *config.claude_cmd,
        *BASE_ARGS,
        *session,
        "--settings",
        json.dumps(cli_settings(config)),
        *profile.cli_args(),
    ]


def cli_settings(config: ServiceConfig) -> dict[str, object]:
    """Claude Code settings every child gets. Each must carry the cleanup period: any child
    without it deletes every old transcript in the config dir, once a day."""
    return {"cleanupPeriodDays": config.transcript_retention_days or NEVER_DAYS}


def environment(
    service_env: Mapping[str, str], profile: Profile, tmpdir: Path | None = None
) -> dict[str, str]:
    """The service's environment, then the service-wide extras, then the profile's; and
    the child's own TMPDIR (hotsvc.tmpdirs), which none of those can move."""
    env = {**os.environ, **service_env, **profile.env}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env
