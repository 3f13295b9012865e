"""A disclosure reads its person, facts and records in one statement (on PostgreSQL, when it plans under the
person's row lock, the facts and records after the lock), and on PostgreSQL writes its entry, actor and row in one
(services/disclosure_statements.py) — when it decided on a snapshot, one that also checks the person's facts version
and uses the proof's `jti`. What they read and write must be exactly what the statement-per-table path reads and
writes (`disclosures.read_facts`, the records query below, `append_pending` with the disclosure insert): these tests
run all of them on the same persons and compare."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text, update

from broker.adapters.database import Prepared
from broker.adapters.orm import AuditActorRow, AuditEntryRow, DisclosureRow, RecordRow
from broker.demo import caller
from broker.domain.errors import UnknownPersonError
from broker.services import consents, disclosures, persons, records
from broker.services.audit_log import new_entry
from broker.services.consents import ConsentTerms
from broker.services.disclosure_statements import (
    read_facts_and_records,
    read_person_facts_and_records,
    record_disclosure,
    record_disclosure_if_unchanged,
)
from schemas.records.examples import EXAMPLES
from tests.support import Env, new_hetu

CATEGORY, PURPOSE = "work_assessment", "work_capacity_assessment"


_RECORDS = RecordRow.__table__
# The records of a category as disclosures read them before (and as the reads here must give them): oldest first.
_RECORDS_TO_DISCLOSE = Prepared(
    select(
        *(
            _RECORDS.c[name]
            for name in ("id", "person_id", "category", "source_org", "deposited_at", "kek_id", "wrapped_key", "nonce")
        ),
        _RECORDS.c.ciphertext,
    )
    .where(
        _RECORDS.c.person_id == bindparam("person_id"),
        _RECORDS.c.category == bindparam("category"),
        _RECORDS.c.ciphertext.is_not(None),
    )
    .order_by(_RECORDS.c.deposited_at, _RECORDS.c.id)
)


def postgres_only(env: Env) -> None:
    if env.broker.db.sqlite:
        pytest.skip("PostgreSQL's: SQLite has neither a session time zone nor data-modifying CTEs")


def a_person_with_everything(env: Env, *, born: date | None = None) -> str:
    """A person with several consents (active, bounded, withdrawn), mandates (current and ended), relationships
    (active and ended) and records (two sources, another category, one erased)."""
    broker = env.broker
    kisalli, health, social = (caller(broker, org) for org in ("kisalli", "varha-health", "varha-social-work"))
    person_id = persons.resolve_person(broker, kisalli, new_hetu(born))
    for org in (kisalli, health, social):
        persons.start_relationship(broker, org, person_id)
    persons.end_relationship(broker, social, person_id)
    for org in (kisalli, health, kisalli):
        env.clock.advance(seconds=1.5)  # distinct, fractional deposit times
        records.deposit_record(broker, org, person_id, CATEGORY, EXAMPLES[CATEGORY])
    erased = records.deposit_record(broker, kisalli, person_id, CATEGORY, EXAMPLES[CATEGORY])["record_id"]
    with broker.uow() as uow:
        uow.session.execute(update(RecordRow).where(RecordRow.id == erased).values(ciphertext=None))
        uow.commit()
    other = next(c for c in EXAMPLES if c != CATEGORY)
    records.deposit_record(broker, kisalli, person_id, other, EXAMPLES[other])
    now = env.clock.now()
    for recipients, until in (
        (["varha-health"], None),
        (["varha-health", "varha-social-work"], now + timedelta(days=30)),
    ):
        terms = ConsentTerms(recipients=recipients, categories=[CATEGORY], purposes=[PURPOSE], valid_until=until)
        consents.record_consent(broker, kisalli, person_id, terms, method="in_person", witness="witness")
    withdrawn = consents.record_consent(
        broker,
        kisalli,
        person_id,
        ConsentTerms(recipients=["varha-social-work"], categories=[CATEGORY], purposes=[PURPOSE]),
        method="in_person",
        witness="witness",
    )
    consents.withdraw_consent(broker, kisalli, withdrawn["consent_id"], reason="changed mind")
    minor = born is not None and born.year > 2008
    mandates = ("custodian", "custodian") if minor else ("guardian_personal", "continuing_poa_personal")
    for mandate, until in zip(mandates, (now + timedelta(days=90), None), strict=True):
        persons.register_representative(
            broker, kisalli, person_id, hetu=new_hetu(date(1970, 1, 1)), mandate=mandate, valid_until=until
        )
    return person_id


def both_reads(env: Env, person_id: str, now: datetime, *, snapshot: bool = False) -> tuple[Any, Any]:
    ask = disclosures.DisclosureAsk(person_id, CATEGORY, PURPOSE)
    with env.broker.uow(write=False, core=True) as uow:
        facts = disclosures.read_facts(uow, person_id, now)
        rows = _RECORDS_TO_DISCLOSE.rows(uow.session, {"person_id": person_id, "category": CATEGORY})
        one_read, one_rows = disclosures._read_in_one(uow, ask, now, snapshot=snapshot)
    return (facts, rows), (one_read, one_rows)


def comparable(read: Any, rows: list[Any]) -> tuple[Any, ...]:
    facts = read.facts
    # Neither read orders the consents, and a decision does not depend on their order (policies/engine.py `_latest`).
    ordered = sorted(facts.consents, key=lambda c: c.consent_id)
    return (
        read.version,
        read.valid_until,
        facts.relationships,
        facts.person_is_minor,
        facts.has_legal_representative,
        facts.person_age,
        ordered,
        [tuple(row) for row in rows],
    )


@pytest.mark.parametrize("snapshot", [False, True], ids=["locked", "snapshot"])
@pytest.mark.parametrize("born", [None, date(2010, 6, 1)], ids=["adult", "minor"])
def test_the_one_statement_read_gives_what_the_statement_per_table_read_gives(
    env: Env, born: date | None, snapshot: bool
) -> None:
    person_id = a_person_with_everything(env, born=born)
    for later in (timedelta(0), timedelta(days=40), timedelta(days=100)):  # before and after validity periods end
        now = env.clock.now() + later
        separate, together = both_reads(env, person_id, now, snapshot=snapshot)
        assert comparable(*together) == comparable(*separate)
    (read, rows), _ = both_reads(env, person_id, env.clock.now())
    assert len(read.facts.consents) == 3 and len(rows) == 3  # the erased record and the other category left out
    assert read.facts.relationships == frozenset({"kisalli", "varha-health"})
    assert all(isinstance(row.ciphertext, bytes) for row in rows)
    # Times come back aware from PostgreSQL and naive (UTC) from SQLite, whichever way they are read.
    assert all((row.deposited_at.tzinfo is None) == env.broker.db.sqlite for row in rows)


def test_a_person_with_nothing_reads_as_empty(env: Env) -> None:
    person_id = persons.resolve_person(env.broker, caller(env.broker, "kisalli"), new_hetu())
    separate, together = both_reads(env, person_id, env.clock.now())
    assert comparable(*together) == comparable(*separate)
    separate, on_snapshot = both_reads(env, person_id, env.clock.now(), snapshot=True)
    assert comparable(*on_snapshot) == comparable(*separate)
    with env.broker.uow(write=False, core=True) as uow:
        assert read_person_facts_and_records(uow, person_id, CATEGORY)[2:] == ((), [], frozenset(), [])
        if not env.broker.db.sqlite:
            assert read_facts_and_records(uow, person_id, CATEGORY) == ((), [], frozenset(), [])


@pytest.mark.parametrize("snapshot", [False, True], ids=["locked", "snapshot"])
def test_an_unknown_person_is_refused_as_before(env: Env, snapshot: bool) -> None:
    ask = disclosures.DisclosureAsk("per_nobody", CATEGORY, PURPOSE)
    with env.broker.uow(write=False, core=True) as uow, pytest.raises(UnknownPersonError) as refused:
        disclosures._read_in_one(uow, ask, env.clock.now(), snapshot=snapshot)
    with env.broker.uow(write=False, core=True) as uow, pytest.raises(UnknownPersonError) as before:
        disclosures.read_facts(uow, "per_nobody", env.clock.now())
    assert (refused.value.args, refused.value.field) == (before.value.args, before.value.field)


def test_timestamps_read_alike_in_any_session_time_zone(env: Env) -> None:
    postgres_only(env)
    # json_agg writes timestamps with the session's offset; the values must still be the same instants.
    person_id = a_person_with_everything(env)
    with env.broker.uow(write=False) as uow:  # on an ORM session, which can run a SET
        uow.session.execute(text("SET LOCAL TIME ZONE 'Europe/Helsinki'"))
        _, mandates, _, rows = read_facts_and_records(uow, person_id, CATEGORY)
        *_, snapshot_mandates, _, snapshot_rows = read_person_facts_and_records(uow, person_id, CATEGORY)
        expected = _RECORDS_TO_DISCLOSE.rows(uow.session, {"person_id": person_id, "category": CATEGORY})
    assert [row.deposited_at for row in rows] == [row.deposited_at for row in expected]
    assert [row.deposited_at for row in snapshot_rows] == [row.deposited_at for row in expected]
    assert all(m.valid_from.utcoffset() is not None for m in (*mandates, *snapshot_mandates))


def stored(env: Env, disclosure_id: str) -> tuple[Any, ...]:
    with env.broker.uow(write=False) as uow:
        row = uow.session.scalars(select(DisclosureRow).where(DisclosureRow.id == disclosure_id)).one()
        entry = uow.session.get(AuditEntryRow, row.audit_entry_id)
        actor = uow.session.get(AuditActorRow, row.audit_entry_id)
        assert entry is not None
        disclosure = {c.name: getattr(row, c.name) for c in DisclosureRow.__table__.c if c.name != "audit_entry_id"}
        kept = {c.name: getattr(entry, c.name) for c in AuditEntryRow.__table__.c if c.name != "id"}
        return disclosure, kept, (actor.actor_id, actor.salt) if actor else None


def an_entry(env: Env, person_id: str, *, with_actor: bool) -> Any:
    who = caller(env.broker, "varha-health")
    now = datetime(2026, 11, 27, 10, 0, 0, 500_000, tzinfo=UTC)
    return new_entry(
        event="disclosure:permit",
        now=now,
        caller=who if with_actor else None,
        person_id=person_id,
        category=CATEGORY,
        purpose=PURPOSE,
        effect="permit",
        basis={"kind": "consent", "consent_id": "con_x", "version": 1},
        policy_version="p1",
        record_ids=["rec_a", "rec_b"],
        fields=["a", "b"],
        payload_sha256="0" * 64,
        detail={"disclosure_id": "dis_x", "withheld": 0},
    )


def a_row(env: Env, person_id: str, disclosure_id: str) -> dict[str, Any]:
    return {
        "id": disclosure_id,
        "person_id": person_id,
        "kind": "request",
        "recipient_org": "varha-health",
        "partner": caller(env.broker, "varha-health").partner_id,
        "category": CATEGORY,
        "purpose": PURPOSE,
        "effect": "permit",
        "basis": {"kind": "consent", "consent_id": "con_x", "version": 1},
        "record_ids": ["rec_a", "rec_b"],
        "fields": ["a", "b"],
        "payload_sha256": "0" * 64,
        "policy_version": "p1",
        "created_at": datetime(2026, 11, 27, 10, 0, 0, 500_000, tzinfo=UTC),
    }


def the_version(env: Env, person_id: str) -> int:
    with env.broker.db.engine.connect() as connection:
        found = connection.execute(text("SELECT facts_version FROM persons WHERE id = :p"), {"p": person_id}).scalar()
    assert isinstance(found, int)
    return found


def a_jti(env: Env, jti: str) -> dict[str, Any]:
    return {"jkt": "k" * 43, "jti": jti, "expires_at": env.clock.now() + timedelta(minutes=5)}


@pytest.mark.parametrize("with_actor", [True, False])
def test_the_one_statement_writes_store_what_the_separate_inserts_store(env: Env, with_actor: bool) -> None:
    postgres_only(env)
    person_id = a_person_with_everything(env)
    # One entry, written every way: its actor commitment has a fresh salt each time it is built.
    entry = an_entry(env, person_id, with_actor=with_actor)
    written = []
    for way in ("one", "checked", "checked-with-jti", "separate"):
        disclosure_id = f"dis_{way}_{with_actor}"
        row = a_row(env, person_id, disclosure_id)
        if way.startswith("checked"):
            with env.broker.uow(write=False, core=True, autocommit=True) as uow:
                jti = a_jti(env, disclosure_id) if way.endswith("jti") else None
                recorded = record_disclosure_if_unchanged(uow, entry, row, version=the_version(env, person_id), jti=jti)
            assert not (recorded.stale or recorded.replayed) and recorded.index is not None
            index = recorded.index
        else:
            with env.broker.uow(core=True) as uow:
                if way == "one":
                    index = record_disclosure(uow, entry, row)
                else:
                    index = disclosures.append_pending(uow, entry)
                    disclosures._INSERT_DISCLOSURE.execute(uow.session, {**row, "audit_entry_id": index})
                uow.commit()
        disclosure, kept, actor = stored(env, disclosure_id)
        disclosure.pop("id")
        written.append((disclosure, kept, actor))
        assert (actor is not None) == with_actor
        with env.broker.uow(write=False) as uow:
            assert uow.session.scalar(
                select(DisclosureRow.audit_entry_id).where(DisclosureRow.id == disclosure_id)
            ) == (index)
    assert all(one == written[-1] for one in written)
    with env.broker.db.engine.connect() as connection:
        used = connection.execute(text("SELECT jti FROM dpop_proof_jtis WHERE jkt = :k"), {"k": "k" * 43}).scalars()
        assert list(used) == [f"dis_checked-with-jti_{with_actor}"]


def first_consent(env: Env, person_id: str) -> str:
    """One of the person's consents not withdrawn."""
    with env.broker.db.engine.connect() as connection:
        found = connection.execute(
            text("SELECT id FROM consents WHERE person_id = :p AND withdrawn_at IS NULL ORDER BY id"), {"p": person_id}
        ).scalar()
    assert isinstance(found, str)
    return found


