"""The `Idempotency-Key` field value (draft-ietf-httpapi-idempotency-key-header-07 §2.1: an RFC 9651 sf-string),
parsed by broker/http/api/idempotency.py, with the documented leniency for an unquoted key."""

from __future__ import annotations

import pytest

from broker.domain.errors import InvalidIdempotencyKeyError
from broker.http.api.idempotency import MAX_KEY_LENGTH, parse_idempotency_key

UUID = "8e03978e-40d5-43e8-bc93-6894a57f9324"


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (f'"{UUID}"', UUID),
        (f'  "{UUID}"  ', UUID),  # RFC 9651 §4.2: surrounding spaces are dropped
        (r'"say \"hi\" \\ bye"', r'say "hi" \ bye'),  # §3.3.3 escapes
        ('" spaces inside "', " spaces inside "),
        ('"a"' + ';a=1;b=-2.5;c="x";d=?0;e=:aGk=:;f=tok/en:x;g=@1700000000;h;i=%"%c3%a9"', "a"),  # ignored
        ('"a";   spaced=1', "a"),  # §3.1.2: spaces may follow the semicolon
        (UUID, UUID),  # the leniency: an unquoted key, the same as its quoted form
        ("Zm9v+YmFy/==", "Zm9v+YmFy/=="),
        ('"' + "k" * MAX_KEY_LENGTH + '"', "k" * MAX_KEY_LENGTH),
        ('"' + "\\\\" * MAX_KEY_LENGTH + '"', "\\" * MAX_KEY_LENGTH),  # the length counts the key, not its escapes
    ],
    ids=[
        "uuid",
        "surrounding spaces",
        "escapes",
        "inner spaces",
        "parameters",
        "spaced parameter",
        "unquoted",
        "unquoted base64",
        "longest",
        "longest escaped",
    ],
)
def test_a_key_is_read_from_an_sf_string(value: str, key: str) -> None:
    assert parse_idempotency_key(value) == key


@pytest.mark.parametrize(
    "value",
    [
        "",
        '""',
        '"unterminated',
        'unopened"',
        '"one", "two"',
        "one,two",
        "two words",
        '"tab\tinside"',
        '"new\nline"',
        '"bad \\escape"',
        '"é"',
        "é",
        '"a";Upper=1',
        '"a";a=',
        '"a" ;a=1',
        '"a";a=1 trailing',
        '"a"b',
        "semi;colon",
        '"' + "k" * (MAX_KEY_LENGTH + 1) + '"',
        "k" * (MAX_KEY_LENGTH + 1),
        '"' + "k" * 5000 + '"',
    ],
    ids=[
        "empty field",
        "empty string",
        "unterminated",
        "unopened",
        "two keys",
        "two unquoted keys",
        "unquoted space",
        "tab",
        "newline",
        "bad escape",
        "non-ascii",
        "unquoted non-ascii",
        "uppercase parameter",
        "parameter without value",
        "space before parameter",
        "trailing text",
        "text after string",
        "unquoted semicolon",
        "too long",
        "unquoted too long",
        "far too long",
    ],
)
def test_anything_else_is_refused_without_repeating_it(value: str) -> None:
    with pytest.raises(InvalidIdempotencyKeyError) as refused:
        parse_idempotency_key(value)
    error = refused.value
    assert error.status == 400 and error.code == "invalid_idempotency_key" and error.field == "Idempotency-Key"
    for part in ("unterminated", "two words", "é", "k" * 20, "trailing"):
        assert part not in value or part not in error.detail
