"""Withdrawal is immediate (DESIGN.md invariant 3): a withdrawal racing concurrent disclosures.

Each transaction appends its audit entry after taking the row locks its decision depends on, so the entries'
append ids follow the order in which the decisions were made: a disclosure that read the consent before the
withdrawal holds its share lock until it commits, and the withdrawal appends only once it has the row. After the
withdrawal's entry, no disclosure may be permitted under that consent.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from broker.adapters.orm import AuditEntryRow
from broker.domain.errors import NoLegalBasisError
from broker.services import consents, disclosures
from broker.services.consents import ConsentTerms
from schemas.records.examples import EXAMPLES
from tests.support import Env

TRIALS = 10
DISCLOSERS = 8


def test_no_disclosure_under_a_consent_commits_after_its_withdrawal(env: Env) -> None:
    from broker.demo import caller
    from broker.services import persons, records

    broker = env.broker
    kisalli, health = caller(broker, "kisalli"), caller(broker, "varha-health")
    for trial in range(TRIALS):
        person_id = persons.resolve_person(broker, kisalli, _hetu(trial))
        persons.start_relationship(broker, kisalli, person_id)
        persons.start_relationship(broker, health, person_id)
        records.deposit_record(broker, kisalli, person_id, "work_assessment", EXAMPLES["work_assessment"])
        consent = consents.record_consent(
            broker,
            kisalli,
            person_id,
            ConsentTerms(
                recipients=["varha-health"], categories=["work_assessment"], purposes=["work_capacity_assessment"]
            ),
            method="in_person",
            witness="witness",
        )
        start = threading.Barrier(DISCLOSERS + 1)
        ask = disclosures.DisclosureAsk(person_id, "work_assessment", "work_capacity_assessment")

        def disclose() -> int | None:
            start.wait()
            try:
                return int(disclosures.request_disclosure(broker, health, ask)["audit_entry_id"])
            except NoLegalBasisError:
                return None

        def withdraw() -> None:
            start.wait()
            consents.withdraw_consent(broker, kisalli, consent["consent_id"])

        with ThreadPoolExecutor(DISCLOSERS + 1) as pool:
            permits = [pool.submit(disclose) for _ in range(DISCLOSERS)]
            withdrawal = pool.submit(withdraw)
            withdrawal.result()
            permitted = [f.result() for f in permits]

        with broker.uow(write=False) as uow:
            entries = [
                (entry_id, json.loads(e))
                for entry_id, e in uow.session.execute(
                    select(AuditEntryRow.id, AuditEntryRow.entry)
                    .where(AuditEntryRow.person_id == person_id)
                    .order_by(AuditEntryRow.id)
                )
            ]
        withdrawn_at = next(i for i, e in entries if e["event"] == "consent:withdraw")
        late = [i for i in permitted if i is not None and i > withdrawn_at]
        assert late == [], f"trial {trial}: disclosures {late} decided after the withdrawal {withdrawn_at}"
        # Every disclosure after the withdrawal was refused and logged as a refusal.
        after = [e["event"] for i, e in entries if i > withdrawn_at]
        assert set(after) <= {"disclosure:deny"}


def _hetu(trial: int) -> str:
    from datetime import date

    from broker.domain.hetu import make_hetu

    return make_hetu(date(1980 + trial % 20, 1 + trial % 12, 1 + trial % 28), 900 + trial)