def written_rows(env: Env) -> tuple[int, int, int]:
    with env.broker.db.engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("audit_entries", "disclosures", "audit_actors")
        )


def test_the_checked_write_writes_nothing_for_changed_facts_an_unknown_person_or_a_used_proof(env: Env) -> None:
    postgres_only(env)
    person_id = a_person_with_everything(env)
    entry = an_entry(env, person_id, with_actor=True)
    version = the_version(env, person_id)
    with env.broker.uow(write=False, core=True, autocommit=True) as uow:
        record_disclosure_if_unchanged(uow, entry, a_row(env, person_id, "dis_first"), version=version, jti=None)
        record_disclosure_if_unchanged(
            uow, entry, a_row(env, person_id, "dis_used"), version=version, jti=a_jti(env, "used")
        )
    before = written_rows(env)
    consents.withdraw_consent(env.broker, caller(env.broker, "kisalli"), first_consent(env, person_id))
    after_withdrawal = written_rows(env)
    attempts = [
        ("stale", a_row(env, person_id, "dis_stale"), version, None),
        ("stale", a_row(env, person_id, "dis_stale_jti"), version, a_jti(env, "fresh")),
        ("stale", {**a_row(env, "per_nobody", "dis_nobody")}, 0, None),
        ("replayed", a_row(env, person_id, "dis_replay"), the_version(env, person_id), a_jti(env, "used")),
    ]
    with env.broker.uow(write=False, core=True, autocommit=True) as uow:
        for outcome, row, seen, jti in attempts:
            recorded = record_disclosure_if_unchanged(uow, entry, row, version=seen, jti=jti)
            assert (recorded.index, recorded.stale, recorded.replayed) == (
                None,
                outcome == "stale",
                outcome == "replayed",
            ), row["id"]
    assert written_rows(env) == after_withdrawal
    assert after_withdrawal[1] == before[1]  # the withdrawal logged an entry, no disclosure
    with env.broker.db.engine.connect() as connection:
        jtis = connection.execute(text("SELECT jti FROM dpop_proof_jtis WHERE jkt = :k"), {"k": "k" * 43}).scalars()
        assert sorted(jtis) == ["used"]  # the stale attempt's proof was not used
    # Both entries wait for the sequencer (the insert trigger queued them).
    with env.broker.db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_pending")).scalar()
