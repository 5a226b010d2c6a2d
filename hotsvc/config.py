"""Service settings and profiles (named sets of Claude Code options) from flags, env and TOML."""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "default"
# The stream-json session every process runs; partial messages give token deltas.
BASE_ARGS = (
    "-p",
    "--input-format", "stream-json",
    "--output-format", "stream-json",
    "--verbose",
    "--include-partial-messages",
)


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Profile:
    """Claude Code options for the sessions opened with this profile, and their warm pool."""

    name: str
    pool_size: int
    model: str = ""
    system_prompt: str = ""
    append_system_prompt: str = ""
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    permission_mode: str = ""
    cwd: str = ""
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def cli_args(self) -> list[str]:
        """The flags this profile adds to BASE_ARGS."""
        args: list[str] = []
        for flag, value in (
            ("--model", self.model),
            ("--system-prompt", self.system_prompt),
            ("--append-system-prompt", self.append_system_prompt),
            ("--permission-mode", self.permission_mode),
        ):
            if value:
                args += [flag, value]
        if self.allowed_tools:
            args += ["--allowedTools", ",".join(self.allowed_tools)]
        if self.disallowed_tools:
            args += ["--disallowedTools", ",".join(self.disallowed_tools)]
        return args + list(self.extra_args)


@dataclass(frozen=True)
class ServiceConfig:
    listen: str = "127.0.0.1:50051"
    claude_cmd: tuple[str, ...] = ("claude",)
    max_sessions: int = 0  # live processes, warm ones included; 0 = no cap
    max_concurrent_spawns: int = 2
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    line_limit: int = 64 * 1024 * 1024  # stdout lines carry base64 images
    max_turn_chars: int = 1024 * 1024
    ready_timeout: float = 60.0  # a warm process must answer `initialize` within this
    shutdown_grace: float = 10.0
    env: Mapping[str, str] = field(default_factory=dict)  # extra env for every child
    data_dir: Path | None = None  # the session registry; None keeps it in memory
    idle_timeout: float = 0.0  # end an unattached idle session's process after this; 0 = never
    # Replace a session's process between turns (by resume) past any of these; 0 = never.
    recycle_after_turns: int = 0
    recycle_after_seconds: float = 0.0
    recycle_above_rss_mb: int = 0
    turn_inactivity_timeout: float = 600.0  # no output this long mid-turn: interrupt, kill
    heartbeat_interval: float = 30.0  # under nginx's 60 s grpc_read_timeout
    interrupt_on_disconnect: bool = True  # else a turn whose caller left runs to its end

    def profile(self, name: str) -> Profile | None:
        return self.profiles.get(name or DEFAULT_PROFILE)


_PROFILE_KEYS = {f.name for f in fields(Profile)} - {"name"}


def parse_claude_cmd(command: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(command))
    if not argv:
        raise ConfigError("--claude-cmd is empty; give the Claude Code command, e.g. 'claude'")
    return argv


def load_profiles(path: Path, default: Profile) -> dict[str, Profile]:
    """Read `[profiles.NAME]` tables; each inherits nothing but the pool size default."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    unknown_sections = set(document) - {"profiles"}
    if unknown_sections:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown_sections)}; "
                          "only [profiles.NAME] tables are read")
    profiles = {DEFAULT_PROFILE: default}
    for name, table in dict(document.get("profiles", {})).items():
        profiles[name] = _profile_from_table(path, name, table, default.pool_size)
    return profiles


def _profile_from_table(path: Path, name: str, table: Any, pool_size: int) -> Profile:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: profiles.{name} must be a table")
    unknown = set(table) - _PROFILE_KEYS
    if unknown:
        raise ConfigError(f"{path}: profiles.{name} has unknown keys {sorted(unknown)}; "
                          f"known keys are {sorted(_PROFILE_KEYS)}")
    values: dict[str, Any] = {"pool_size": pool_size, **table}
    for key in ("allowed_tools", "disallowed_tools", "extra_args"):
        if key in values:
            values[key] = tuple(str(v) for v in values[key])
    if "env" in values:
        values["env"] = {str(k): str(v) for k, v in values["env"].items()}
    if not isinstance(values["pool_size"], int) or values["pool_size"] < 0:
        raise ConfigError(f"{path}: profiles.{name}.pool_size must be a whole number >= 0")
    return Profile(name=name, **values)
