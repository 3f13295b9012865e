"""Strict field types and constructors shared by the record schemas.

Every field of a record schema is built here so that each one carries the two pieces of metadata the rest of
the broker relies on: ``sensitivity`` (one of ``SENSITIVITIES``) and a short English ``description``. The
constructors take both as required keyword arguments, so a field cannot be declared without them.

The types are stricter than marshmallow's defaults because the content comes from partner systems as JSON and
is stored as it was deposited: no coercion of ``"3"`` to ``3``, ``1`` to ``True`` or ``b"..."`` to text.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, validate

# Sensitivity classes. "special" marks content that is, or by its purpose is likely to carry, GDPR Art. 9
# data (health, functional capacity, substance use, mental health); when in doubt a field is classed
# "special", because classing such content too low is the harmful mistake. "identifying" marks a person's
# name and contact data. Everything else is "ordinary" (which does not mean it is not secret).
SPECIAL = "special"
IDENTIFYING = "identifying"
ORDINARY = "ordinary"
SENSITIVITIES = frozenset({SPECIAL, IDENTIFYING, ORDINARY})

SHORT_TEXT_MAX = 200
LONG_TEXT_MAX = 4000
LIST_MAX = 50
EMAIL_MAX = 254  # RFC 5321 4.5.3.1.3: the longest usable forward path.
PHONE_MAX = 30

# C0 controls other than TAB and LF, DEL, and C1 controls; also lone surrogates, which JSON can carry as
# "\ud800" escapes but which are not encodable as UTF-8 and so are not "plain UTF-8" text (records.md).
_FORBIDDEN_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_PHONE = re.compile(r"\+?[0-9][0-9 ()-]{4,28}", re.ASCII)
MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])", re.ASCII)


_TEXT_ERRORS = {
    "control_character": "Must not contain control characters other than newline and tab.",
    "surrogate": "Must be valid UTF-8 text.",
}


class PlainText(fields.String):
    """A string of plain text: only ``str`` (no bytes), and no control characters other than TAB and LF."""

    def __init__(self, **kwargs: Any) -> None:
        error_messages = {**_TEXT_ERRORS, **(kwargs.pop("error_messages", None) or {})}
        super().__init__(error_messages=error_messages, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        found = _FORBIDDEN_CHARACTERS.search(value)
        if found is not None:
            raise self.make_error("surrogate" if "\ud800" <= found.group() <= "\udfff" else "control_character")
        return value


class StrictBoolean(fields.Boolean):
    """Only JSON ``true`` and ``false``.

    ``Boolean(truthy={True}, falsy={False})`` alone would still accept ``1``, ``0`` and ``1.0``, because they
    are equal to, and hash like, ``True`` and ``False``; hence the type check.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(truthy={True}, falsy={False}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StrictFloat(fields.Float):
    """A JSON number (int or float), never a numeric string or a boolean; NaN and infinity rejected."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class IsoDate(fields.Date):
    """A calendar date written exactly ``YYYY-MM-DD``; dumps as the same ISO string.

    Python 3.11's ``date.fromisoformat`` also accepts ``20260101`` and week dates such as ``2026-W01-1``;
    the contract (records.md) allows only the extended calendar form, so the shape is checked first.
    A ``datetime.date`` (not a ``datetime``) is accepted from Python callers.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> dt.date:
        if type(value) is dt.date:
            return value
        if not isinstance(value, str) or _ISO_DATE.fullmatch(value) is None:
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        return super()._deserialize(value, attr, data, **kwargs)


class FullMatch(validate.Validator):
    """The whole value must match: ``validate.Regexp`` uses ``re.match``, which accepts a valid prefix."""

    def __init__(self, pattern: re.Pattern[str], *, error: str) -> None:
        self.pattern = pattern
        self.error = self.message = error

    def __call__(self, value: str) -> str:
        if self.pattern.fullmatch(value) is None:
            raise ValidationError(self.message)
        return value


def _metadata(description: str, sensitivity: str) -> dict[str, str]:
    if sensitivity not in SENSITIVITIES:
        raise ValueError(f"unknown sensitivity '{sensitivity}'")
    if not description:
        raise ValueError("every record field needs a description")
    return {"description": description, "sensitivity": sensitivity}


def short_text(*, description: str, sensitivity: str, required: bool = False) -> PlainText:
    """A name, place, label or one-line item: 1–200 characters."""
    return PlainText(
        required=required,
        validate=validate.Length(min=1, max=SHORT_TEXT_MAX),
        metadata=_metadata(description, sensitivity),
    )


def long_text(*, description: str, sensitivity: str, required: bool = False) -> PlainText:
    """Free narrative text: 1–4000 characters, newlines and tabs allowed."""
    return PlainText(
        required=required,
        validate=validate.Length(min=1, max=LONG_TEXT_MAX),
        metadata=_metadata(description, sensitivity),
    )


def text_list(*, description: str, sensitivity: str, required: bool = False) -> fields.List[str]:
    """A list of short text items, at most 50; a required list needs at least one item.

    An optional list may be empty: for example an empty ``work_restrictions`` says "no restrictions".
    """
    metadata = _metadata(description, sensitivity)
    return fields.List(
        PlainText(validate=validate.Length(min=1, max=SHORT_TEXT_MAX), metadata=metadata),
        required=required,
        validate=validate.Length(min=1 if required else 0, max=LIST_MAX),
        metadata=metadata,
    )


def choice(choices: tuple[str, ...], *, description: str, sensitivity: str, required: bool = False) -> PlainText:
    """One of a closed list of codes."""
    return PlainText(
        required=required,
        validate=validate.OneOf(choices),
        metadata=_metadata(description, sensitivity),
    )


def date(*, description: str, sensitivity: str, required: bool = False) -> IsoDate:
    return IsoDate(required=required, metadata=_metadata(description, sensitivity))


def flag(*, description: str, sensitivity: str, required: bool = False) -> StrictBoolean:
    return StrictBoolean(required=required, metadata=_metadata(description, sensitivity))


def number(
    *, minimum: float, maximum: float, description: str, sensitivity: str, required: bool = False
) -> StrictFloat:
    """A number within [minimum, maximum]; hours may be fractional (3.5)."""
    return StrictFloat(
        required=required,
        validate=validate.Range(min=minimum, max=maximum),
        metadata=_metadata(description, sensitivity),
    )


def count(
    *, minimum: int, maximum: int | None = None, description: str, sensitivity: str, required: bool = False
) -> fields.Integer:
    """A whole number (JSON integer only, so ``3.0`` and ``"3"`` are rejected) within the range."""
    return fields.Integer(
        strict=True,
        required=required,
        validate=validate.Range(min=minimum, max=maximum),
        metadata=_metadata(description, sensitivity),
    )


def phone_number(*, description: str, sensitivity: str, required: bool = False) -> PlainText:
    return PlainText(
        required=required,
        validate=[
            validate.Length(min=1, max=PHONE_MAX),
            FullMatch(_PHONE, error="Not a valid telephone number."),
        ],
        metadata=_metadata(description, sensitivity),
    )


def email_address(*, description: str, sensitivity: str, required: bool = False) -> PlainText:
    return PlainText(
        required=required,
        validate=[validate.Length(min=1, max=EMAIL_MAX), validate.Email()],
        metadata=_metadata(description, sensitivity),
    )


def year_month(*, description: str, sensitivity: str, required: bool = False) -> PlainText:
    """A calendar month written ``YYYY-MM``."""
    return PlainText(
        required=required,
        validate=FullMatch(MONTH, error="Not a valid month (YYYY-MM)."),
        metadata=_metadata(description, sensitivity),
    )


def verify_not_before(data: Mapping[str, Any], earlier: str, later: str) -> None:
    """Raise, keyed by ``later``, when both dates are present and ``later`` falls before ``earlier``."""
    if earlier in data and later in data and data[later] < data[earlier]:
        raise ValidationError(f"Must not be before {earlier}.", field_name=later)
