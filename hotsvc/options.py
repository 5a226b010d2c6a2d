"""Per-session Claude Code options a caller chooses at open, within what its profile allows.

A profile names the options callers may set (`caller_may_set`); anything else is refused
with PERMISSION_DENIED. The options become the session's *effective profile*: the
profile with the caller's model, permission mode and turn limit in place of its own, the
caller's tools added to its allowed and disallowed lists (a caller can narrow what the
profile disallows, never widen it) and the caller's system prompt text after the
profile's. The session keeps its options in the store, so a resumed process gets them
too; a warm process serves only a session whose effective profile matches its own.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from hotsvc.errors import InvalidRequest, PermissionDenied
from hotsvc.profiles import PERMISSION_MODES, Profile

# "manual" is 2.1.330's name for "default": the same rank.
_RANK = {mode: index for index, mode in enumerate(PERMISSION_MODES)}
_RANK["manual"] = _RANK["default"]


@dataclass(frozen=True)
class SessionOptions:
    """The proto's SessionOptions as a value; empty fields leave the profile's."""

    model: str = ""
    append_system_prompt: str = ""
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    max_turns: int = 0
    permission_mode: str = ""

    def names(self) -> list[str]:
        """The options set, by their `caller_may_set` names."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]

    def to_json(self) -> str:
        """The store's form: only the fields set, "" when none."""
        values = {name: getattr(self, name) for name in self.names()}
        return json.dumps(values, sort_keys=True) if values else ""

    @classmethod
    def from_json(cls, text: str) -> SessionOptions:
        if not text:
            return cls()
        values = json.loads(text)
        for name in ("allowed_tools", "disallowed_tools"):
            if name in values:
                values[name] = tuple(values[name])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def check(options: SessionOptions, profile: Profile) -> None:
    """PERMISSION_DENIED for an option the profile does not let callers set, or a
    permission mode above the profile's consent."""
    refused = [name for name in options.names() if name not in profile.caller_may_set]
    if refused:
        allowed = ", ".join(profile.caller_may_set) or "none"
        raise PermissionDenied(
            f"profile {profile.name!r} does not let callers set {', '.join(refused)} "
            f"(its caller_may_set: {allowed}); leave them unset or use a profile that allows "
            "them",
            metadata={"profile": profile.name, "options": ",".join(refused), "allowed": allowed},
        )
    if options.permission_mode:
        check_permission_mode(options.permission_mode, profile, "options.permission_mode")


def check_permission_mode(mode: str, profile: Profile, field: str) -> None:
    """A mode the caller may switch to: known, and no more permissive than the profile's
    `max_permission_mode` (its own mode when unset)."""
    if mode not in _RANK:
        raise InvalidRequest(
            f"{field} {mode!r} is not a Claude Code permission mode; use one of "
            + ", ".join(PERMISSION_MODES),
            field=field,
            metadata={"mode": mode[:64]},
        )
    ceiling = max_permission_mode(profile)
    if _RANK[mode] > _RANK[ceiling]:
        raise PermissionDenied(
            f"profile {profile.name!r} lets callers choose permission modes up to "
            f"{ceiling!r}, not {mode!r}; an operator consents to more with the profile's "
            "max_permission_mode",
            metadata={"profile": profile.name, "mode": mode, "maxPermissionMode": ceiling},
        )


def max_permission_mode(profile: Profile) -> str:
    return profile.max_permission_mode or profile.permission_mode or "default"


def effective(profile: Profile, options: SessionOptions) -> Profile:
    """The profile a session with these options runs with (its name unchanged)."""
    if not options.names():
        return profile
    prompt = "\n\n".join(
        p for p in (profile.append_system_prompt, options.append_system_prompt) if p
    )
    return dataclasses.replace(
        profile,
        model=options.model or profile.model,
        append_system_prompt=prompt,
        allowed_tools=_union(profile.allowed_tools, options.allowed_tools),
        disallowed_tools=_union(profile.disallowed_tools, options.disallowed_tools),
        max_turns=options.max_turns or profile.max_turns,
        permission_mode=options.permission_mode or profile.permission_mode,
    )


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))
