"""RFC 8785 canonical JSON: the published examples, the escaping and ordering rules one by one, the I-JSON
limits, and properties that must hold for any value."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import AuditError, CanonicalisationError, canonical_json

MAX_SAFE = 2**53 - 1

# RFC 8785 §3.2.2, the input exactly as published (JSON text with escapes).
RFC_8785_3_2_2_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""

# RFC 8785 §3.2.3, the input exactly as published, and the order the RFC lists for its members.
RFC_8785_3_2_3_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
RFC_8785_3_2_3_ORDER = [
    "Carriage Return",
    "One",
    "Control",
    "Latin Small Letter O With Diaeresis",
    "Euro Sign",
    "Emoji: Grinning Face",
    "Hebrew Letter Dalet With Dagesh",
]


def test_rfc_8785_section_3_2_2_example_without_its_numbers() -> None:
    # The RFC's expected output less its "numbers" member: those are floats, which this profile refuses.
    value = json.loads(RFC_8785_3_2_2_INPUT)
    del value["numbers"]
    expected = r"""{"literals":[null,true,false],"string":"€$\u000f\nA'B\"\\\\\"/"}"""
    assert canonical_json(value) == expected.encode("utf-8")


def test_rfc_8785_section_3_2_2_example_with_its_floats_is_refused() -> None:
    with pytest.raises(CanonicalisationError, match="floats"):
        canonical_json(json.loads(RFC_8785_3_2_2_INPUT))


def test_rfc_8785_section_3_2_3_sorts_members_by_utf16_code_units() -> None:
    canonical = canonical_json(json.loads(RFC_8785_3_2_3_INPUT)).decode("utf-8")
    assert [member.split('":"')[1].rstrip('"}') for member in canonical.split(",")] == RFC_8785_3_2_3_ORDER
    # The discriminating pair: U+1F600 is D83D DE00 in UTF-16 and so precedes U+FB33, though its code point is
    # larger; Python's own string order would put it last.
    assert canonical == (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","ö":"Latin Small Letter O With Diaeresis",'
        '"€":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )


def test_jcs_reference_implementation_weird_vector() -> None:
    # testdata/input/weird.json and its expected output bytes from the RFC authors' reference implementation
    # (github.com/cyberphone/json-canonicalization); no numbers in it. It adds "\n", "</script>" and DEL.
    text = r"""{
      "\u20ac": "Euro Sign", "\r": "Carriage Return", "\u000a": "Newline", "1": "One",
      "\u0080": "Control\u007f", "\ud83d\ude02": "Smiley", "\u00f6": "Latin Small Letter O With Diaeresis",
      "\ufb33": "Hebrew Letter Dalet With Dagesh", "</script>": "Browser Challenge"
    }"""
    expected = bytes.fromhex(
        "7b225c6e223a224e65776c696e65222c225c72223a2243617272696167652052657475726e222c2231223a224f6e6522"
        "2c223c2f7363726970743e223a2242726f77736572204368616c6c656e6765222c22c280223a22436f6e74726f6c7f22"
        "2c22c3b6223a224c6174696e20536d616c6c204c6574746572204f205769746820446961657265736973222c22e282ac"
        "223a224575726f205369676e222c22f09f9882223a22536d696c6579222c22efacb3223a22486562726577204c657474"
        "65722044616c6574205769746820446167657368227d"
    )
    assert canonical_json(json.loads(text)) == expected


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\b", "\\b"),
        ("\t", "\\t"),
        ("\n", "\\n"),
        ("\f", "\\f"),
        ("\r", "\\r"),
        ('"', '\\"'),
        ("\\", "\\\\"),
        ("\x00", "\\u0000"),
        ("\x0b", "\\u000b"),
        ("\x1f", "\\u001f"),
        ("\x1b", "\\u001b"),
    ],
)
def test_strings_use_the_mandatory_escapes_only(char: str, escaped: str) -> None:
    assert canonical_json(char) == f'"{escaped}"'.encode()


def test_every_control_character_is_escaped_with_lowercase_hex() -> None:
    short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
    for code in range(0x20):
        escaped = short.get(code) or f"\\u{code:04x}"
        assert canonical_json(chr(code)) == f'"{escaped}"'.encode()


@pytest.mark.parametrize("text", ["/", "\x7f", "é", "€", "\u2028", "\U0001f600", "'", "<>&"])
def test_other_characters_are_written_as_themselves_in_utf8(text: str) -> None:
    assert canonical_json(text) == b'"' + text.encode("utf-8") + b'"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"null"),
        (True, b"true"),
        (False, b"false"),
        (0, b"0"),
        (-0, b"0"),
        (-1, b"-1"),
        (MAX_SAFE, b"9007199254740991"),
        (-MAX_SAFE, b"-9007199254740991"),
        ("", b'""'),
        ([], b"[]"),
        ({}, b"{}"),
        ((1, "a", None), b'[1,"a",null]'),
        ({"b": [True, False], "a": 1}, b'{"a":1,"b":[true,false]}'),
        ({"z": {"y": 1, "x": [{"b": 2, "a": 3}]}}, b'{"z":{"x":[{"a":3,"b":2}],"y":1}}'),
        ({"a": 1, "A": 2, "_": 3, "1": 4, "aa": 5, "": 6}, b'{"":6,"1":4,"A":2,"_":3,"a":1,"aa":5}'),
    ],
)
def test_values_serialise_without_insignificant_whitespace(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_names_above_u_ffff_sort_before_names_in_u_e000_to_u_ffff() -> None:
    value = {"\uffff": 1, "\U00010000": 2, "\ue000": 3, "z": 4, "ö": 5}
    assert canonical_json(value) == '{"z":4,"ö":5,"\U00010000":2,"\ue000":3,"\uffff":1}'.encode()


def test_booleans_are_literals_not_integers() -> None:
    assert canonical_json([True, 1, False, 0]) == b"[true,1,false,0]"


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        0.5,
        float("nan"),
        float("inf"),
        [1, 2.5],
        {"a": {"b": -0.0}},
        MAX_SAFE + 1,
        -MAX_SAFE - 1,
        2**64,
        {1: "a"},
        {("a",): 1},
        {"a": 1, 2: "b"},
        {1, 2},
        b"bytes",
        Decimal("1"),
        object(),
        "\ud800",
        {"\udfff": 1},
        {"\U0001f600\ud800": 1},
    ],
    ids=repr,
)
def test_values_outside_the_profile_are_refused(value: object) -> None:
    with pytest.raises(CanonicalisationError):
        canonical_json(value)


def test_canonicalisation_error_is_an_audit_error() -> None:
    assert issubclass(CanonicalisationError, AuditError)


def test_deep_or_cyclic_nesting_is_an_error_not_a_crash() -> None:
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(CanonicalisationError, match="nested"):
        canonical_json(deep)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(CanonicalisationError, match="nested"):
        canonical_json(cyclic)
    cyclic_object: dict[str, Any] = {}
    cyclic_object["self"] = cyclic_object
    with pytest.raises(CanonicalisationError, match="nested"):
        canonical_json(cyclic_object)
    shallow: Any = "leaf"
    for _ in range(64):
        shallow = {"a": shallow}
    assert canonical_json(shallow).startswith(b'{"a":{"a":')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-MAX_SAFE, max_value=MAX_SAFE) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=25,
)


@given(json_values)
def test_canonical_bytes_parse_back_to_the_same_value(value: object) -> None:
    assert json.loads(canonical_json(value)) == value


@given(json_values)
def test_canonicalising_is_idempotent(value: object) -> None:
    once = canonical_json(value)
    assert canonical_json(json.loads(once)) == once


@given(json_values)
def test_agrees_with_an_independent_oracle(value: object) -> None:
    # The standard library's encoder with ensure_ascii=False escapes exactly RFC 8785's set, in lowercase;
    # members are pre-sorted by UTF-16 code units because its sort_keys uses code points.
    def sort(item: object) -> object:
        if isinstance(item, dict):
            return {k: sort(item[k]) for k in sorted(item, key=lambda k: k.encode("utf-16-be"))}
        if isinstance(item, list):
            return [sort(i) for i in item]
        return item

    oracle = json.dumps(sort(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert canonical_json(value) == oracle.encode("utf-8")
