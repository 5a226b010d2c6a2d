"""A profile: the Claude Code options of the sessions opened with it, and its warm pool.

The default profile comes from the flags; more come from a TOML file's `[profiles.NAME]`
tables, by field name. `setting(...)` marks a field as set from outside (flag, HOTSVC_*
variable, TOML key); hotsvc.settings generates all of them from these definitions.
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "default"
# Claude Code's permission modes, least permissive first ("manual" is 2.1.330's name for
# "default"); a caller may choose one up to the profile's `max_permission_mode`.
PERMISSION_MODES = (
    "plan",
    "dontAsk",
    "default",
    "manual",
    "acceptEdits",
    "auto",
    "bypassPermissions",
)
# OpenSession.options fields, by the names a profile's `caller_may_set` lists.
CALLER_OPTIONS = (
    "model",
    "append_system_prompt",
    "allowed_tools",
    "disallowed_tools",
    "max_turns",
    "permission_mode",
)
# Control subtypes a profile lets callers relay to Claude Code unless it says otherwise.
DEFAULT_CONTROLS = (
    "set_model",
    "set_permission_mode",
    "get_context_usage",
    "get_settings",
    "mcp_status",
    "set_max_thinking_tokens",
)


# Who answers Claude Code's permission prompts: the caller, or nobody (a deny).
PERMISSION_PROMPTS = ("deny", "caller")


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Spec:
    """How one field is set from outside."""

    help: str
    group: str
    minimum: float | None = None  # values below are refused
    above: float | None = None  # values at or below are refused
    choices: tuple[str, ...] = ()
    repeat: bool = False  # a repeatable flag (tuple fields)
    flag: str = ""  # defaults to --field-name
    shown_default: str = ""  # for the docs, when the default is computed


def setting(default: Any, help: str, *, group: str = "service", **spec: Any) -> Any:
    """A dataclass field that is also a flag and an environment variable."""
    meta = {"spec": Spec(help=help, group=group, **spec)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Profile:
    """Claude Code options for the sessions opened with this profile, and their warm pool.

    A TOML `[profiles.NAME]` table sets these by field name; the flags set them for the
    default profile.
    """

    name: str = DEFAULT_PROFILE
    pool_size: int = setting(
        2,
        "idle warm processes per profile; 0 spawns on demand (the fixed-size shorthand for "
        "pool_min = pool_max)",
        minimum=0,
    )
    pool_min: int = setting(
        -1,
        "the elastic pool's fewest idle warm processes, kept however quiet it is; -1 = pool_size",
        minimum=-1,
    )
    pool_max: int = setting(
        -1,
        "the elastic pool's most idle warm processes: its target follows the new sessions "
        "of the last 10 s up to this many, so a sustained burst is served warm; "
        "-1 = pool_size (no growth)",
        minimum=-1,
    )
    model: str = setting("", "Claude model (`--model`)", group="default profile")
    system_prompt: str = setting(
        "", "replaces Claude Code's system prompt", group="default profile"
    )
    append_system_prompt: str = setting(
        "", "appended to the system prompt", group="default profile"
    )
    permission_mode: str = setting(
        "", "Claude Code's permission mode, e.g. `plan`", group="default profile"
    )
    allowed_tools: tuple[str, ...] = setting(
        (), "tools allowed without asking, comma-separated", group="default profile"
    )
    disallowed_tools: tuple[str, ...] = setting(
        (), "tools never allowed, comma-separated", group="default profile"
    )
    sandbox: bool = setting(
        False,
        "run tool commands in Claude Code's own sandbox (bubblewrap; socat for its "
        "network proxy): writes only in the session's working directory",
        group="default profile",
    )
    cwd: str = setting(
        "",
        "working directory of the sessions when they have no workspace of their own",
        group="default profile",
    )
    workspace_root: str = setting(
        "",
        "each session runs in a new directory of its own under this one (warm processes "
        "get theirs when spawned), kept while the session exists (every resume runs "
        "there), removed by DeleteSession; empty = every session runs in --cwd",
        group="default profile",
    )
    workspace_template: str = setting(
        "",
        "a directory whose contents are copied into each new workspace",
        group="default profile",
    )
    permission_prompts: str = setting(
        "deny",
        "`caller`: a tool use that needs approval is asked of the caller "
        "(`permission_request` event, answered by `permission_decision`); `deny`: refused",
        group="default profile",
        choices=PERMISSION_PROMPTS,
    )
    permission_timeout: float = setting(
        60.0,
        "seconds a permission request waits for the caller's decision; then it is denied "
        "(and logged), and the turn goes on",
        group="default profile",
        above=0,
    )
    caller_may_persist_permissions: bool = setting(
        False,
        "let a caller accept permission suggestions that outlive the session (rules "
        "written to settings files); without it only `session` ones apply",
        group="default profile",
    )
    max_turns: int = setting(
        0,
        "agentic turns per user turn (`--max-turns`); 0 = Claude Code's default",
        group="default profile",
        minimum=0,
    )
    extra_args: tuple[str, ...] = setting(
        (),
        "extra argument for claude (repeatable)",
        group="default profile",
        repeat=True,
        flag="--claude-arg",
    )
    caller_may_set: tuple[str, ...] = setting(
        (),
        "`OpenSession.options` a caller may set, comma-separated: model, "
        "append_system_prompt, allowed_tools, disallowed_tools, max_turns, permission_mode; "
        "none by default (PERMISSION_DENIED)",
        group="default profile",
    )
    controls: tuple[str, ...] = setting(
        DEFAULT_CONTROLS,
        "control subtypes a caller may relay to Claude Code mid-session "
        "(`PromptRequest.control`), comma-separated",
        group="default profile",
    )
    max_permission_mode: str = setting(
        "",
        "the most permissive permission mode a caller may choose (options or "
        "`set_permission_mode`), in the order plan, dontAsk, default, acceptEdits, auto, "
        "bypassPermissions; empty = the profile's own `permission_mode` (else `default`)",
        group="default profile",
    )
    env: Mapping[str, str] = field(default_factory=dict)  # TOML only: extra env

    def __post_init__(self) -> None:
        where = f"profile {self.name!r}"
        if unknown := sorted(set(self.caller_may_set) - set(CALLER_OPTIONS)):
            raise ConfigError(
                f"{where}: caller_may_set names unknown options {unknown}; known: "
                + ", ".join(CALLER_OPTIONS)
            )
        for key in ("permission_mode", "max_permission_mode"):
            if (mode := getattr(self, key)) and mode not in PERMISSION_MODES:
                raise ConfigError(
                    f"{where}: {key} {mode!r} is not one of " + ", ".join(PERMISSION_MODES)
                )
        if self.permission_prompts not in PERMISSION_PROMPTS:
            raise ConfigError(
                f"{where}: permission_prompts {self.permission_prompts!r} is not one of "
                + ", ".join(PERMISSION_PROMPTS)
            )
        if not self.permission_timeout > 0:
            raise ConfigError(f"{where}: permission_timeout must be > 0 seconds")

    def cli_args(self) -> list[str]:
        """The flags this profile adds to Claude Code's base arguments."""
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
        if self.max_turns:
            args += ["--max-turns", str(self.max_turns)]
        if self.permission_prompts == "caller":  # the CLI asks on stdout (can_use_tool)
            args += ["--permission-prompt-tool", "stdio"]
        return args + list(self.extra_args)

    def pool_bounds(self) -> tuple[int, int]:
        """(pool_min, pool_max) with pool_size standing in for an unset one."""
        low = self.pool_size if self.pool_min < 0 else self.pool_min
        high = self.pool_size if self.pool_max < 0 else self.pool_max
        return low, max(low, high)

    def signature(self) -> tuple[object, ...]:
        """What makes two profiles' processes interchangeable: a warm process started for
        one can serve a session of the other (pools are looked up by it)."""
        return (
            tuple(self.cli_args()),
            self.cwd,
            self.workspace_root,
            self.workspace_template,
            tuple(sorted(self.env.items())),
        )


