"""ListSessions' filter language and the page tokens of the list RPCs (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hotsvc import paging
from hotsvc.errors import InvalidRequest
from hotsvc.snapshot import SessionState


@dataclass(frozen=True)
class Row:
    state: SessionState
    profile: str
    owner: str


ROWS = [
    Row(SessionState.STOPPED, "review", "alice"),
    Row(SessionState.IDLE, "review", "bob"),
    Row(SessionState.STOPPED, "default", "bob"),
    Row(SessionState.LOST, "my profile", "alice"),
]


def matching(text: str) -> list[Row]:
    condition = paging.parse_filter(text)
    return [row for row in ROWS if condition.matches(row)]


def test_filters_select_by_state_profile_and_owner() -> None:
    assert matching("") == ROWS
    assert matching("state = STOPPED") == [ROWS[0], ROWS[2]]
    assert matching('state = STOPPED AND profile = "review"') == [ROWS[0]]
    assert matching("state=session_state_stopped and owner=bob") == [ROWS[2]]
    assert matching('profile != review AND profile = "my profile"') == [ROWS[3]]
    assert matching('owner = "alice" AND state != LOST') == [ROWS[0]]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colour = red", "unknown field 'colour'; the fields are state, profile, owner"),
        ("state = IDLE OR state = BUSY", "joined by AND, not 'OR'"),
        ("state = sleeping", "state 'sleeping' is not one of IDLE, BUSY, ATTACHED, STOPPED, LOST"),
        ("state", "a condition is FIELD = VALUE or FIELD != VALUE"),
        ("state IDLE x", "'IDLE' is not an operator here"),
        ("profile = =", "profile = needs a value"),
        ('profile = "open', "cannot read it from character 11 on"),
    ],
)
def test_a_bad_filter_names_its_problem(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        paging.parse_filter(text)
    assert refused.value.field == "filter"
    assert says in refused.value.message
    assert "state = STOPPED AND profile" in refused.value.message  # an example to follow


def test_page_sizes() -> None:
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    assert paging.page_size(7) == 7
    assert paging.page_size(10**6) == paging.MAX_PAGE_SIZE
    with pytest.raises(InvalidRequest) as refused:
        paging.page_size(-1)
    assert refused.value.field == "page_size"


def test_tokens_round_trip_and_belong_to_their_request() -> None:
    token = paging.encode_token((12.5, "s-9"), "state = IDLE")
    assert paging.decode_token(token, "state = IDLE") == (12.5, "s-9")
    assert paging.decode_token("", "anything") is None
    offset = paging.encode_offset(40, "session-a")
    assert paging.decode_offset(offset, "session-a") == 40
    assert paging.decode_offset("", "session-a") == 0

    for bad, scope in ((token, "state = BUSY"), (offset, "session-b")):
        with pytest.raises(InvalidRequest, match="made for another request") as other:
            paging.decode_offset(bad, scope) if bad == offset else paging.decode_token(bad, scope)
        assert other.value.field == "page_token"
    for garbage in ("bogus", "e30", offset):  # e30 is base64 of {}; an offset is no key
        with pytest.raises(InvalidRequest, match="not a token this service returned"):
            paging.decode_token(garbage, "session-a")
