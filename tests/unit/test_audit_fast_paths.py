"""The fast paths of the audit encoding against the code they replaced.

`canonical_json` hands plain values to the standard library's encoder and `encode_pending` / `encode_entry`
search an entry's whole canonical text for identity codes; both must give exactly the bytes, and refuse exactly
the inputs, with the same error, that the earlier implementation did. That implementation is kept below,
unchanged, as the oracle, and generated values aim at where the paths could part: every escape, DEL, U+2028,
lone surrogates, member names that sort differently by UTF-16 code units than by code points (RFC 8785
§3.2.3), integers at and past I-JSON's limits (RFC 7493 §2.2), floats, subclasses, deep nesting, and strings
that hold, or nearly hold, something shaped like an identity code.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import EVENT_TYPES, AuditError, CanonicalisationError, canonical_json, encode_entry, encode_pending
from audit.canonical import canonical_text
from audit.entry import _HETU_LIKE, _HETU_SEPARATOR_FIRST, _entry
from broker.services.audit_log import payload_digest

# --- The oracle: audit/canonical.py and the identity-code check of audit/entry.py before the fast paths ---------

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64
_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20)} | {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_ORACLE_HETU_LIKE = re.compile(r"(?<![0-9A-Za-z])\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]")


def oracle_canonical_json(value: object) -> bytes:
    out: list[str] = []
    try:
        _write(value, out, 0)
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalisationError("strings must be valid Unicode, without lone surrogates (RFC 7493 §2.1)") from None


def _string(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is not None:
        text = text.translate(_ESCAPES)
    return f'"{text}"'


def _member_names(value: dict[Any, Any]) -> list[str]:
    try:
        joined = "".join(value)
    except TypeError:
        raise CanonicalisationError("object member names must be strings") from None
    names = sorted(value)
    if not joined.isascii() and max(joined) > "\uffff":
        names.sort(key=lambda name: name.encode("utf-16-be"))
    return names


def _write(value: object, out: list[str], depth: int) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise CanonicalisationError(f"nested deeper than {MAX_DEPTH} levels (or cyclic)")
        separator = "{"
        for name in _member_names(value):
            out.append(f"{separator}{_string(name)}:")
            separator = ","
            _write(value[name], out, depth + 1)
        out.append("}" if value else "{}")
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalisationError("integers must lie within ±(2**53 - 1) (RFC 7493 §2.2)")
        out.append(int.__repr__(value))
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise CanonicalisationError(f"nested deeper than {MAX_DEPTH} levels (or cyclic)")
        separator = "["
        for item in value:
            out.append(separator)
            separator = ","
            _write(item, out, depth + 1)
        out.append("]" if value else "[]")
    elif isinstance(value, float):
        raise CanonicalisationError("floats are not allowed in audit data; use integers or strings")
    else:
        raise CanonicalisationError(f"cannot canonicalise a value of type {type(value).__name__}")


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for name, item in value.items():
            if isinstance(name, str):
                yield name
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _oracle_entry(**arguments: Any) -> dict[str, Any]:
    # The argument checks of `_entry` are not what changed; its identity-code check, which came last, did.
    entry = _entry(**arguments)
    for name in entry:
        if any(_ORACLE_HETU_LIKE.search(s) for s in _strings(entry[name])):
            raise AuditError(f"{name} contains something that looks like a personal identity code")
    return entry


def oracle_encode_entry(**arguments: Any) -> bytes:
    return oracle_canonical_json(_oracle_entry(**arguments))


def oracle_encode_pending(**arguments: Any) -> tuple[bytes, int]:
    entry = _oracle_entry(index=0, **arguments)
    del entry["index"]
    before = oracle_canonical_json({name: value for name, value in entry.items() if name < "index"})
    after = oracle_canonical_json({name: value for name, value in entry.items() if name > "index"})
    return before[:-1] + b"," + after[1:], len(before)


def outcome(function: Callable[..., object], *args: Any, **kwargs: Any) -> tuple[str, object]:
    """What a call gives: its result, or the type and message of what it raises."""
    try:
        return "returns", function(*args, **kwargs)
    except Exception as error:
        return "raises", (type(error), str(error))


# --- Generated values ------------------------------------------------------------------------------------------

# Characters where the encoders could part: every escape and its neighbours, DEL and C1, the line and paragraph
# separators, lone surrogates, both sides of the UTF-16 / code point disagreement (U+E000-U+FFFF against
# U+10000 and up), and what identity codes are made of (digits, Arabic-Indic digits, separators, check letters).
AWKWARD = (
    [chr(c) for c in range(0x21)]
    + ['"', "\\", "/", "\x7f", "\x80", "\x9f", "\u2028", "\u2029", "\ufeff", "é", "€"]
    + ["\ud800", "\udbff", "\udc00", "\udfff"]
    + ["\ue000", "\uf8ff", "\ufb33", "\uffff", "\U00010000", "\U0001f600", "\U0010ffff"]
    + list("0123456789-+ABFGTUYZ_az")
    + ["\u0661", "\u0663", "\uff11"]
)
CODE_ALPHABET = "0123456789-+ABFGTUYZaz \u0661"
IDENTITY_CODE_LIKE = ["131052-308T", "010101A900X", "311299Y9010", "150855+1234", "١٣١٠٥٢-٣٠٨T", "c0345678-1234"]

awkward_text = st.lists(
    st.sampled_from(AWKWARD) | st.sampled_from(IDENTITY_CODE_LIKE) | st.text(max_size=4) | st.from_regex(r"\d{1,7}"),
    max_size=6,
).map("".join)
plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8) | awkward_text.filter(
    lambda s: not any("\ud800" <= c <= "\udfff" for c in s)
)


class Colour(enum.IntEnum):
    RED = 1


class Shouting(str):
    """A str whose str() is not its own text: the older encoder wrote str() of it where nothing needed escaping."""

    __slots__ = ()

    def __str__(self) -> str:
        return self.upper()


class Items(list[Any]):
    pass


class Lookup(dict[Any, Any]):
    """A dict that answers a look-up with something other than what it holds, which the older encoder wrote."""

    def __getitem__(self, name: Any) -> Any:
        return "looked up"


big_integers = st.sampled_from(
    [MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER - 1, 2**64, -(2**63)]
)
safe_integers = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)

# Values of the types audit entries hold, built only of what the fast path takes.
plain_values = st.recursive(
    st.none() | st.booleans() | safe_integers | plain_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(plain_text.filter(lambda s: s.isascii() or max(s) <= "\uffff"), children, max_size=4)
    ),
    max_leaves=20,
)

# Anything the older code had to answer for: lone surrogates, astral member names, floats, big integers,
# subclasses, member names that are not strings.
any_values = st.recursive(
    st.none()
    | st.booleans()
    | safe_integers
    | big_integers
    | st.floats()
    | awkward_text
    | st.just(Colour.RED)
    | awkward_text.map(Shouting)
    | st.sampled_from([b"bytes", frozenset({1})]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.lists(children, max_size=3).map(Items)
        | st.dictionaries(awkward_text, children, max_size=4)
        | st.dictionaries(awkward_text, children, max_size=3).map(OrderedDict)
        | st.dictionaries(awkward_text, children, max_size=2).map(Lookup)
        | st.dictionaries(awkward_text.map(Shouting), children, max_size=2)
        | st.dictionaries(st.integers() | st.none(), children, min_size=1, max_size=2)
    ),
    max_leaves=20,
)

# --- canonical_json ---------------------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(plain_values)
def test_plain_values_take_the_fast_path_and_give_the_oracles_bytes(value: object) -> None:
    text = canonical_text(value)
    assert text is not None  # else this test would prove nothing about the fast path
    assert outcome(canonical_json, value) == outcome(oracle_canonical_json, value)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(any_values)
def test_any_value_gives_the_oracles_bytes_or_its_error(value: object) -> None:
    assert outcome(canonical_json, value) == outcome(oracle_canonical_json, value)


@given(
    st.dictionaries(st.sampled_from(["\ue000", "\uffff", "\U00010000", "\U0001f600", "z", "ö", "\ufb33"]), st.none())
)
def test_member_names_that_sort_differently_in_utf16_leave_the_fast_path(value: dict[str, None]) -> None:
    by_code_point = sorted(value)
    by_code_unit = sorted(value, key=lambda name: name.encode("utf-16-be"))
    if by_code_point != by_code_unit:
        assert canonical_text(value) is None
    assert canonical_json(value) == oracle_canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [
        "\x7f",
        "\u2028\u2029",
        "\x1f",
        "\x00\x08\x09\x0a\x0b\x0c\x0d\x1b",
        '"\\/',
        "\ud800",
        {"\ud800": 1},
        {"\U0001f600\ud800": 1},
        {"\U0001f600": 1, "\ufb33": 2},
        MAX_SAFE_INTEGER,
        -MAX_SAFE_INTEGER,
        MAX_SAFE_INTEGER + 1,
        -MAX_SAFE_INTEGER - 1,
        1.0,
        float("nan"),
        [1, 2.5],
        Colour.RED,
        Shouting("quiet"),
        Shouting("quiet\n"),
        {Shouting("b"): 1, "a": 2},
        {1: "a"},
        {"a": 1, 2: "b"},
        OrderedDict([("b", 1), ("a", 2)]),
        Items([1, "a"]),
        (True, False, None),
    ],
    ids=repr,
)
def test_each_awkward_case_gives_the_oracles_bytes_or_its_error(value: object) -> None:
    assert outcome(canonical_json, value) == outcome(oracle_canonical_json, value)


def test_every_character_is_written_as_the_oracle_writes_it() -> None:
    # Escaping is character by character (RFC 8785 §3.2.2.2), so one string of every scalar value covers them all,
    # as a value and (those of the BMP: names above it leave the fast path) as a member name; and every BMP
    # character as a member name of its own covers their ordering.
    scalars = "".join(chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF)
    bmp = scalars[: 0x10000 - 0x800]
    for value in (scalars, [scalars], {bmp: scalars}, dict.fromkeys(bmp, 0)):
        assert canonical_text(value) is not None
        assert canonical_json(value) == oracle_canonical_json(value)
    assert canonical_text({scalars: 0}) is None
    assert canonical_json({scalars: 0, bmp: 1}) == oracle_canonical_json({scalars: 0, bmp: 1})
    for surrogate in map(chr, range(0xD800, 0xE000)):
        assert outcome(canonical_json, [surrogate]) == outcome(oracle_canonical_json, [surrogate])


@pytest.mark.parametrize("levels", [62, 63, 64, 65, 66, 200])
@pytest.mark.parametrize("container", ["list", "dict"])
def test_nesting_at_and_past_the_depth_limit_gives_the_oracles_bytes_or_its_error(levels: int, container: str) -> None:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value] if container == "list" else {"a": value}
    assert outcome(canonical_json, value) == outcome(oracle_canonical_json, value)


def test_cyclic_values_give_the_oracles_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    cyclic_object: dict[str, Any] = {}
    cyclic_object["self"] = [cyclic_object]
    for value in (cyclic, cyclic_object):
        assert outcome(canonical_json, value)[0] == "raises"
        assert outcome(canonical_json, value) == outcome(oracle_canonical_json, value)


# --- The identity-code search --------------------------------------------------------------------------------


@settings(max_examples=1000)
@given(
    awkward_text
    | st.text(CODE_ALPHABET, max_size=16)
    # Codes and near misses: each part of the pattern one character short, long or off.
    | st.from_regex(r".?\d{5,7}[-+A-Z_a-z]\d{2,4}[0-9A-Z_a-z]?", fullmatch=True)
)
def test_the_separator_first_pattern_finds_a_code_exactly_where_the_original_does(text: str) -> None:
    assert (_HETU_SEPARATOR_FIRST.search(text) is None) == (_HETU_LIKE.search(text) is None)


def test_the_separator_first_pattern_agrees_on_every_near_miss() -> None:
    # A match depends only on a window of twelve characters (the one before the code and the code's eleven), so
    # every one- and two-character change to a code and its neighbours, from characters on each side of each
    # character class in the pattern, tries each way the two could differ.
    representatives = "09\u0661\uff11-+AFGTUYZaz _/@[`{"
    template = " 131052-308T "
    tried = 0
    for first, second in itertools.combinations_with_replacement(range(len(template)), 2):
        for a, b in itertools.product(representatives, repeat=2):
            text = list(template)
            text[first], text[second] = a, b
            candidate = "".join(text)
            assert (_HETU_SEPARATOR_FIRST.search(candidate) is None) == (_HETU_LIKE.search(candidate) is None), (
                candidate
            )
            tried += 1
    assert tried > 40_000


# --- Entries -------------------------------------------------------------------------------------------------

T0 = datetime(2026, 12, 6, 12, 29, 25, 616599, tzinfo=UTC)
hex_256 = st.binary(min_size=32, max_size=32).map(bytes.hex)
moments = st.sampled_from([T0, T0.astimezone(timezone(timedelta(hours=2))), datetime(1, 1, 1, tzinfo=UTC)]) | (
    st.datetimes(timezones=st.just(UTC))
)
TEXT_MEMBERS = [
    "request_id",
    "partner",
    "organisation",
    "actor_role",
    "person_id",
    "category",
    "purpose",
    "effect",
    "policy_version",
]
# Identifiers like the broker's, which on their own make a valid entry with nothing to refuse: most entries are
# such, so the generated ones start from them and take one or two awkward parts (`awkward_changes`).
ordinary_text = st.from_regex(r"[a-z][a-z0-9_.:-]{0,24}", fullmatch=True)
ordinary_mapping = st.dictionaries(
    ordinary_text, st.none() | st.booleans() | safe_integers | ordinary_text | st.lists(ordinary_text, max_size=3)
)
ordinary_arguments = st.fixed_dictionaries(
    {
        "logged_at": moments,
        "event": st.sampled_from(sorted(EVENT_TYPES)),
        **dict.fromkeys(TEXT_MEMBERS, st.none() | ordinary_text),
        "actor_commitment": st.none() | hex_256,
        "basis": st.none() | ordinary_mapping,
        "record_ids": st.lists(ordinary_text, max_size=4) | st.lists(ordinary_text, max_size=2).map(tuple),
        "fields": st.lists(ordinary_text, max_size=4),
        "payload_sha256": st.none() | hex_256,
        "detail": st.none() | ordinary_mapping,
    }
)
# Text near identity codes without escapes, where the search over the whole canonical text decides.
code_text = (
    st.lists(st.sampled_from(IDENTITY_CODE_LIKE) | ordinary_text | st.text(CODE_ALPHABET, max_size=12), max_size=4)
    .map("".join)
    .filter(bool)
)
awkward_changes = st.lists(
    st.tuples(st.sampled_from(TEXT_MEMBERS), awkward_text.filter(bool) | code_text)
    | st.tuples(st.sampled_from(["basis", "detail"]), st.dictionaries(code_text, code_text, min_size=1, max_size=3))
    | st.tuples(st.sampled_from(["record_ids", "fields"]), st.lists(awkward_text.filter(bool), min_size=1, max_size=3))
    | st.tuples(
        st.sampled_from(["basis", "detail"]), st.dictionaries(awkward_text, any_values, min_size=1, max_size=3)
    ),
    max_size=2,
)
# Malformed arguments, refused before anything is encoded; rarely, so that most entries get as far as encoding.
MALFORMED = [
    ("logged_at", datetime(2025, 1, 1)),
    ("logged_at", "2025-01-01T00:00:00Z"),
    ("event", "disclosure"),
    ("person_id", ""),
    ("purpose", 17),
    ("actor_commitment", "A" * 64),
    ("payload_sha256", "f" * 63),
    ("record_ids", "r-1"),
    ("fields", [""]),
    ("basis", ["consent"]),
    ("detail", "text"),
]
entry_arguments = st.builds(
    lambda arguments, changes, malformed: arguments | dict(changes) | dict(malformed),
    ordinary_arguments,
    awkward_changes,
    st.sampled_from([[]] * 30 + [[change] for change in MALFORMED]),
)


def disclosure_entry(**changes: Any) -> dict[str, Any]:
    """A disclosure entry as the demo's disclosure path builds it (services/disclosures.py `_plan`)."""
    return {
        "logged_at": T0,
        "event": "disclosure:permit",
        "request_id": "8f9e5a50c610720d",
        "partner": "varha-health",
        "organisation": "varha-health",
        "actor_role": "physician",
        "actor_commitment": "e493a6dde118e4afff887a18bb48a272e189bb6d3b0a732ead3fdebbc7060e67",
        "person_id": "per_72fd024a2ea12877458486da8b34b728",
        "category": "work_assessment",
        "purpose": "work_capacity_assessment",
        "effect": "permit",
        "basis": {
            "consent_id": "con_88d0628a0d4a0d2fb415e1115479a797",
            "consent_version": 1,
            "exception_ground": None,
            "kind": "consent",
            "lawful_basis": "GDPR 6(1)(e), 9(2)(h)",
            "reference": "703/2023 53 § 3 mom.",
            "rule": "F7",
        },
        "policy_version": "c7c6260f007d06c1af6509aca366b792c02efef390a4eb7bfae00c890bc0c22c",
        "record_ids": ["rec_ece5ee12fed2bd1185a672fddc146179"],
        "fields": ["assessment_date", "attendance_rate", "client_view", "tasks_tried"],
        "payload_sha256": "accd814273ec64dbd1709ce0bfb4e596a6e674780a3498b634e42f4f10a3c6be",
        "detail": {"disclosure_id": "dis_cd8cd627fc82d29f95adce44a596737e", "withheld": 0},
    } | changes


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(entry_arguments)
def test_encode_pending_gives_the_oracles_bytes_or_its_error(arguments: dict[str, Any]) -> None:
    assert outcome(encode_pending, **arguments) == outcome(oracle_encode_pending, **arguments)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(entry_arguments, st.integers(min_value=0, max_value=2**40) | st.sampled_from([-1, True, "7"]))
