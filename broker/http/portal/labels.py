"""Labels in the language of the request: the English message ids of broker/domain/labels.py, translated."""

from __future__ import annotations

from flask_babel import gettext

from broker.domain.labels import TABLES, UNKNOWN


def label(table: str, value: object) -> str:
    """The label of `value` in `table`. An id with no label is shown as "Other" rather than as the raw id
    (the tests check that every id the vocabulary defines has one)."""
    if value is None or value == "":
        return ""
    return gettext(TABLES[table].get(str(value), UNKNOWN))