def specs(cls: type) -> Iterator[tuple[Field[Any], Spec, Any]]:
    """The fields of `cls` set from outside, with their Spec and type."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if "spec" in f.metadata:
            yield f, f.metadata["spec"], hints[f.name]


# -- TOML profiles --------------------------------------------------------------------

_PROFILE_KEYS = {f.name for f in fields(Profile)} - {"name"}


def load_profiles(path: Path, default: Profile) -> dict[str, Profile]:
    """Read `[profiles.NAME]` tables; each inherits nothing but the pool size default."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    unknown_sections = set(document) - {"profiles"}
    if unknown_sections:
        raise ConfigError(
            f"{path}: unknown top-level keys {sorted(unknown_sections)}; "
            "only [profiles.NAME] tables are read"
        )
    profiles = {DEFAULT_PROFILE: default}
    for name, table in dict(document.get("profiles", {})).items():
        profiles[name] = _profile_from_table(path, name, table, default.pool_size)
    return profiles


def _profile_from_table(path: Path, name: str, table: Any, pool_size: int) -> Profile:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: profiles.{name} must be a table")
    unknown = set(table) - _PROFILE_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: profiles.{name} has unknown keys {sorted(unknown)}; "
            f"known keys are {sorted(_PROFILE_KEYS)}"
        )
    values: dict[str, Any] = {"pool_size": pool_size, **table}
    hints = typing.get_type_hints(Profile)
    for key, value in values.items():
        if hints[key] == tuple[str, ...]:
            values[key] = tuple(str(v) for v in value)
    if "env" in values:
        values["env"] = {str(k): str(v) for k, v in values["env"].items()}
    for f, spec, _ in specs(Profile):
        if (
            f.name in values
            and spec.minimum is not None
            and (not isinstance(values[f.name], int) or values[f.name] < spec.minimum)
        ):
            raise ConfigError(
                f"{path}: profiles.{name}.{f.name} must be a whole number >= {spec.minimum:g}"
            )
    return Profile(name=name, **values)
