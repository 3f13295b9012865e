"""POST /disclosures reads its body and writes its answer without webargs, marshmallow and `jsonify`
(broker/http/api/disclosure_io.py, views.py). Each shortcut is compared here with what it replaces, on generated
and tabled inputs:
the body read must be the dict `DisclosureRequestSchema().load` gives — or be handed to webargs, which then answers
as before — and the dump and the JSON response must be what `DisclosureSchema().dump` and `jsonify` make of it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, jsonify
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, post_dump, post_load, validate, validates
from werkzeug.exceptions import HTTPException

from broker.http.api import disclosure_io, views
from schemas import api as s

LOAD = s.DisclosureRequestSchema()
DUMP = s.DisclosureSchema()
NUL = "\x00"
# Bounds as schemas/api.py declares them, written out here so that the test does not trust the code it checks.
PERSON_ID, NAME, JUSTIFICATION = (1, 40), (1, 40), (10, 2000)


# --- the body -------------------------------------------------------------------------------------------------------


def texts(bounds: tuple[int, int]) -> st.SearchStrategy[str]:
    """Strings of every length that matters: empty, at and around either bound, and in between; some with U+0000."""
    low, high = bounds
    lengths = st.sampled_from(sorted({0, low - 1, low, low + 1, high - 1, high, high + 1} - {-1})) | st.integers(
        low, high
    )
    alphabet = st.characters(codec="utf-8") | st.sampled_from([NUL, "\ud800", "é", "a"])
    return lengths.flatmap(lambda n: st.text(alphabet, min_size=n, max_size=n))


def good_texts(bounds: tuple[int, int]) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8", exclude_characters=NUL), min_size=bounds[0], max_size=bounds[1])


# Anything else JSON can give where a string or an object belongs.
JUNK: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
NAMES = st.sampled_from(["person_id", "category", "purpose", "exception", "ground", "justification"])
OTHER_NAMES = NAMES | st.text(max_size=12) | st.sampled_from(["person_id\x00", "Person_id", "exception ", ""])


def member(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A member's value: mostly one the schema may take, sometimes a wrong one, sometimes left out (None here)."""
    return st.one_of(value, value, value, JUNK.map(lambda junk: ("junk", junk)), st.just(("absent", None)))


def build(members: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, value in members.items():
        if isinstance(value, tuple):
            if value[0] == "absent":
                continue
            value = value[1]
        body[name] = value
    body.update(extra)
    return body


exceptions = st.builds(
    build,
    st.fixed_dictionaries({"ground": member(texts(NAME)), "justification": member(texts(JUSTIFICATION))}),
    st.dictionaries(OTHER_NAMES, JUNK, max_size=1) | st.just({}),
)
bodies = st.builds(
    build,
    st.fixed_dictionaries(
        {
            "person_id": member(texts(PERSON_ID)),
            "category": member(texts(NAME)),
            "purpose": member(texts(NAME)),
            "exception": st.one_of(st.just(("absent", None)), st.none(), exceptions, JUNK.map(lambda j: ("junk", j))),
        }
    ),
    st.dictionaries(OTHER_NAMES, JUNK, max_size=2) | st.just({}) | st.just({}),
)
valid_bodies = st.builds(
    build,
    st.fixed_dictionaries(
        {"person_id": good_texts(PERSON_ID), "category": good_texts(NAME), "purpose": good_texts(NAME)},
        optional={
            "exception": st.none()
            | st.fixed_dictionaries({"ground": good_texts(NAME), "justification": good_texts(JUSTIFICATION)})
        },
    ),
    st.just({}),
)


def schema_load(data: Any) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = LOAD.load(data)
    except ValidationError:
        return None
    return loaded


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(bodies, bodies, bodies, JUNK))
def test_the_fast_read_takes_exactly_the_bodies_the_schema_takes_and_loads_them_as_it_does(data: Any) -> None:
    loaded = schema_load(data)
    fast = disclosure_io.well_formed_disclosure_request(data)
    # JSON gives nothing the schema takes that the fast read does not (no bytes, no other mappings): both take a
    # body, or neither does and webargs answers with the schema's messages.
    assert (fast is None) == (loaded is None)
    # repr, not ==: the members' order and the types (str, dict, None) must be the same too.
    assert repr(fast) == repr(loaded)


