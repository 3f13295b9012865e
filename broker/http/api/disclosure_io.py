"""POST /disclosures, the broker's hot path: its body read, its answer dumped and written without the framework's
general machinery.

Every partner request for records comes here, so the framework's own work on it counts: webargs and marshmallow
loading the body, marshmallow dumping the answer, `jsonify`, and the wrappers of flask-smorest's decorators were
about a tenth of the broker's CPU per disclosure (`python -m bench.profile_disclosure --cprofile 40`). The view
does that work itself for the requests that partners send — a well-formed body, read into exactly the dict the
schema would load — and hands everything else to webargs and the schema, so that every refusal is the one they
give (status, problem document, field names). The OpenAPI document is built by the same decorators as every other
operation's (views.py `_documented`), so it still describes the body and the answer with DisclosureRequestSchema and
DisclosureSchema. tests/unit/test_disclosure_fast_path.py compares both paths with the schemas', and
tests/integration/test_api_disclosures_fast_path.py the answers with those of the view declared as before.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, jsonify
from flask.json.provider import DefaultJSONProvider
from marshmallow import RAISE, Schema, fields, missing, validate

from schemas import api as s

DISCLOSURE_REQUEST = s.DisclosureRequestSchema()
_DISCLOSURE = s.DisclosureSchema()
_ABSENT = object()  # a member the answer does not have, which marshmallow leaves out of the dump


def _text_bounds(schema: Schema, name: str) -> tuple[int, int]:
    """The length bounds of `schema`'s field `name`. The fast read checks a string within them and without U+0000
    (StrictSchema's `_refuse_nul`), which is all the schema checks of a required, non-null String whose one
    validator is a Length. A field changed into anything else would need a check of its own: it stops the import,
    rather than letting the fast read accept what the schema refuses."""
    field = schema.fields[name]
    length = field.validators[0] if len(field.validators) == 1 else None
    if (
        type(field) is not fields.String
        or not field.required
        or field.allow_none
        or field.data_key is not None
        or field.attribute is not None
        or not isinstance(length, validate.Length)
        or length.equal is not None
    ):
        raise TypeError(f"{type(schema).__name__}.{name}: not a field the fast read of POST /disclosures knows")
    return (length.min or 0, sys.maxsize if length.max is None else length.max)


def _exception_schema(schema: Schema) -> Schema:
    """The schema of the optional, nullable `exception` member, checked as `_text_bounds` checks a text field."""
    field = schema.fields["exception"]
    if not (
        type(field) is fields.Nested
        and not field.required
        and field.allow_none
        and field.load_default is None
        and not field.many
        and field.data_key is None
        and field.attribute is None
        and not field.validators
    ):
        raise TypeError(f"{type(schema).__name__}.exception: not a field the fast read of POST /disclosures knows")
    nested: Schema = field.schema
    return nested


def _strict(schema: Schema, names: list[str]) -> Schema:
    """`schema`, if it has exactly the fields `names` (in that order: the order of the dict it loads), refuses
    unknown members, and runs no hook but StrictSchema's `_refuse_nul` (marshmallow keeps them in `_hooks`): a
    `validates`, `validates_schema` or `post_load` would check or change what the fast read does not."""
    hooks = {kind: [hook[0] for hook in found] for kind, found in getattr(schema, "_hooks", {}).items() if found}
    if (
        list(schema.fields) != names
        or schema.unknown != RAISE
        or hooks != {"pre_load": ["_refuse_nul"]}
        or getattr(type(schema), "_refuse_nul", None) is not s.StrictSchema._refuse_nul
    ):
        raise TypeError(f"{type(schema).__name__}: not the schema the fast read of POST /disclosures knows")
    return schema


_strict(DISCLOSURE_REQUEST, ["person_id", "category", "purpose", "exception"])
_PERSON_ID = _text_bounds(DISCLOSURE_REQUEST, "person_id")
_CATEGORY = _text_bounds(DISCLOSURE_REQUEST, "category")
_PURPOSE = _text_bounds(DISCLOSURE_REQUEST, "purpose")
_EXCEPTION = _strict(_exception_schema(DISCLOSURE_REQUEST), ["ground", "justification"])
_GROUND = _text_bounds(_EXCEPTION, "ground")
_JUSTIFICATION = _text_bounds(_EXCEPTION, "justification")


def _fits(value: object, bounds: tuple[int, int]) -> bool:
    return type(value) is str and bounds[0] <= len(value) <= bounds[1] and s.NUL not in value


def well_formed_disclosure_request(data: object) -> dict[str, Any] | None:
    """What `DisclosureRequestSchema().load(data)` gives when `data` is a body the schema takes as it is: the three
    strings within their lengths, no member besides them but `exception`, which is null or has a ground and a
    justification within theirs and nothing else, and U+0000 nowhere. None for any other body, which the schema
    is then to answer."""
    if type(data) is not dict:
        return None
    exception: Any = None
    if len(data) == 4 and "exception" in data:
        given = data["exception"]
        if given is not None:
            if not (
                type(given) is dict
                and len(given) == 2
                and _fits(given.get("ground"), _GROUND)
                and _fits(given.get("justification"), _JUSTIFICATION)
            ):
                return None
            exception = {"ground": given["ground"], "justification": given["justification"]}
    elif len(data) != 3:
        return None
    # Three members that are these three names are all the members; with four, the fourth is `exception`.
    person_id, category, purpose = data.get("person_id"), data.get("category"), data.get("purpose")
    if _fits(person_id, _PERSON_ID) and _fits(category, _CATEGORY) and _fits(purpose, _PURPOSE):
        return {"person_id": person_id, "category": category, "purpose": purpose, "exception": exception}
    return None


def _text(value: Any) -> Any:
    # fields.String: None stays None, anything else becomes text (bytes as UTF-8).
    if value is None or type(value) is str:
        return value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _integer(value: Any) -> Any:
    return None if value is None else int(value)  # fields.Integer


def _mapping(value: Any) -> Any:
    return None if value is None else dict(value)  # fields.Dict without key or value fields: a shallow copy


def _each(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def each(value: Any) -> Any:  # fields.List
        return None if value is None else [convert(item) for item in value]

    return each


def _dumper(schema: Schema) -> Callable[[Any], Any]:
    """A function that gives what `schema.dump(obj)` gives, cheaper, for an `obj` that is a dict — other objects are
    left to the schema. It follows marshmallow's rules for the fields DisclosureSchema uses: the members in the
    schema's order; one `obj` lacks is left out; None stays None; String, Integer, Dict, List of them, and Nested
    (its own schema's dump). A schema with anything else — another field type, a data_key, an attribute, a default
    for dumping, a dump hook — stops the import: the dump would otherwise differ from the documented one."""
    plan: list[tuple[str, Callable[[Any], Any]]] = []

    def converter(field: fields.Field[Any], where: str) -> Callable[[Any], Any]:
        kind = type(field)
        if kind is fields.String:
            return _text
        if kind is fields.Integer and not field.as_string:  # type: ignore[attr-defined]
            return _integer
        if kind is fields.Dict and field.key_field is None and field.value_field is None:  # type: ignore[attr-defined]
            return _mapping
        if kind is fields.List:
            return _each(converter(field.inner, where))  # type: ignore[attr-defined]
        if kind is fields.Nested and not field.many:  # type: ignore[attr-defined]
            dump = _dumper(field.schema)  # type: ignore[attr-defined]
            return lambda value: None if value is None else dump(value)
        raise TypeError(f"{where}: a {kind.__name__} field, which the dump of POST /disclosures does not know")

    hooks = getattr(schema, "_hooks", {})
    if schema.many or hooks.get("pre_dump") or hooks.get("post_dump"):
        raise TypeError(f"{type(schema).__name__}: dump hooks, which the dump of POST /disclosures does not know")
    for name, field in schema.dump_fields.items():
        where = f"{type(schema).__name__}.{name}"
        if field.data_key is not None or field.attribute is not None or field.dump_default is not missing:
            raise TypeError(f"{where}: renamed or defaulted, which the dump of POST /disclosures does not know")
        # marshmallow reads a dict's member, or else its attribute: a name no dict has as attribute reads the same.
        if "." in name or hasattr(dict, name):
            raise TypeError(f"{where}: a name the dump of POST /disclosures cannot read as marshmallow does")
        plan.append((name, converter(field, where)))

    def dump(obj: Any) -> Any:
        if type(obj) is not dict:
            return schema.dump(obj)
        dumped = {}
        for name, convert in plan:
            value = obj.get(name, _ABSENT)
            if value is not _ABSENT:
                dumped[name] = convert(value)
        return dumped

    return dump


#: `DisclosureSchema().dump(answer)`, without marshmallow's work per field.
dump_disclosure = _dumper(_DISCLOSURE)


@functools.cache
def _encoder(ensure_ascii: bool, sort_keys: bool, default: Callable[[Any], Any]) -> json.JSONEncoder:
    # The encoder Flask's provider builds on every call, built once: its `encode` keeps no state between calls.
    return json.JSONEncoder(ensure_ascii=ensure_ascii, sort_keys=sort_keys, separators=(",", ":"), default=default)


def json_response(data: Any) -> Response:
    """The 200 answer flask-smorest's `response` makes of `data` with `jsonify` — the same headers and bytes —
    without looking up the application's JSON provider through its proxies twice and deriving the Content-Type
    from the mimetype."""
    app = current_app
    provider = app.json
    if (
        type(provider) is not DefaultJSONProvider
        or provider.mimetype != "application/json"
        or provider.compact is False
        or (provider.compact is None and app.debug)  # then jsonify indents
    ):
        return jsonify(data)
    body = _encoder(provider.ensure_ascii, provider.sort_keys, provider.default).encode(data)
    return app.response_class(f"{body}\n", content_type="application/json")
