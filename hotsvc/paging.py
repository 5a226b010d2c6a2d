"""List requests (AIP-132/158/160): page sizes, opaque page tokens, and the `filter`
subset ListSessions takes.

A filter is conditions joined by AND, each `FIELD = VALUE` or `FIELD != VALUE`, over the
fields `state` (IDLE, BUSY, ATTACHED, STOPPED, LOST), `profile` and `owner`; a value is
a bare word or a double-quoted string, e.g. `state = STOPPED AND profile = "review"`.
Anything else is INVALID_ARGUMENT naming what is wrong.

A page token is the base64 of the last item's key (and a digest of the filter it was made
for: AIP-158 asks a token to fail when the other parameters change).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

from hotsvc.errors import InvalidRequest, clip
from hotsvc.snapshot import SessionState

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
FIELDS = ("state", "profile", "owner")
STATES = {state.name: state for state in SessionState}

T = TypeVar("T")
_TOKEN = re.compile(r'\s*(?:(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<op>!=|=)|(?P<word>[^\s"=!]+))')


class Listed(Protocol):
    """What a filter reads of a session."""

    @property
    def state(self) -> SessionState: ...

    @property
    def profile(self) -> str: ...

    @property
    def owner(self) -> str: ...


@dataclass(frozen=True)
class Condition:
    field: str
    equal: bool
    value: str | SessionState

    def matches(self, item: Listed) -> bool:
        found: object = getattr(item, self.field)
        return (found == self.value) == self.equal


@dataclass(frozen=True)
class Filter:
    conditions: tuple[Condition, ...] = ()

    def matches(self, item: Listed) -> bool:
        return all(condition.matches(item) for condition in self.conditions)


def parse_filter(text: str) -> Filter:
    tokens = _tokens(text)
    conditions: list[Condition] = []
    while tokens:
        if conditions:
            joiner = tokens.pop(0)
            if joiner.upper() != "AND":
                _bad(text, f"conditions must be joined by AND, not {clip(joiner, 16)!r}")
        if len(tokens) < 3:
            _bad(text, "a condition is FIELD = VALUE or FIELD != VALUE")
        name, op, value = tokens.pop(0), tokens.pop(0), tokens.pop(0)
        conditions.append(_condition(text, name, op, value))
    return Filter(tuple(conditions))


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None:
            start = len(text) - len(text[position:].lstrip())
            _bad(text, f"cannot read it from character {start + 1} on")
        tokens.append(match.group(match.lastgroup or 0))
        position = match.end()
    return tokens


def _condition(text: str, name: str, op: str, value: str) -> Condition:
    if name not in FIELDS:
        _bad(text, f"unknown field {clip(name, 32)!r}; the fields are {', '.join(FIELDS)}")
    if op not in ("=", "!="):
        _bad(text, f"{clip(op, 16)!r} is not an operator here; use = or !=")
    if value.startswith('"'):
        value = json.loads(value)
    elif value in ("=", "!="):
        _bad(text, f"{name} {op} needs a value")
    if name != "state":
        return Condition(name, op == "=", value)
    state = STATES.get(value.upper().removeprefix("SESSION_STATE_"))
    if state is None:
        _bad(text, f"state {clip(value, 32)!r} is not one of {', '.join(STATES)}")
    return Condition(name, op == "=", state)


def _bad(text: str, problem: str) -> NoReturn:
    raise InvalidRequest(
        f'filter {clip(text)!r}: {problem} (e.g. `state = STOPPED AND profile = "review"`)',
        field="filter",
    )


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidRequest(
            f"page_size is {requested}; send 0 for the default ({DEFAULT_PAGE_SIZE}) or a "
            f"positive number (at most {MAX_PAGE_SIZE} are returned)",
            field="page_size",
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(key: tuple[float, str], scope: str) -> str:
    return _encode([key[0], key[1], _digest(scope)])


def decode_token(token: str, scope: str) -> tuple[float, str] | None:
    """The key after which the page starts; None for the first page."""
    return _decode(token, scope, lambda v: (float(v[0]), str(v[1])), 2)


def encode_offset(offset: int, scope: str) -> str:
    return _encode([offset, _digest(scope)])


def decode_offset(token: str, scope: str) -> int:
    found = _decode(token, scope, lambda v: int(v[0]), 1)
    return 0 if found is None else max(0, found)


def _digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:12]


def _encode(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode(token: str, scope: str, read: Callable[[list[Any]], T], size: int) -> T | None:
    if not token:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(values, list) or len(values) != size + 1:
            raise ValueError("wrong shape")
        if values[-1] != _digest(scope):
            raise InvalidRequest(
                "page_token was made for another request (a different filter or session); "
                "send the same parameters as the request that returned it",
                field="page_token",
            )
        return read(values)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "page_token is not a token this service returned; send the next_page_token of "
            "the previous page as it is, or none for the first page",
            field="page_token",
        ) from None