@settings(max_examples=300)
@given(valid_bodies)
def test_every_well_formed_body_is_read_by_the_fast_path(data: dict[str, Any]) -> None:
    fast = disclosure_io.well_formed_disclosure_request(data)
    assert fast is not None
    assert repr(fast) == repr(LOAD.load(data))


P = "per_0123456789abcdef0123456789abcdef"
GOOD = {"person_id": P, "category": "work_assessment", "purpose": "work_capacity_assessment"}
EXCEPTION = {"ground": "vital_interest", "justification": "the person is unconscious and needs care now"}


@pytest.mark.parametrize(
    "data",
    [
        GOOD,
        GOOD | {"exception": None},
        GOOD | {"exception": EXCEPTION},
        GOOD | {"person_id": "p" * 40, "category": "c", "purpose": "x" * 40},
        GOOD | {"exception": {"ground": "g" * 40, "justification": "j" * 10}},
        GOOD | {"exception": {"ground": "g", "justification": "j" * 2000}},
        GOOD | {"person_id": "\ud800é\u2028"},
    ],
)
def test_well_formed_bodies_are_loaded_as_the_schema_loads_them(data: dict[str, Any]) -> None:
    fast = disclosure_io.well_formed_disclosure_request(data)
    assert fast is not None and repr(fast) == repr(LOAD.load(data))


@pytest.mark.parametrize(
    "data",
    [
        {},
        [],
        None,
        "GOOD",
        [GOOD],
        {k: v for k, v in GOOD.items() if k != "purpose"},
        {k: v for k, v in GOOD.items() if k != "purpose"} | {"exception": None},
        GOOD | {"extra": 1},
        GOOD | {"exception": None, "extra": 1},
        GOOD | {"person_id": ""},
        GOOD | {"person_id": "p" * 41},
        GOOD | {"category": "c" * 41},
        GOOD | {"purpose": None},
        GOOD | {"purpose": 7},
        GOOD | {"purpose": ["x"]},
        GOOD | {"person_id": "per\x00"},
        GOOD | {"exception": {}},
        GOOD | {"exception": []},
        GOOD | {"exception": "vital_interest"},
        GOOD | {"exception": EXCEPTION | {"extra": "x"}},
        GOOD | {"exception": {"ground": "vital_interest"}},
        GOOD | {"exception": {"ground": "vital_interest", "justification": "too short"}},
        GOOD | {"exception": {"ground": "vital_interest", "justification": "j" * 2001}},
        GOOD | {"exception": {"ground": "", "justification": "long enough text"}},
        GOOD | {"exception": {"ground": "g\x00", "justification": "long enough text"}},
        GOOD | {"exception": {"ground": "g", "justification": "long enough\x00text"}},
        GOOD | {"exception": {"ground": "g", "justification\x00": "long enough text"}},
        GOOD | {"exception": {"ground": None, "justification": "long enough text"}},
    ],
)
def test_anything_else_is_left_to_the_schema(data: Any) -> None:
    assert disclosure_io.well_formed_disclosure_request(data) is None
    with pytest.raises(ValidationError):
        LOAD.load(data)


# --- the request: media type, decoding, and the hand-over to webargs -------------------------------------------------

app = Flask(__name__)


def outcome(read: Any, data: bytes, content_type: str | None) -> tuple[str, Any]:
    """What reading the body gives in a request with `data`: the dict, or the HTTP error and webargs' messages."""
    with app.test_request_context("/api/v1/disclosures", method="POST", data=data, content_type=content_type):
        try:
            return ("body", repr(read()))
        except HTTPException as error:
            given = dict(getattr(error, "data", {}))
            given["schema"] = type(given.get("schema"))  # an instance of the same schema, not the same instance
            return ("error", (error.code, given))


