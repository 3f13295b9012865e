"""A disclosure's reads and writes on PostgreSQL in two statements where they took eight.

Every statement sent to PostgreSQL costs the broker 50–100 µs of CPU in psycopg and the server about as much again,
and on a machine where the two share cores that, not the disk, bounds the disclosure rate (docs/benchmarks.md).
A disclosure used to send twelve. Here:

- the person's consents, mandates and service relationships, and the records of the asked category, are read in
  one statement: one JSON aggregate per table, each a list of arrays in a fixed column order. The person's row
  lock (`persons.lock_person_birth_date`) stays a statement of its own, before it: under READ COMMITTED a
  statement's snapshot is taken when the statement starts, so reads in the same statement as a lock that had to
  wait would not see what the lock holder committed — a withdrawal that committed while the disclosure waited
  would go unseen (invariant 3; PostgreSQL manual, 13.2.1 "Read Committed Isolation Level").
- the audit entry, its actor opening and the disclosure row are written in one statement: data-modifying
  common table expressions, the entry's append id handed to the other two by its RETURNING (PostgreSQL manual,
  7.8.4 "Data-Modifying Statements in WITH").

What comes back is converted to exactly what the statement-per-table reads give (`disclosures.read_facts`,
`_RECORDS_TO_DISCLOSE`): tests/integration/test_disclosure_statements.py compares the two on varied persons.
SQLite keeps the statement-per-table form: there a statement is a function call, not a round trip.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Select, String, bindparam, func, insert, literal, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from broker.adapters.database import Prepared
from broker.adapters.orm import (
    AuditActorRow,
    AuditEntryRow,
    ConsentRow,
    DisclosureRow,
    RecordRow,
    RelationshipRow,
    RepresentationRow,
)
from broker.adapters.uow import UnitOfWork
from broker.services.consents import CONSENT_FACT_COLUMNS, to_fact
from policies import ConsentFact

_CONSENTS = ConsentRow.__table__
_MANDATES = RepresentationRow.__table__
_RELATIONSHIPS = RelationshipRow.__table__
_RECORDS = RecordRow.__table__
_ENTRIES = AuditEntryRow.__table__
_ACTORS = AuditActorRow.__table__
_DISCLOSURES = DisclosureRow.__table__

MANDATE_COLUMNS = ("mandate", "valid_from", "valid_until")
# The columns `_RECORDS_TO_DISCLOSE` (services/disclosures.py) selects, and `open_record` reads.
RECORD_COLUMNS = (
    "id",
    "person_id",
    "category",
    "source_org",
    "deposited_at",
    "kek_id",
    "wrapped_key",
    "nonce",
    "ciphertext",
)
_BYTES = frozenset({"wrapped_key", "nonce", "ciphertext"})

ConsentRead = namedtuple("ConsentRead", CONSENT_FACT_COLUMNS)  # type: ignore[misc]
MandateRead = namedtuple("MandateRead", MANDATE_COLUMNS)  # type: ignore[misc]
RecordRead = namedtuple("RecordRead", RECORD_COLUMNS)  # type: ignore[misc]

_PERSON = bindparam("person_id", type_=String)


def _json_list(table: Any, names: tuple[str, ...], *where: Any, order_by: tuple[Any, ...] = ()) -> Any:
    """`(SELECT json_agg(json_build_array(<names>) [ORDER BY …]) FROM table WHERE …)`: NULL when no row matches.
    Binary columns travel as hex (`encode(…, 'hex')`), which JSON cannot hold as they are."""
    parts = [func.encode(table.c[n], literal("hex")) if n in _BYTES else table.c[n] for n in names]
    row = func.json_build_array(*parts)
    aggregated = func.json_agg(aggregate_order_by(row, *order_by) if order_by else row, type_=JSON)
    return select(aggregated).where(*where).scalar_subquery()


def _facts_and_records() -> Select[Any]:
    return select(
        _json_list(_CONSENTS, CONSENT_FACT_COLUMNS, _CONSENTS.c.person_id == _PERSON).label("consents"),
        _json_list(_MANDATES, MANDATE_COLUMNS, _MANDATES.c.person_id == _PERSON).label("mandates"),
        select(func.json_agg(_RELATIONSHIPS.c.organisation_id, type_=JSON))
        .where(_RELATIONSHIPS.c.person_id == _PERSON, _RELATIONSHIPS.c.ended_at.is_(None))
        .scalar_subquery()
        .label("relationships"),
        _json_list(
            _RECORDS,
            RECORD_COLUMNS,
            _RECORDS.c.person_id == _PERSON,
            _RECORDS.c.category == bindparam("category", type_=String),
            _RECORDS.c.ciphertext.is_not(None),
            order_by=(_RECORDS.c.deposited_at, _RECORDS.c.id),
        ).label("records"),
    )


_FACTS_AND_RECORDS = Prepared(_facts_and_records())


def _when(value: str | None) -> datetime | None:
    # json_agg writes a timestamptz as ISO 8601 with the session's UTC offset, e.g. 2026-11-27T10:00:00.5+00:00.
    return None if value is None else datetime.fromisoformat(value)


def _consent(values: list[Any]) -> ConsentFact:
    read = ConsentRead(*values)
    return to_fact(
        read._replace(
            valid_from=_when(read.valid_from),
            valid_until=_when(read.valid_until),
            withdrawn_at=_when(read.withdrawn_at),
        )
    )


def _record(values: list[Any]) -> Any:
    read = RecordRead(*values)
    return read._replace(
        deposited_at=_when(read.deposited_at),
        wrapped_key=bytes.fromhex(read.wrapped_key),
        nonce=bytes.fromhex(read.nonce),
        ciphertext=bytes.fromhex(read.ciphertext),
    )


def read_facts_and_records(
    uow: UnitOfWork, person_id: str, category: str
) -> tuple[tuple[ConsentFact, ...], list[Any], frozenset[str], list[Any]]:
    """The person's consent facts, mandate rows, active relationships' organisations, and the records of
    `category` (oldest first), in one statement in `uow`'s transaction. Take the person's row lock first."""
    row = _FACTS_AND_RECORDS.first(uow.session, {"person_id": person_id, "category": category})
    assert row is not None  # a SELECT without FROM answers one row
    consents = tuple(_consent(values) for values in row.consents or ())
    mandates = [
        MandateRead(mandate, _when(valid_from), _when(valid_until))
        for mandate, valid_from, valid_until in row.mandates or ()
    ]
    return consents, mandates, frozenset(row.relationships or ()), [_record(values) for values in row.records or ()]


_ENTRY_COLUMNS = (
    "entry",
    "split",
    "logged_at",
    "event",
    "person_id",
    "organisation",
    "category",
    "purpose",
    "effect",
    "basis_kind",
)
_DISCLOSURE_COLUMNS = tuple(c.name for c in _DISCLOSURES.c if c.name != "audit_entry_id")


def _binds(table: Any, prefix: str, names: tuple[str, ...]) -> list[Any]:
    # Typed, so that each value is converted by its column type's bind processor (JSON, timestamps) as an insert
    # into the table would convert it; prefixed, since the entry and the disclosure share column names.
    return [bindparam(prefix + name, type_=table.c[name].type) for name in names]


def _record_statement(*, with_actor: bool) -> Select[Any]:
    entry = (
        insert(_ENTRIES)
        .values(dict(zip(_ENTRY_COLUMNS, _binds(_ENTRIES, "e_", _ENTRY_COLUMNS), strict=True)))
        .returning(_ENTRIES.c.id)
        .cte("entry")
    )
    disclosure = (
        insert(_DISCLOSURES)
        .from_select(
            [*_DISCLOSURE_COLUMNS, "audit_entry_id"],
            select(*_binds(_DISCLOSURES, "d_", _DISCLOSURE_COLUMNS), entry.c.id),
        )
        .cte("disclosure")
    )
    ctes = [disclosure]
    if with_actor:
        ctes.append(
            insert(_ACTORS)
            .from_select(
                ["entry_id", "actor_id", "salt"],
                select(entry.c.id, *_binds(_ACTORS, "a_", ("actor_id", "salt"))),
            )
            .cte("actor")
        )
    return select(entry.c.id).add_cte(*ctes)


_RECORD = {with_actor: Prepared(_record_statement(with_actor=with_actor)) for with_actor in (False, True)}


def record_disclosure(
    uow: UnitOfWork, entry: tuple[dict[str, Any], tuple[str, str] | None], disclosure: dict[str, Any]
) -> int:
    """Append the audit entry (`audit_log.PendingEntry`) and store the disclosure row (every column but its
    `audit_entry_id`, which is the entry's append id) in one statement; return the append id."""
    row, opening = entry
    params = {"e_" + name: row[name] for name in _ENTRY_COLUMNS}
    params.update(("d_" + name, disclosure[name]) for name in _DISCLOSURE_COLUMNS)
    if opening is not None:
        params["a_actor_id"], params["a_salt"] = opening
    found = _RECORD[opening is not None].first(uow.session, params)
    assert found is not None
    return int(found.id)
