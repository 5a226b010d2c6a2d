"""Flags, HOTSVC_* variables and the README's table, generated from the settings' fields.

`hotsvc serve --help`, the environment and the configuration table in README.md
(`make docs`) all come from `ServiceConfig` and `Profile` fields made with `setting(...)`,
so they cannot disagree.
"""

from __future__ import annotations

import argparse
import shlex
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, replace
from pathlib import Path
from typing import Any

from hotsvc.profiles import DEFAULT_PROFILE, ConfigError, Profile, Spec, load_profiles, specs
from hotsvc.settings import ENV_PREFIX, STORE_SCHEMES, ServiceConfig

GROUPS = ("service", "security", "session lifecycle", "default profile")


def all_specs() -> Iterator[tuple[Field[Any], Spec, Any]]:
    both = [*specs(ServiceConfig), *specs(Profile)]
    yield from sorted(both, key=lambda item: GROUPS.index(item[1].group))


def flag_of(f: Field[Any], spec: Spec) -> str:
    return spec.flag or "--" + f.name.replace("_", "-")


def env_of(f: Field[Any], spec: Spec) -> str:
    return ENV_PREFIX + flag_of(f, spec).removeprefix("--").replace("-", "_").upper()


def _converter(kind: Any, f: Field[Any], spec: Spec) -> Callable[[str], Any]:
    if spec.repeat or f.name == "claude_cmd":
        return lambda text: tuple(shlex.split(text))
    if kind is bool:
        return lambda text: text.strip().lower() in ("1", "true", "yes", "on")
    if kind in (int, float, str):
        return typing.cast(Callable[[str], Any], kind)
    if kind == (Path | None):
        return lambda text: Path(text) if text else None
    if kind == tuple[str, ...]:
        return lambda text: tuple(t.strip() for t in text.split(",") if t.strip())
    raise TypeError(f"no converter for {f.name}: {kind}")


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    assert f.default_factory is not MISSING
    return f.default_factory()


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """One flag per setting; its HOTSVC_* variable, when set, is the default."""
    groups: dict[str, Any] = {"service": parser}
    for f, spec, kind in all_specs():
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        convert = _converter(kind, f, spec)
        default = _default(f)
        env = env_of(f, spec)
        if raw := environ.get(env):
            try:
                default = convert(raw)
            except ValueError:
                raise ConfigError(f"{env}={raw!r} is not a valid {kind.__name__}") from None
        help_text = f"{spec.help} (env {env})".replace("%", "%%")
        options: dict[str, Any] = {"dest": f.name, "help": help_text, "default": default}
        if spec.repeat:
            options.update(action="append", default=list(default))
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction)
        else:
            options.update(type=convert)
        if spec.choices:
            options["choices"] = spec.choices
        groups[spec.group].add_argument(flag_of(f, spec), **options)


def from_args(args: argparse.Namespace) -> ServiceConfig:
    """The configuration the parsed flags describe, validated; raises ConfigError."""
    values = vars(args)
    for f, spec, _ in all_specs():
        _check(flag_of(f, spec), spec, values[f.name])
    profile_values = {f.name: values[f.name] for f, _, _ in specs(Profile)}
    profile_values["extra_args"] = tuple(profile_values["extra_args"])
    default = Profile(**profile_values)
    service = {f.name: values[f.name] for f, _, _ in specs(ServiceConfig)}
    if service["store"] and not service["store"].startswith(STORE_SCHEMES):
        raise ConfigError(
            f"--store {clip_url(service['store'])!r} is not a store URL; use sqlite:PATH or "
            "postgresql://USER@HOST/DATABASE"
        )
    if not service["claude_cmd"]:
        raise ConfigError("--claude-cmd is empty; give the Claude Code command, e.g. 'claude'")
    config = ServiceConfig(**service)
    _check_pairs(config)
    profiles = (
        load_profiles(config.config, default) if config.config else {DEFAULT_PROFILE: default}
    )
    return replace(config, profiles=profiles)


def clip_url(url: str) -> str:
    """A URL's scheme only: the rest may hold a password."""
    return url.split(":", 1)[0][:20] + ":..."


def _check_pairs(config: ServiceConfig) -> None:
    """Flags that only make sense together."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError("--tls-client-ca needs TLS: give --tls-cert and --tls-key too")


def _check(name: str, spec: Spec, value: Any) -> None:
    if value is None:  # not given: a default chosen at start
        return
    if spec.choices and value and value not in spec.choices:  # from the environment
        raise ConfigError(f"{name} must be one of {', '.join(spec.choices)}, not {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{name} must be >= {spec.minimum:g}, not {value}")
    if spec.above is not None and value <= spec.above:
        raise ConfigError(f"{name} must be > {spec.above:g}, not {value}")


# -- documentation --------------------------------------------------------------------


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| flag | env | default | meaning |", "| --- | --- | --- | --- |"]
    for f, spec, _ in all_specs():
        default = spec.shown_default or _shown(_default(f))
        rows.append(f"| `{flag_of(f, spec)}` | `{env_of(f, spec)}` | {default} | {spec.help} |")
    return "\n".join(rows)


def _shown(value: Any) -> str:
    if value in ("", (), None):
        return "none"
    if isinstance(value, tuple):
        value = ",".join(value)
    return f"`{value}`"