def by_webargs() -> Any:
    """What `blp.arguments(DisclosureRequestSchema())` does with the request (flask-smorest calls `use_args`, which
    calls this)."""
    return views.blp.ARGUMENTS_PARSER.parse(s.DisclosureRequestSchema(), location="json")


RAW = json.dumps(GOOD).encode()
REQUESTS = [
    (RAW, "application/json"),
    (RAW, "application/json; charset=utf-8"),
    (RAW, "Application/JSON"),
    (json.dumps(GOOD | {"exception": EXCEPTION}, ensure_ascii=False).encode(), "application/json"),
    (json.dumps(GOOD | {"person_id": "per\x00"}).encode(), "application/json"),
    (json.dumps(GOOD | {"extra": None}).encode(), "application/json"),
    (b'{"person_id": "a", "person_id": "b", "category": "c", "purpose": "p"}', "application/json"),  # the last wins
    (RAW, "application/merge-patch+json"),  # JSON too, for webargs
    (RAW, "text/plain"),
    (RAW, None),
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"null", "application/json"),
    (b"[]", "application/json"),
    (b'"x"', "application/json"),
    (b"NaN", "application/json"),
    (b"\xef\xbb\xbf" + RAW, "application/json"),  # a byte order mark
    (b'{"person_id": "\xff"}', "application/json"),  # not UTF-8
    (RAW.replace(b"}", b', "exception": {"ground": "g", "justification": "0123456789"}}'), "application/json"),
    (RAW.decode().encode("utf-16"), "application/json"),
]


@pytest.mark.parametrize(("data", "content_type"), REQUESTS)
def test_reading_the_request_gives_what_webargs_gives(data: bytes, content_type: str | None) -> None:
    assert outcome(views._disclosure_request, data, content_type) == outcome(by_webargs, data, content_type)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(bodies | JUNK, st.booleans())
def test_reading_generated_requests_gives_what_webargs_gives(data: Any, ascii_only: bool) -> None:
    raw = json.dumps(data, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(views._disclosure_request, raw, "application/json") == outcome(by_webargs, raw, "application/json")


def test_a_well_formed_body_does_not_reach_webargs(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("webargs was asked")

    monkeypatch.setattr(views.blp.ARGUMENTS_PARSER, "parse", refuse)
    for data in (GOOD, GOOD | {"exception": None}, GOOD | {"exception": EXCEPTION}):
        assert outcome(views._disclosure_request, json.dumps(data).encode(), "application/json")[0] == "body"
    with pytest.raises(AssertionError, match="webargs was asked"):
        outcome(views._disclosure_request, RAW, "text/plain")


# --- the answer ---------------------------------------------------------------------------------------------------

BASIS_NAMES = ["kind", "rule", "reference", "lawful_basis", "consent_id", "consent_version", "exception_ground"]
# Values marshmallow's String turns into text: str, and also numbers and bytes (which the services never give).
TEXT: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=8),
    st.text(max_size=8),
    st.none(),
    st.integers(),
    st.binary(max_size=4).map(lambda b: b.hex().encode()),
)
INTEGER: st.SearchStrategy[Any] = st.one_of(st.integers(), st.none(), st.booleans(), st.floats(-1e9, 1e9))
CONTENT: st.SearchStrategy[Any] = st.none() | st.dictionaries(st.text(max_size=6), JUNK, max_size=4)


