"""A disclosure's reads and writes in fewer, larger statements.

Every statement sent to PostgreSQL costs the broker 50–100 µs of CPU in psycopg and the server about as much again,
and on a machine where the two share cores that, not the disk, bounds the disclosure rate (docs/benchmarks.md).
A disclosure used to send twelve; under the person's row lock it now sends seven, on a snapshot three (the token,
`read_person_facts_and_records`, `record_disclosure_if_unchanged`). On SQLite a statement is a function call rather
than a round trip, but still 15–25 µs of Python and SQLite work; the snapshot read of a disclosure takes one
instead of five.

- The person's consents, mandates and service relationships, and the records of the asked category, are read in
  one statement: one JSON aggregate per table, each a list of arrays in a fixed column order. On PostgreSQL the
  person's row lock (`persons.lock_person_birth_date`) stays a statement of its own, before it: under READ
  COMMITTED a statement's snapshot is taken when the statement starts, so reads in the same statement as a lock
  that had to wait would not see what the lock holder committed — a withdrawal that committed while the disclosure
  waited would go unseen (invariant 3; PostgreSQL manual, 13.2.1 "Read Committed Isolation Level"). SQLite has no
  row locks: its disclosures read on a snapshot and record under the write lock (services/disclosures.py), so the
  person's row is read in the same statement.
- On PostgreSQL the audit entry, its actor opening and the disclosure row are written in one statement:
  data-modifying common table expressions, the entry's append id handed to the other two by its RETURNING
  (PostgreSQL manual, 7.8.4 "Data-Modifying Statements in WITH"). SQLite has no data-modifying CTEs. A plan made
  on a snapshot is written by the same statement grown by two CTEs in front — the person's row at the version
  read, and the proof's `jti` — from which the inserts take their one row, so that nothing is written unless both
  hold; in autocommit, the statement is the transaction.

What comes back is converted to exactly what the statement-per-table reads give (`disclosures.read_facts`, and a
query of the records ordered by deposit time): tests/integration/test_disclosure_statements.py compares the two on
varied persons, on both databases.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Integer, Select, String, bindparam, func, insert, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by

from broker.adapters.database import Prepared
from broker.adapters.orm import (
    AuditActorRow,
    AuditEntryRow,
    ConsentRow,
    DisclosureRow,
    DpopProofJtiRow,
    PersonRow,
    RecordRow,
    RelationshipRow,
    RepresentationRow,
)
from broker.adapters.uow import UnitOfWork
from broker.domain.errors import UnknownPersonError
from broker.services.consents import CONSENT_FACT_COLUMNS, to_fact
from policies import ConsentFact

_PERSONS = PersonRow.__table__
_CONSENTS = ConsentRow.__table__
_MANDATES = RepresentationRow.__table__
_RELATIONSHIPS = RelationshipRow.__table__
_RECORDS = RecordRow.__table__
_ENTRIES = AuditEntryRow.__table__
_ACTORS = AuditActorRow.__table__
_DISCLOSURES = DisclosureRow.__table__
_JTIS = DpopProofJtiRow.__table__

MANDATE_COLUMNS = ("mandate", "valid_from", "valid_until")
# What a disclosure reads of a record: where it came from, when, and what `open_record` needs to decrypt it.
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
_JSON = frozenset({"recipients", "categories", "purposes"})

ConsentRead = namedtuple("ConsentRead", CONSENT_FACT_COLUMNS)  # type: ignore[misc]
MandateRead = namedtuple("MandateRead", MANDATE_COLUMNS)  # type: ignore[misc]
RecordRead = namedtuple("RecordRead", RECORD_COLUMNS)  # type: ignore[misc]

_PERSON = bindparam("person_id", type_=String)


def _json_list(table: Any, names: tuple[str, ...], *where: Any, sqlite: bool, order_by: tuple[Any, ...] = ()) -> Any:
    """`(SELECT json_agg(json_build_array(<names>) ORDER BY …) FROM table WHERE …)` — on SQLite `json_group_array`
    of `json_array`, which orders nothing (an aggregate's ORDER BY came with SQLite 3.44): `read_facts_and_records`
    sorts those. Binary columns travel as hex, which JSON cannot hold as they are; on SQLite a JSON column is text,
    embedded as JSON by `json(…)`. PostgreSQL's aggregate is NULL when no row matches, SQLite's `[]`."""
    if sqlite:
        parts = [
            func.hex(table.c[n]) if n in _BYTES else func.json(table.c[n]) if n in _JSON else table.c[n] for n in names
        ]
        return select(func.json_group_array(func.json_array(*parts), type_=JSON)).where(*where).scalar_subquery()
    parts = [func.encode(table.c[n], literal("hex")) if n in _BYTES else table.c[n] for n in names]
    row = func.json_build_array(*parts)
    aggregated = func.json_agg(aggregate_order_by(row, *order_by) if order_by else row, type_=JSON)
    return select(aggregated).where(*where).scalar_subquery()


def _facts_and_records(*, sqlite: bool, person: bool) -> Select[Any]:
    """`person`: the person's birth date and facts version in the same statement, for a read on a snapshot; without
    it, for PostgreSQL's read after the person's row lock, which reads them (the module's docstring)."""
    relationships = func.json_group_array if sqlite else func.json_agg
    columns = [
        _json_list(_CONSENTS, CONSENT_FACT_COLUMNS, _CONSENTS.c.person_id == _PERSON, sqlite=sqlite).label("consents"),
        _json_list(_MANDATES, MANDATE_COLUMNS, _MANDATES.c.person_id == _PERSON, sqlite=sqlite).label("mandates"),
        select(relationships(_RELATIONSHIPS.c.organisation_id, type_=JSON))
        .where(_RELATIONSHIPS.c.person_id == _PERSON, _RELATIONSHIPS.c.ended_at.is_(None))
        .scalar_subquery()
        .label("relationships"),
        _json_list(
            _RECORDS,
            RECORD_COLUMNS,
            _RECORDS.c.person_id == _PERSON,
            _RECORDS.c.category == bindparam("category", type_=String),
            _RECORDS.c.ciphertext.is_not(None),
            sqlite=sqlite,
            order_by=(_RECORDS.c.deposited_at, _RECORDS.c.id),
        ).label("records"),
    ]
    if not person:
        return select(*columns)
    return select(_PERSONS.c.birth_date, _PERSONS.c.facts_version, *columns).where(_PERSONS.c.id == _PERSON)


_FACTS_AND_RECORDS = Prepared(_facts_and_records(sqlite=False, person=False))
_PERSON_FACTS_AND_RECORDS = {
    sqlite: Prepared(_facts_and_records(sqlite=sqlite, person=True)) for sqlite in (False, True)
}


def _when(value: str | None) -> datetime | None:
    # PostgreSQL's json_agg writes a timestamptz as ISO 8601 with the session's UTC offset, e.g.
    # 2026-11-27T10:00:00.5+00:00. SQLite holds SQLAlchemy's text of a naive UTC time, 2026-11-27 10:00:00.500000,
    # which the statement-per-table read hands back naive too.
    return None if value is None else datetime.fromisoformat(value)


def _consent(values: list[Any]) -> ConsentFact:
    read = ConsentRead(*values)
    return to_fact(
        read._replace(
            valid_from=_when(read.valid_from),
            valid_until=_when(read.valid_until),
            withdrawn_at=_when(read.withdrawn_at),
            explicit=bool(read.explicit),  # SQLite stores a boolean as 0 or 1
            written=bool(read.written),
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
    """PostgreSQL: the person's consent facts, mandate rows, active relationships' organisations, and the records of
    `category` (oldest first), in one statement in `uow`'s transaction. Take the person's row lock first."""
    row = _FACTS_AND_RECORDS.first(uow.session, {"person_id": person_id, "category": category})
    assert row is not None  # a SELECT without FROM answers one row
    return _converted(row, sort=False)


def read_person_facts_and_records(
    uow: UnitOfWork, person_id: str, category: str
) -> tuple[date, int, tuple[ConsentFact, ...], list[Any], frozenset[str], list[Any]]:
    """The person's birth date and facts version, then what `read_facts_and_records` reads, in one statement, for a
    decision on a snapshot (no row lock: the decision is recorded only if the facts version is still the same).
    Raises UnknownPersonError as `lock_person_birth_date` does."""
    sqlite = not uow.postgres
    row = _PERSON_FACTS_AND_RECORDS[sqlite].first(uow.session, {"person_id": person_id, "category": category})
    if row is None:
        raise UnknownPersonError(f"no person with id '{person_id}'", field="person_id")
    return (row.birth_date, row.facts_version, *_converted(row, sort=sqlite))


def _converted(row: Any, *, sort: bool) -> tuple[tuple[ConsentFact, ...], list[Any], frozenset[str], list[Any]]:
    consents = tuple(_consent(values) for values in row.consents or ())
    mandates = [
        MandateRead(mandate, _when(valid_from), _when(valid_until))
        for mandate, valid_from, valid_until in row.mandates or ()
    ]
    # Oldest first (then by id), as the records are disclosed. PostgreSQL's aggregate orders them; SQLite's cannot
    # (`sort`), and its stored text of a time sorts as the time does (fixed width, UTC), as an ORDER BY would.
    found = row.records or ()
    ordered = sorted(found, key=lambda values: (values[4], values[0])) if sort else found
    return consents, mandates, frozenset(row.relationships or ()), [_record(values) for values in ordered]


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
    return select(entry.c.id).add_cte(*_after_the_entry(entry, with_actor=with_actor))


def _after_the_entry(entry: Any, *, with_actor: bool) -> list[Any]:
    """The inserts that take the entry's append id from its RETURNING: the disclosure row, and the actor opening."""
    ctes = [
        insert(_DISCLOSURES)
        .from_select(
            [*_DISCLOSURE_COLUMNS, "audit_entry_id"],
            select(*_binds(_DISCLOSURES, "d_", _DISCLOSURE_COLUMNS), entry.c.id),
        )
        .cte("disclosure")
    ]
    if with_actor:
        ctes.append(
            insert(_ACTORS)
            .from_select(
                ["entry_id", "actor_id", "salt"],
                select(entry.c.id, *_binds(_ACTORS, "a_", ("actor_id", "salt"))),
            )
            .cte("actor")
        )
    return ctes


_RECORD = {with_actor: Prepared(_record_statement(with_actor=with_actor)) for with_actor in (False, True)}


def _record_checked_statement(*, with_actor: bool, with_jti: bool, checked: bool) -> Select[Any]:
    """`_record_statement`, written only if the person's facts version is still the one the decision read — the
    person's row taken `FOR SHARE` — and, `with_jti`, only if the request's proof `jti` was not used before (its row
    inserted, `ON CONFLICT DO NOTHING`). Answers whether the person's row was held at that version (`held`), whether
    the `jti` was fresh (`fresh`) and the entry's append id (`id`, NULL when nothing was written). `checked` False:
    the version is not compared, nor the row locked (the test-only switch, Settings.decision_lock)."""
    person = select(_PERSONS.c.id).where(_PERSONS.c.id == bindparam("p_person_id", type_=String))
    if checked:
        person = person.where(_PERSONS.c.facts_version == bindparam("p_version", type_=Integer)).with_for_update(
            read=True
        )
    held = person.cte("held")
    source = held
    if with_jti:
        jti = (
            postgresql.insert(_JTIS)
            .from_select(
                ["jkt", "jti", "expires_at"],
                select(*_binds(_JTIS, "j_", ("jkt", "jti", "expires_at"))).select_from(held),
            )
            .on_conflict_do_nothing()
            .returning(_JTIS.c.jti)
            .cte("fresh")
        )
        source = jti
    entry = (
        insert(_ENTRIES)
        .from_select(_ENTRY_COLUMNS, select(*_binds(_ENTRIES, "e_", _ENTRY_COLUMNS)).select_from(source))
        .returning(_ENTRIES.c.id)
        .cte("entry")
    )
    answers = [
        select(func.count()).select_from(held).scalar_subquery().label("held"),
        (select(func.count()).select_from(source).scalar_subquery() if with_jti else literal(1)).label("fresh"),
        select(entry.c.id).scalar_subquery().label("id"),
    ]
    return select(*answers).add_cte(*_after_the_entry(entry, with_actor=with_actor))


_RECORD_CHECKED = {
    (with_actor, with_jti, checked): Prepared(
        _record_checked_statement(with_actor=with_actor, with_jti=with_jti, checked=checked)
    )
    for with_actor in (False, True)
    for with_jti in (False, True)
    for checked in (False, True)
}


@dataclass(frozen=True)
class Recorded:
    """What `record_disclosure_if_unchanged` did: `index`, the entry's append id, when it wrote; otherwise `stale`
    (the person's facts changed since they were read, or the person is gone) or `replayed` (the proof's `jti` was
    used already)."""

    index: int | None
    stale: bool = False
    replayed: bool = False


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


def record_disclosure_if_unchanged(
    uow: UnitOfWork,
    entry: tuple[dict[str, Any], tuple[str, str] | None],
    disclosure: dict[str, Any],
    *,
    version: int,
    jti: dict[str, Any] | None,
) -> Recorded:
    """PostgreSQL, in autocommit: `record_disclosure` in one statement that is also its own transaction, written only
    if the person's facts version is still `version` and, with `jti` (a `dpop_proof_jtis` row), only if the proof
    was not used before — the row inserted in the same statement (`_record_checked_statement`).

    Why that is enough for invariant 3: a transaction that changes the person's facts updates the person's row (the
    facts-version triggers) and holds it until it commits. Taking the row `FOR SHARE` waits for such a transaction;
    under READ COMMITTED the row's newest version is then locked and the statement's condition checked again on it
    (PostgreSQL manual, 13.2.1 "Read Committed Isolation Level"), so a change committed after the facts were read
    — before this statement or while it waited — fails the version check and nothing is written; a change that
    starts later waits for this statement's commit."""
    row, opening = entry
    params = {"e_" + name: row[name] for name in _ENTRY_COLUMNS}
    params.update(("d_" + name, disclosure[name]) for name in _DISCLOSURE_COLUMNS)
    params["p_person_id"], params["p_version"] = disclosure["person_id"], version
    if opening is not None:
        params["a_actor_id"], params["a_salt"] = opening
    if jti is not None:
        params.update(("j_" + name, value) for name, value in jti.items())
    statement = _RECORD_CHECKED[opening is not None, jti is not None, uow.decision_lock]
    found = statement.first(uow.session, params)
    assert found is not None  # a SELECT without FROM answers one row
    if not found.held:
        return Recorded(None, stale=True)
    if not found.fresh:
        return Recorded(None, replayed=True)
    return Recorded(int(found.id))
