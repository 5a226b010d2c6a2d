"""Nothing of hotsvc's own may lie where a session can read it.

Claude Code reads freely under the directory it runs in (`ls -R`, `grep -r` need no
approval), so a registry, another session's transcript, a token file or the audit log
under a session's working directory is readable by every session there. Start-up refuses
such a layout and names both paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from hotsvc.claude.launch import environment
from hotsvc.profiles import ConfigError, Profile
from hotsvc.settings import ServiceConfig


def session_dirs(config: ServiceConfig) -> Iterator[tuple[str, Path]]:
    """Where each profile's sessions run (the service's own directory when unset)."""
    for profile in config.profiles.values():
        yield f"profile {profile.name!r}", Path(profile.cwd or os.getcwd())


def cli_config_dir(config: ServiceConfig, profile: Profile) -> Path:
    """Where the profile's Claude Code keeps its config and transcripts."""
    env = environment(config.env, profile)
    if configured := env.get("CLAUDE_CONFIG_DIR"):
        return Path(configured)
    return Path(env.get("HOME") or Path.home()) / ".claude"


def private_paths(config: ServiceConfig) -> Iterator[tuple[str, Path]]:
    """hotsvc's own files and directories, each with the flag that moves it."""
    if config.data_dir is not None:
        yield "the data directory (--data-dir)", config.data_dir
    for profile in config.profiles.values():
        yield (
            f"profile {profile.name!r}'s Claude Code config and transcripts "
            "(CLAUDE_CONFIG_DIR, else ~/.claude)",
            cli_config_dir(config, profile),
        )
    for what, path in (
        ("the token file (--auth-tokens)", config.auth_tokens),
        ("the audit log (--audit-log)", config.audit_log),
        ("the TLS private key (--tls-key)", config.tls_key),
    ):
        if path is not None:
            yield what, path


def check_layout(config: ServiceConfig) -> None:
    """Raise ConfigError if any private path lies inside (or is) a session directory."""
    for owner, raw_dir in session_dirs(config):
        session_dir = raw_dir.resolve()
        for what, raw_path in private_paths(config):
            path = raw_path.resolve()
            if path.is_relative_to(session_dir):
                raise ConfigError(
                    f"{what} {path} lies inside {session_dir}, the working directory of "
                    f"{owner}'s sessions, whose Claude Code could read it: move it out, or "
                    "run the sessions elsewhere (--cwd, or the profile's cwd)"
                )