def some_of(members: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with each member or without it (marshmallow leaves a missing one out), and perhaps an extra one."""
    return st.fixed_dictionaries({}, optional=members).flatmap(
        lambda chosen: st.dictionaries(st.sampled_from(["extra", "fields"]), JUNK, max_size=1).map(
            lambda extra: chosen | extra
        )
    )


def full_or_partial(members: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(members) | some_of(members)


bases = st.none() | full_or_partial({name: INTEGER if name == "consent_version" else TEXT for name in BASIS_NAMES})
records = full_or_partial(
    {
        "record_id": TEXT,
        "category": TEXT,
        "source_organisation": TEXT,
        "deposited_at": TEXT,
        "basis": bases,
        "content": CONTENT,
    }
)
answers = full_or_partial(
    {
        "disclosure_id": TEXT,
        "person_id": TEXT,
        "category": TEXT,
        "purpose": TEXT,
        "basis": bases,
        "obligations": st.none() | st.lists(TEXT, max_size=3) | st.lists(TEXT, max_size=3).map(tuple),
        "policy_version": TEXT,
        "audit_entry_id": INTEGER,
        "records": st.none() | st.lists(st.none() | records, max_size=3),
    }
)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_the_fast_dump_gives_what_the_schema_dumps(answer: dict[str, Any]) -> None:
    assert repr(disclosure_io.dump_disclosure(answer)) == repr(DUMP.dump(answer))


def basis(**changes: Any) -> dict[str, Any]:
    return {
        "kind": "consent",
        "rule": "F7",
        "reference": "703/2023 53 § 3 mom.",
        "lawful_basis": "GDPR 6(1)(e), 9(2)(h)",
        "consent_id": "con_0a6123c75058f4d4f5a8b0f9871f212d",
        "consent_version": 1,
        "exception_ground": None,
    } | changes


def record(number: int, **changes: Any) -> dict[str, Any]:
    return {
        "record_id": f"rec_{number:032x}",
        "category": "work_assessment",
        "source_organisation": "kisalli",
        "deposited_at": "2026-01-15T09:00:00Z",
        "basis": basis(),
        "content": {"assessment_date": "2025-11-28", "tasks_tried": ["Puutyöpaja", "Kierrätys"], "hours": 4.5},
    } | changes


def answer(**changes: Any) -> dict[str, Any]:
    return {
        "disclosure_id": "dis_0428c49eaee4c3d4ecdb7803a340f2b3",
        "person_id": P,
        "category": "work_assessment",
        "purpose": "work_capacity_assessment",
        "basis": basis(),
        "obligations": [],
        "policy_version": "2026.1",
        "audit_entry_id": 42,
        "records": [record(1)],
    } | changes


ANSWERS = {
    "one record": answer(),
    "several records, on two bases": answer(
        records=[
            record(1),
            record(2, source_organisation="varha", basis=basis(kind="statute", consent_id=None)),
            record(3),
        ]
    ),
    "no records": answer(records=[]),
    "no basis": answer(basis=None, records=[record(1, basis=None)]),
    "obligations": answer(obligations=["notify_person", "log_access"]),
    "a statutory exception": answer(basis=basis(kind="exception", consent_id=None, exception_ground="vital_interest")),
    "empty content": answer(records=[record(1, content={})]),
    "nested content": answer(records=[record(1, content={"a": {"b": [1, {"c": None}]}, "ä": "ö\u2028"})]),
}


@pytest.mark.parametrize("case", ANSWERS)
def test_the_fast_dump_gives_what_the_schema_dumps_for_the_services_answers(case: str) -> None:
    given_answer = ANSWERS[case]
    assert repr(disclosure_io.dump_disclosure(given_answer)) == repr(DUMP.dump(given_answer))


def test_an_answer_that_is_not_a_dict_is_dumped_by_the_schema() -> None:
    objects = SimpleNamespace(**answer(basis=SimpleNamespace(**basis()), records=[SimpleNamespace(**record(1))]))
    assert repr(disclosure_io.dump_disclosure(objects)) == repr(DUMP.dump(objects))
    mixed = answer(basis=SimpleNamespace(**basis()))
    assert repr(disclosure_io.dump_disclosure(mixed)) == repr(DUMP.dump(mixed))


class _Flagged(Schema):
    flag = fields.Boolean()


class _Renamed(Schema):
    name = fields.String(data_key="Name")


class _Defaulted(Schema):
    name = fields.String(dump_default="x")


class _Hooked(Schema):
    name = fields.String()

    @post_dump
    def _upper(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return data


class _Inside(Schema):
    nested = fields.Nested(_Flagged)


@pytest.mark.parametrize("schema", [_Flagged(), _Renamed(), _Defaulted(), _Hooked(), _Inside()])
def test_a_schema_the_fast_dump_does_not_know_stops_the_import(schema: Schema) -> None:
    with pytest.raises(TypeError):
        disclosure_io._dumper(schema)


class _OneOf(Schema):
    name = fields.String(required=True, validate=validate.OneOf(["a"]))


class _Optional(Schema):
    name = fields.String(validate=validate.Length(max=4))


class _Twice(Schema):
    name = fields.String(required=True, validate=[validate.Length(max=4), validate.Regexp("a")])


@pytest.mark.parametrize("schema", [_OneOf(), _Optional(), _Twice(), _Flagged()])
def test_a_request_field_the_fast_read_does_not_know_stops_the_import(schema: Schema) -> None:
    name = next(iter(schema.fields))
    with pytest.raises((TypeError, KeyError)):
        disclosure_io._text_bounds(schema, name)


class _Validated(s.StrictSchema):
    name = fields.String(required=True, validate=validate.Length(max=4))

    @validates("name")
    def _check(self, value: str, **_: Any) -> None:
        pass


class _Changed(s.StrictSchema):
    name = fields.String(required=True, validate=validate.Length(max=4))

    @post_load
    def _change(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return data


class _Lenient(Schema):
    name = fields.String(required=True, validate=validate.Length(max=4))


class _Strict(s.StrictSchema):
    name = fields.String(required=True, validate=validate.Length(max=4))


@pytest.mark.parametrize("schema", [_Validated(), _Changed(), _Lenient(), _Strict(unknown="exclude")])
def test_a_request_schema_with_more_checks_than_the_fast_read_knows_stops_the_import(schema: Schema) -> None:
    disclosure_io._strict(_Strict(), ["name"])
    with pytest.raises(TypeError):
        disclosure_io._strict(schema, ["name"])


# --- the JSON response ------------------------------------------------------------------------------------------------


def json_app(*, debug: bool = False, **provider: Any) -> Flask:
    configured = Flask(__name__)
    configured.debug = debug
    for name, value in provider.items():
        setattr(configured.json, name, value)
    return configured


@pytest.mark.parametrize(
    "configured",
    [
        json_app(sort_keys=False),  # as broker/app.py configures it
        json_app(),
        json_app(sort_keys=False, ensure_ascii=False),
        json_app(sort_keys=False, debug=True),
        json_app(sort_keys=False, compact=True, debug=True),
        json_app(sort_keys=False, compact=False),
    ],
)
@pytest.mark.parametrize("case", ANSWERS)
def test_the_response_is_the_one_jsonify_makes(configured: Flask, case: str) -> None:
    data = DUMP.dump(ANSWERS[case])
    with configured.app_context():
        ours, theirs = disclosure_io.json_response(data), jsonify(data)
    theirs.status_code = 200  # what flask-smorest's `response` does after jsonify
    assert ours.status == theirs.status
    assert list(ours.headers) == list(theirs.headers)
    assert ours.get_data() == theirs.get_data()


@example(data={"x": float("nan")})
@given(st.dictionaries(st.text(max_size=4), JUNK, max_size=4))
def test_the_response_is_the_one_jsonify_makes_for_any_content(data: dict[str, Any]) -> None:
    configured = json_app(sort_keys=False)
    with configured.app_context():
        ours, theirs = disclosure_io.json_response(data), jsonify(data)
    assert list(ours.headers) == list(theirs.headers) and ours.get_data() == theirs.get_data()
