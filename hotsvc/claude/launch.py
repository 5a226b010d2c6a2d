"""How a Claude Code process is started: its command line and its environment."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from hotsvc.claude.transcripts import config_dir, transcript_path
from hotsvc.profiles import ConfigError, Profile
from hotsvc.settings import ServiceConfig

# The stream-json session every process runs; partial messages give token deltas.
BASE_ARGS = (
    "-p",
    "--input-format", "stream-json",
    "--output-format", "stream-json",
    "--verbose",
    "--include-partial-messages",
    # Transcript entries on stdout before the result: written by then, on every version.
    "--session-mirror",
    # Our user messages echoed back: a turn's events begin with its own message's echo.
    "--replay-user-messages",
)  # fmt: skip

# Children die with the service even when it is SIGKILLed: the kernel's parent-death
# signal, set by util-linux's setpriv right before it execs the CLI (same pid), so no
# preexec_fn runs in a forked copy of this multi-threaded process.
_SETPRIV = shutil.which("setpriv")
PARENT_DEATH_SIGNAL: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()


# Claude Code deletes transcripts older than this many days (its cleanupPeriodDays) once
# a day; "never" is a number past any service's life (0 is outside its schema).
NEVER_DAYS = 99999


def argv(
    config: ServiceConfig, profile: Profile, session_id: str, resume: bool, fork_of: str = ""
) -> list[str]:
    """The full command line of a session's process.

    `--resume` restores the transcript under the same id; a session with no turn yet has
    no transcript, and starts afresh under its id. A fork resumes its source's transcript
    under its own id (`--fork-session --session-id`, both CLI versions): the CLI reads the
    history at start-up and writes the fork's own transcript on its first turn.
    """
    if fork_of:
        session = ["--resume", fork_of, "--fork-session", "--session-id", session_id]
    else:
        session = ["--resume" if resume else "--session-id", session_id]
    return [
        *PARENT_DEATH_SIGNAL,
        *config.claude_cmd,
        *BASE_ARGS,
        *session,
        "--settings",
        json.dumps(cli_settings(config, profile)),
        *profile.cli_args(),
    ]


def cli_settings(config: ServiceConfig, profile: Profile) -> dict[str, object]:
    """Claude Code settings every child gets. Each must carry the cleanup period: any child
    without it deletes every old transcript in the config dir, once a day. A sandboxed
    profile must not fall back to running commands unsandboxed: failIfUnavailable."""
    settings: dict[str, object] = {
        "cleanupPeriodDays": config.transcript_retention_days or NEVER_DAYS
    }
    if profile.sandbox:
        settings["sandbox"] = {"enabled": True, "failIfUnavailable": True}
    return settings


def environment(
    service_env: Mapping[str, str], profile: Profile, tmpdir: Path | None = None
) -> dict[str, str]:
    """The service's environment, then the service-wide extras, then the profile's; and
    the child's own TMPDIR (hotsvc.tmpdirs), which none of those can move."""
    env = {**os.environ, **service_env, **profile.env}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def transcript_of(config: ServiceConfig, profile: Profile, session_id: str, cwd: str = "") -> Path:
    """Where a child of this profile keeps session `session_id`'s transcript."""
    env = environment(config.env, profile)
    return transcript_path(env, cwd or profile.cwd or os.getcwd(), session_id)


def session_files(config: ServiceConfig, profile: Profile, session_id: str, cwd: str) -> list[Path]:
    """What the CLI keeps of one session under its config directory: the transcript, the
    folder beside it (subagents' transcripts, large tool results) and its session-env."""
    transcript = transcript_of(config, profile, session_id, cwd)
    env = environment(config.env, profile)
    cli_dir = config_dir(env, os.path.realpath(cwd))
    return [transcript, transcript.with_suffix(""), cli_dir / "session-env" / session_id]


def remove(path: Path) -> None:
    """Remove a file or a folder tree; one already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def check_sandbox(profiles: Iterable[Profile]) -> None:
    """A sandboxed profile needs bubblewrap and socat: refuse to start without them rather
    than have the CLI refuse every session."""
    sandboxed = sorted(p.name for p in profiles if p.sandbox)
    missing = [tool for tool in ("bwrap", "socat") if not shutil.which(tool)]
    if sandboxed and missing:
        raise ConfigError(
            f"profiles {', '.join(sandboxed)} run tools in Claude Code's sandbox, which needs "
            f"{' and '.join(missing)}: install them (Debian/Ubuntu: apt-get install "
            "bubblewrap socat) or turn the sandbox off"
        )
