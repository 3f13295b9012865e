"""Changes to one person's facts made at the same time all go through: each takes the person's row `FOR UPDATE`
before it changes anything (services/persons.py `lock_person`), so the update of the person's facts version that
the change's triggers then make waits for no one. A change that took the row only `FOR SHARE` would, with another
such change holding it too, deadlock at that update on PostgreSQL (one of the two refused as a conflict). Retention's
erasures, which change several persons' facts in one transaction, are raced in test_retention.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from broker.demo import caller
from broker.services import consents, persons, records
from broker.services.consents import ConsentTerms
from schemas.records.examples import EXAMPLES
from tests.support import Env, new_hetu

AT_ONCE = 8


def at_once(changes: list[Callable[[], object]]) -> list[object]:
    """Run the changes in threads released together; every one must succeed."""
    start = threading.Barrier(len(changes))

    def run(change: Callable[[], object]) -> object:
        start.wait(timeout=10)
        return change()

    with ThreadPoolExecutor(len(changes)) as pool:
        return [future.result() for future in [pool.submit(run, change) for change in changes]]


def version(env: Env, person_id: str) -> int:
    with env.broker.db.engine.connect() as connection:
        found = connection.execute(text("SELECT facts_version FROM persons WHERE id = :p"), {"p": person_id}).scalar()
    assert isinstance(found, int)
    return found


def test_deposits_for_one_person_at_once_all_go_through_and_each_counts(env: Env) -> None:
    broker = env.broker
    kisalli, health = caller(broker, "kisalli"), caller(broker, "varha-health")
    person_id = persons.resolve_person(broker, kisalli, new_hetu())
    persons.start_relationship(broker, kisalli, person_id)
    persons.start_relationship(broker, health, person_id)
    for _ in range(3):
        before = version(env, person_id)
        deposited = at_once(
            [
                lambda who=who: records.deposit_record(
                    broker, who, person_id, "work_assessment", EXAMPLES["work_assessment"]
                )
                for who in [kisalli, health] * (AT_ONCE // 2)
            ]
        )
        assert len({d["record_id"] for d in deposited}) == AT_ONCE  # type: ignore[index]
        assert version(env, person_id) == before + AT_ONCE


def test_different_changes_to_one_person_at_once_all_go_through(env: Env) -> None:
    broker = env.broker
    kisalli = caller(broker, "kisalli")
    person_id = persons.resolve_person(broker, kisalli, new_hetu())
    persons.start_relationship(broker, kisalli, person_id)
    terms = ConsentTerms(
        recipients=["varha-health"], categories=["work_assessment"], purposes=["work_capacity_assessment"]
    )
    granted = consents.record_consent(broker, kisalli, person_id, terms, method="in_person", witness="witness")
    before = version(env, person_id)
    at_once(
        [
            lambda: records.deposit_record(broker, kisalli, person_id, "work_assessment", EXAMPLES["work_assessment"]),
            lambda: records.deposit_record(broker, kisalli, person_id, "work_assessment", EXAMPLES["work_assessment"]),
            lambda: consents.record_consent(broker, kisalli, person_id, terms, method="in_person", witness="witness"),
            lambda: consents.withdraw_consent(broker, kisalli, granted["consent_id"]),
            lambda: persons.start_relationship(broker, caller(broker, "varha-health"), person_id),
            lambda: persons.register_representative(
                broker, kisalli, person_id, hetu=new_hetu(), mandate="guardian_personal", valid_until=None
            ),
        ]
    )
    assert version(env, person_id) >= before + 6