def test_encode_entry_gives_the_oracles_bytes_or_its_error(arguments: dict[str, Any], index: object) -> None:
    assert outcome(encode_entry, index=index, **arguments) == outcome(oracle_encode_entry, index=index, **arguments)


@settings(max_examples=500)
@given(
    st.sampled_from(["request_id", "person_id", "purpose", "policy_version"]),
    st.sampled_from(["basis", "detail"]),
    awkward_text,
    awkward_text,
    any_values,
)
def test_a_realistic_disclosure_entry_with_one_awkward_part_gives_the_oracles_bytes_or_its_error(
    text_member: str, mapping_member: str, text: str, name: str, value: object
) -> None:
    arguments = disclosure_entry(**{text_member: text or None, mapping_member: {name: value, "kind": "consent"}})
    assert outcome(encode_pending, **arguments) == outcome(oracle_encode_pending, **arguments)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"detail": {"note": "client 131052-308T called"}},
        {"detail": {"note": "client\n131052-308T called"}},  # an escape right before the code
        {"detail": {"note": "client\\131052-308T"}},
        {"detail": {"note": 'say "131052-308T"'}},
        {"detail": {"note": "x131052-308T"}},  # preceded by a letter: not a code
        {"detail": {"note": "\\u0000131052-308T"}},
        {"detail": {"131052": -308}},  # digits in a name and a number, not a code
        {"detail": {"n": [131052, -3080]}},
        {"detail": {"n": "131052", "m": "-308T"}},  # the two halves in neighbouring strings
        {"detail": {"note": "١٣١٠٥٢-٣٠٨T"}},  # Arabic-Indic digits are digits to \d
        {"detail": {"note": "131052-308T", "ratio": 0.5}},  # a code and a float: the code is refused first
        {"detail": {"note": "131052-308T\ud800"}},  # a code and a lone surrogate: the code first
        {"detail": {"note": "\ud800"}, "purpose": "131052-308T"},
        {"detail": {"note": "\ud800"}, "basis": {"x": 2**60}},  # two refusals: the earlier part's first
        {"basis": {"x": "\ud800"}, "purpose": "\udfff"},
        {"basis": {"x": 0.5}, "purpose": "\udfff"},
        {"basis": {"x": "ok"}, "purpose": "\udfff", "detail": {"r": 1.5}},
        {"record_ids": ["rec_1", "131052-308T"]},
        {"person_id": Shouting("per_1")},
        {"basis": {"\U0001f600": 1, "\ufb33": 2}},
        {"basis": OrderedDict([("rule", "F7"), ("kind", "consent")])},
        {"basis": Lookup(kind="consent")},
        {"detail": {"note": "131052-308Z"}},  # Z is no check character
        {"detail": {"note": "131052G308T"}},  # nor G a century sign
    ],
    ids=repr,
)
def test_each_awkward_entry_gives_the_oracles_bytes_or_its_error(changes: dict[str, Any]) -> None:
    arguments = disclosure_entry(**changes)
    assert outcome(encode_pending, **arguments) == outcome(oracle_encode_pending, **arguments)
    assert outcome(encode_entry, index=5, **arguments) == outcome(oracle_encode_entry, index=5, **arguments)


def test_the_realistic_disclosure_entry_is_encoded_on_the_fast_path() -> None:
    # Both parts plain, no escape, no code: the whole-text search decides, not the string-by-string one.
    entry = _entry(index=0, **disclosure_entry())
    del entry["index"]
    for part in ({k: v for k, v in entry.items() if k < "index"}, {k: v for k, v in entry.items() if k > "index"}):
        text = canonical_text(part)
        assert text is not None
        assert "\\" not in text
        assert _HETU_SEPARATOR_FIRST.search(text) is None


# --- payload_digest ----------------------------------------------------------------------------------------


def oracle_payload_digest(payload: object) -> str:
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


payloads = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | awkward_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(awkward_text, children, max_size=4)
        | st.dictionaries(st.integers() | st.floats() | st.booleans() | st.none(), children, max_size=2)
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_payload_digest_is_the_digest_of_json_dumps_or_its_error(payload: object) -> None:
    assert outcome(payload_digest, payload) == outcome(oracle_payload_digest, payload)


def test_payload_digest_of_a_cyclic_payload_gives_json_dumps_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert outcome(payload_digest, cyclic) == outcome(oracle_payload_digest, cyclic)
    assert outcome(payload_digest, cyclic)[0] == "raises"
