"""The token file's format, read the way the service reads it (hotsvc.auth.tokens)."""

from __future__ import annotations

import hashlib

import pytest

from hotsvc.auth.tokens import TokenFileError, parse
from hotsvc.principal import Principal


def line(principal: str, token: str, extra: str = "") -> str:
    return f"{principal} {hashlib.sha256(token.encode()).hexdigest()}{extra}"


def test_comments_blank_lines_admins_and_several_tokens_per_principal() -> None:
    table = parse(
        "\n".join(
            [
                "# team tokens",
                "",
                line("alice", "a1"),
                "   " + line("alice", "a2") + "   ",
                line("ops", "o1", " admin"),
                line("bob", "b1").upper().replace("BOB", "bob"),  # hex in capitals
            ]
        ),
        "tokens",
    )
    assert table.lookup("a1") == table.lookup("a2") == Principal("alice")
    assert table.lookup("o1") == Principal("ops", admin=True)
    assert table.lookup("b1") == Principal("bob")
    assert table.lookup("a3") is None
    assert table.principals == 3


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("alice", "line 1: expected `PRINCIPAL SHA256HEX [admin]`, got 1 fields"),
        (line("alice", "a", " root"), "expected `PRINCIPAL SHA256HEX [admin]`"),
        ("alice s3cret-token", "never the token itself"),
        ("# ok\n" + line("a", "x") + "\n" + line("b", "x"), "line 3: this token's digest"),
    ],
)
def test_a_bad_line_is_named(text: str, complaint: str) -> None:
    with pytest.raises(TokenFileError) as failed:
        parse(text, "tokens")
    assert complaint in str(failed.value)
    assert "s3cret-token" not in str(failed.value)
