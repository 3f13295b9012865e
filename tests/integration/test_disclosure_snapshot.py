"""A disclosure decides on a snapshot and records its plan only if planning again would give the same plan
(services/disclosures.py): the person's facts version unchanged, and no validity period begun or ended, nor the date
turned, since the decision — on SQLite checked under the write lock, on PostgreSQL by the one statement that records
the plan (`record_disclosure_if_unchanged`). These tests make each kind of change happen exactly between the plan
and the record, and check that the disclosure then plans again (on PostgreSQL under the person's row lock).

The facts version is counted by triggers on every table a decision reads (broker/adapters/orm.py,
FACTS_VERSION_DDL): every writer of those tables bumps it, whatever code path it takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from broker.demo import caller
from broker.domain.errors import NoLegalBasisError
from broker.services import consents, disclosures, persons, records
from broker.services.consents import ConsentTerms
from policies import decide
from schemas.records.examples import EXAMPLES
from tests.support import Env, new_hetu

ASK = ("work_assessment", "work_capacity_assessment")


def version(env: Env, person_id: str) -> int:
    with env.broker.db.engine.connect() as connection:
        found = connection.execute(text("SELECT facts_version FROM persons WHERE id = :p"), {"p": person_id}).scalar()
        assert isinstance(found, int)
        return found


def a_disclosable_person(env: Env, *, valid_until: Any = None) -> tuple[str, str]:
    """A person Kisälli and the health centre serve, with a work assessment and a consent to disclose it to the
    health centre; (person id, consent id)."""
    broker, kisalli = env.broker, caller(env.broker, "kisalli")
    person_id = persons.resolve_person(broker, kisalli, new_hetu())
    persons.start_relationship(broker, kisalli, person_id)
    persons.start_relationship(broker, caller(broker, "varha-health"), person_id)
    records.deposit_record(broker, kisalli, person_id, "work_assessment", EXAMPLES["work_assessment"])
    terms = ConsentTerms(
        recipients=["varha-health"],
        categories=["work_assessment"],
        purposes=["work_capacity_assessment"],
        valid_until=valid_until,
    )
    consent = consents.record_consent(broker, kisalli, person_id, terms, method="in_person", witness="witness")
    return person_id, consent["consent_id"]


def disclose(env: Env, person_id: str) -> dict[str, Any]:
    ask = disclosures.DisclosureAsk(person_id, *ASK)
    return disclosures.request_disclosure(env.broker, caller(env.broker, "varha-health"), ask)


@pytest.fixture
def between(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], None]], None]]:
    """`between(action)`: run `action` once, right after the next disclosure's plan is made (its audit entry is the
    plan's last step) and before it is recorded. Counts the plans made in `plans`."""
    pending: list[Callable[[], None]] = []
    make = disclosures.new_entry

    def new_entry(**fields: Any) -> Any:
        entry = make(**fields)
        if pending:
            pending.pop()()
        return entry

    monkeypatch.setattr(disclosures, "new_entry", new_entry)
    yield pending.append


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return decide(*args, **kwargs)

    monkeypatch.setattr(disclosures, "decide", counting)
    return made


def test_every_writer_of_a_persons_facts_counts_a_change_and_only_for_that_person(env: Env) -> None:
    broker, kisalli = env.broker, caller(env.broker, "kisalli")
    person_id, consent_id = a_disclosable_person(env)
    other, _ = a_disclosable_person(env)
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "deposit",
            lambda: records.deposit_record(broker, kisalli, person_id, "work_assessment", EXAMPLES["work_assessment"]),
        ),
        ("withdraw", lambda: consents.withdraw_consent(broker, kisalli, consent_id)),
        (
            "mandate",
            lambda: persons.register_representative(
                broker, kisalli, person_id, hetu=new_hetu(), mandate="guardian_personal", valid_until=None
            ),
        ),
        ("end relationship", lambda: persons.end_relationship(broker, kisalli, person_id)),
        ("start relationship", lambda: persons.start_relationship(broker, kisalli, person_id)),
    ]
    untouched = version(env, other)
    for name, step in steps:
        before = version(env, person_id)
        step()
        assert version(env, person_id) > before, name
    with broker.db.engine.begin() as connection:
        before = version(env, person_id)
        connection.execute(text("UPDATE persons SET birth_date = '1990-01-01' WHERE id = :p"), {"p": person_id})
        deleted = connection.execute(text("DELETE FROM records WHERE person_id = :p"), {"p": person_id}).rowcount
    assert deleted == 2
    # SQLite's triggers count once per row changed, PostgreSQL's once per statement (over its transition table).
    assert version(env, person_id) == before + 1 + (deleted if broker.db.sqlite else 1)
    assert version(env, other) == untouched


def test_a_statement_that_changes_several_persons_facts_counts_for_each_of_them(env: Env) -> None:
    first, _ = a_disclosable_person(env)
    second, _ = a_disclosable_person(env)
    third, _ = a_disclosable_person(env)
    before = {p: version(env, p) for p in (first, second, third)}
    with env.broker.db.engine.begin() as connection:
        changed = connection.execute(
            text("UPDATE consents SET status = status WHERE person_id IN (:a, :b)"), {"a": first, "b": second}
        ).rowcount
    assert changed == 2
    assert version(env, first) > before[first]
    assert version(env, second) > before[second]
    assert version(env, third) == before[third]


def test_a_withdrawal_between_the_plan_and_the_record_turns_the_permit_into_a_refusal(
    env: Env, between: Callable[[Callable[[], None]], None], plans: list[int]
) -> None:
    person_id, consent_id = a_disclosable_person(env)
    between(lambda: consents.withdraw_consent(env.broker, caller(env.broker, "kisalli"), consent_id))
    with pytest.raises(NoLegalBasisError):
        disclose(env, person_id)
    assert len(plans) == 2  # planned on the snapshot (a permit), planned again under the lock


def test_a_change_to_another_person_leaves_the_plan_standing(
    env: Env, between: Callable[[Callable[[], None]], None], plans: list[int]
) -> None:
    person_id, _ = a_disclosable_person(env)
    _, other_consent = a_disclosable_person(env)
    between(lambda: consents.withdraw_consent(env.broker, caller(env.broker, "kisalli"), other_consent))
    assert disclose(env, person_id)["records"]
    assert len(plans) == 1


def test_a_consent_that_ends_between_the_plan_and_the_record_is_not_disclosed_under(
    env: Env, between: Callable[[Callable[[], None]], None], plans: list[int]
) -> None:
    person_id, _ = a_disclosable_person(env, valid_until=env.clock.now() + timedelta(seconds=1))
    between(lambda: env.clock.advance(seconds=2))
    with pytest.raises(NoLegalBasisError):
        disclose(env, person_id)
    assert len(plans) == 2


def test_time_that_changes_nothing_leaves_the_plan_standing_and_a_turn_of_the_date_does_not(
    env: Env, between: Callable[[Callable[[], None]], None], plans: list[int]
) -> None:
    person_id, _ = a_disclosable_person(env, valid_until=env.clock.now() + timedelta(days=30))
    between(lambda: env.clock.advance(seconds=2))
    assert disclose(env, person_id)["records"]
    assert len(plans) == 1
    plans.clear()
    midnight = env.clock.now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    env.clock.advance(seconds=(midnight - env.clock.now()).total_seconds() - 0.5)
    between(lambda: env.clock.advance(seconds=1))  # the person's age may have changed
    assert disclose(env, person_id)["records"]
    assert len(plans) == 2
