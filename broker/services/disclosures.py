"""The disclosure transaction (DESIGN.md, issue #2 item 7):

authenticate (done by the caller) → lock the person and load the facts → decide → decrypt → project to the
allowed fields → append the audit entry → commit → respond. Nothing leaves before the commit: a failure
anywhere rolls the whole transaction back and discloses nothing (invariant 2). Denials are committed to the
log too, and only then reported.

On SQLite, where every writer waits for one write lock, the reading and deciding are done first on a snapshot
(a read transaction, no lock) and the write transaction then only checks and records: it commits the plan if the
person's facts are unchanged since the snapshot (`PersonRow.facts_version`, counted by triggers on every table a
decision reads) and no validity period or birthday has turned since the decision; otherwise it plans again under
the lock, as the whole transaction used to. A withdrawal that commits while a disclosure decides therefore still
stops it (invariant 3), and the lock is held for the writes alone — about half the time (docs/benchmarks.md).

On PostgreSQL the same plan is made on a snapshot too — the person, facts and records read by one statement
outside any transaction — and recorded by one statement that is its own transaction: it takes the person's row
`FOR SHARE`, writes only if the facts version is still the one read, and uses the request's DPoP proof `jti` in
the same statement (disclosure_statements.py `record_disclosure_if_unchanged`, which says why that is enough for
invariant 3). Three statements to the server per disclosure, the token's included, where a transaction took seven;
every statement costs CPU on both sides, and on a machine where the two share cores that bounds the rate. A plan
that no longer holds is made again in one transaction under the person's row lock (`FOR SHARE`, which a
withdrawal's `FOR UPDATE` waits for), as is every disclosure inside an ambient transaction (an Idempotency-Key
request, whose stored answer commits with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import insert

from broker.adapters.database import Prepared
from broker.adapters.orm import DisclosureRow
from broker.adapters.uow import UnitOfWork, join_ambient, pending_first_write
from broker.domain.clock import utc
from broker.domain.errors import (
    InvalidRequestError,
    NoLegalBasisError,
    UnknownCategoryError,
    UnknownPurposeError,
)
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import PendingEntry, append_entry, append_pending, new_entry, payload_digest
from broker.services.consents import consent_facts
from broker.services.disclosure_statements import (
    read_facts_and_records,
    read_person_facts_and_records,
    record_disclosure,
    record_disclosure_if_unchanged,
)
from broker.services.persons import (
    active_relationship_orgs,
    age,
    facts_version,
    has_legal_representative,
    is_minor,
    legal_representative,
    lock_person_birth_date,
    organisation_type,
)
from broker.services.records import open_record
from broker.services.sequencer import require_anchored
from policies import ConsentFact, Decision, DecisionRequest, Facts, StatutoryException, decide
from schemas.records import project

_INSERT_DISCLOSURE = Prepared(insert(DisclosureRow.__table__))


@dataclass(frozen=True)
class DisclosureAsk:
    person_id: str
    category: str
    purpose: str
    exception: StatutoryException | None = None


def _validate(broker: Broker, ask: DisclosureAsk) -> None:
    if ask.category not in broker.policy.categories:
        raise UnknownCategoryError(f"unknown category '{ask.category}'", field="category")
    if ask.purpose not in broker.policy.purposes:
        raise UnknownPurposeError(f"unknown purpose '{ask.purpose}'", field="purpose")


def load_facts(uow: UnitOfWork, person_id: str, now: datetime, *, exclusive: bool = False) -> Facts:
    return read_facts(uow, person_id, now, exclusive=exclusive).facts


@dataclass(frozen=True)
class FactsRead:
    facts: Facts
    version: int  # PersonRow.facts_version when they were read (SQLite)
    # The first moment after the reading when the same rows may give other facts or another decision: a consent's
    # or a mandate's validity begins or ends, or the date turns (the person's age; `age` counts in whole UTC days).
    valid_until: datetime


def read_facts(uow: UnitOfWork, person_id: str, now: datetime, *, exclusive: bool = False) -> FactsRead:
    born, version = lock_person_birth_date(uow, person_id, exclusive=exclusive)
    minor = is_minor(born, now)
    consents = consent_facts(uow, person_id)
    represented, mandate_turns = has_legal_representative(uow, person_id, now, minor=minor)
    relationships = active_relationship_orgs(uow, person_id)
    return _facts_read(born, version, consents, represented, mandate_turns, relationships, now)


def _facts_read(
    born: date,
    version: int,
    consents: tuple[ConsentFact, ...],
    represented: bool,
    mandate_turns: datetime | None,
    relationships: frozenset[str],
    now: datetime,
) -> FactsRead:
    turns = [
        datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=UTC),
        *(t for c in consents for t in (c.valid_from, c.valid_until) if t is not None and t > now),
        *([mandate_turns] if mandate_turns is not None else []),
    ]
    facts = Facts(
        relationships=relationships,
        consents=consents,
        person_is_minor=is_minor(born, now),
        has_legal_representative=represented,
        person_age=age(born, now),
    )
    return FactsRead(facts, version, min(turns))


def _request(caller: Caller, ask: DisclosureAsk, source_org: str | None, source_type: str | None) -> DecisionRequest:
    return DecisionRequest(
        requester_org=caller.organisation_id,
        requester_org_type=caller.org_type,
        requester_role=caller.actor_role,
        person_id=ask.person_id,
        category=ask.category,
        purpose=ask.purpose,
        source_org=source_org,
        source_org_type=source_type,
        exception=ask.exception,
    )


def decision_view(decision: Decision) -> dict[str, Any]:
    return {
        "effect": decision.effect,
        "basis": decision.basis.as_dict() if decision.basis else None,
        "fields": list(decision.fields),
        "obligations": list(decision.obligations),
        "reasons": [
            {"rule": r.rule_id, "applies": r.applies, "code": r.code, "detail": r.detail} for r in decision.reasons
        ],
        "policy_version": decision.policy_version,
    }


@dataclass
class _Plan:
    """What a disclosure will record and answer, worked out from one reading of the facts and records: everything
    but the writes."""

    now: datetime
    read: FactsRead
    disclosure_id: str
    effect: str
    decision: Decision  # the primary one: the first permit, or the denial
    disclosed: list[dict[str, Any]]
    entry: PendingEntry  # the audit entry
    basis: dict[str, Any] | None = None
    fields: list[str] = field(default_factory=list)
    payload_sha256: str | None = None

    def in_force(self, now: datetime) -> bool:
        """Whether time alone leaves the plan as planning at `now` would make it: no validity period begun or
        ended, nor the date turned, since it was made (its facts unchanged is for the caller to check)."""
        return self.now <= now < self.read.valid_until


def request_disclosure(broker: Broker, caller: Caller, ask: DisclosureAsk) -> dict[str, Any]:
    _validate(broker, ask)
    if join_ambient(broker.db) is None:
        if broker.db.sqlite:
            # Plan on a snapshot without the write lock; record under it if the plan still holds (the module's doc).
            # The snapshot is one statement's, so it needs no transaction around it.
            with broker.uow(write=False, core=True, autocommit=True) as uow:
                require_anchored(broker, uow)
                plan = _plan(broker, caller, ask, uow, broker.clock.now(), snapshot=True)
            with broker.uow(core=True) as uow:
                if not _still_holds(uow, ask, plan, broker.clock.now()):
                    plan = _plan(broker, caller, ask, uow, broker.clock.now())
                return _record(uow, caller, ask, plan)
        answer = _plan_and_record_in_two_statements(broker, caller, ask)
        if answer is not None:
            return answer
    # Inside an ambient transaction (an Idempotency-Key request), or on PostgreSQL when the facts changed since the
    # snapshot: decide and record in one transaction, under the person's row lock.
    with broker.uow(core=True) as uow:
        require_anchored(broker, uow)
        plan = _plan(broker, caller, ask, uow, broker.clock.now())
        return _record(uow, caller, ask, plan)


def _plan_and_record_in_two_statements(broker: Broker, caller: Caller, ask: DisclosureAsk) -> dict[str, Any] | None:
    """PostgreSQL: plan on a snapshot — the person, facts and records read by one statement outside any transaction
    — and record the plan by one statement that is its own transaction, written only if the person's facts version
    is still the one read (`record_disclosure_if_unchanged`), with the request's proof `jti` used in it. None when
    the plan no longer holds (the facts changed, or a validity period began or ended, or the date turned, since):
    the caller then plans again under the row lock. Two statements to the server, besides the token's, instead of
    six (the module's doc; docs/benchmarks.md)."""
    pending = pending_first_write()
    if pending is not None and pending.jti is None:
        return None  # work for the first write that one statement cannot fold in
    with broker.uow(write=False, core=True, autocommit=True) as uow:
        require_anchored(broker, uow)
        plan = _plan(broker, caller, ask, uow, broker.clock.now(), snapshot=True)
        if not plan.in_force(broker.clock.now()):
            return None
        jti = pending.jti if pending is not None else None
        recorded = record_disclosure_if_unchanged(
            uow, plan.entry, _disclosure_row(caller, ask, plan), version=plan.read.version, jti=jti
        )
    if recorded.stale:
        return None
    if pending is not None:
        if recorded.replayed:
            assert pending.replayed is not None  # set with `jti`
            raise pending.replayed()
        pending.done = True
    assert recorded.index is not None
    return _answer(caller, ask, plan, recorded.index)


def _still_holds(uow: UnitOfWork, ask: DisclosureAsk, plan: _Plan, now: datetime) -> bool:
    """Whether a plan made on an earlier snapshot is what planning now would give: the person's facts and records
    unchanged since (their version) and no validity period begun or ended, nor the date turned, in between."""
    return facts_version(uow, ask.person_id) == plan.read.version and plan.in_force(now)


def _plan(
    broker: Broker, caller: Caller, ask: DisclosureAsk, uow: UnitOfWork, now: datetime, *, snapshot: bool = False
) -> _Plan:
    """Read the facts and the records, decide for each source, open and project what is permitted, and build the
    audit entry. Writes nothing. `snapshot`: read without the person's row lock, for a plan recorded only if the
    person's facts version is still the one read."""
    read, records = _read_in_one(uow, ask, now, snapshot=snapshot)
    decisions: dict[str, Decision] = {}
    for source in sorted({r.source_org for r in records}):
        request = _request(caller, ask, source, organisation_type(broker, uow, source))
        decisions[source] = decide(request, read.facts, broker.policy, now)
    if not records:
        # Nothing to disclose; still decide, so that the answer (permit with no records, or a denial)
        # does not reveal whether records exist.
        decisions[""] = decide(_request(caller, ask, None, None), read.facts, broker.policy, now)
    permitted = {src: d for src, d in decisions.items() if d.permitted}
    disclosure_id = new_id("dis")
    about = {"caller": caller, "person_id": ask.person_id, "category": ask.category, "purpose": ask.purpose}
    if not permitted:
        denial = next(iter(decisions.values()))
        entry = new_entry(
            event="disclosure:deny",
            now=now,
            effect="deny",
            policy_version=denial.policy_version,
            detail={"disclosure_id": disclosure_id, "reasons": sorted({r.code for r in denial.reasons})},
            **about,
        )
        return _Plan(now, read, disclosure_id, "deny", denial, [], entry)
    disclosed = []
    for row in records:
        decision = permitted.get(row.source_org)
        if decision is None:
            continue
        disclosed.append(
            disclosed_item(row.id, row.category, row.source_org, row.deposited_at, decision, open_record(broker, row))
        )
    primary = next(iter(permitted.values()))
    fields = sorted({f for item in disclosed for f in item["content"]})
    payload_sha256 = payload_digest(disclosed)
    basis = primary.basis.as_dict() if primary.basis else None
    bases = [d.basis.as_dict() for d in permitted.values() if d.basis]
    entry = new_entry(
        event="disclosure:permit",
        now=now,
        effect="permit",
        basis=basis,
        policy_version=primary.policy_version,
        record_ids=[r["record_id"] for r in disclosed],
        fields=fields,
        payload_sha256=payload_sha256,
        detail={
            "disclosure_id": disclosure_id,
            "withheld": len(records) - len(disclosed),
            **({"bases": bases} if len(bases) > 1 else {}),
        },
        **about,
    )
    return _Plan(now, read, disclosure_id, "permit", primary, disclosed, entry, basis, fields, payload_sha256)


def _read_in_one(uow: UnitOfWork, ask: DisclosureAsk, now: datetime, *, snapshot: bool) -> tuple[FactsRead, list[Any]]:
    """`read_facts` and the records of the asked category in fewer statements (services/disclosure_statements.py):
    on PostgreSQL, unless on a snapshot, the person's row lock, then everything else; otherwise one."""
    if uow.postgres and not snapshot:
        born, version = lock_person_birth_date(uow, ask.person_id, exclusive=False)
        consents, mandates, relationships, records = read_facts_and_records(uow, ask.person_id, ask.category)
    else:
        born, version, consents, mandates, relationships, records = read_person_facts_and_records(
            uow, ask.person_id, ask.category
        )
    represented, mandate_turns = legal_representative(mandates, now, minor=is_minor(born, now))
    return _facts_read(born, version, consents, represented, mandate_turns, relationships, now), records


def disclosed_item(
    record_id: str, category: str, source: str, deposited_at: datetime, decision: Decision, content: dict[str, Any]
) -> dict[str, Any]:
    """One record as a disclosure answers it (and as its payload digest covers it): the record's content projected
    to the fields `decision` allows. `broker bench seed` builds its disclosures' payloads with it too."""
    return {
        "record_id": record_id,
        "category": category,
        "source_organisation": source,
        "deposited_at": utc(deposited_at).isoformat().replace("+00:00", "Z"),
        "basis": decision.basis.as_dict() if decision.basis else None,
        "content": project(category, content, decision.fields),
    }


def _record(uow: UnitOfWork, caller: Caller, ask: DisclosureAsk, plan: _Plan) -> dict[str, Any]:
    """Append the plan's audit entry and store the disclosure, commit, and answer (or, for a denial, raise)."""
    row = _disclosure_row(caller, ask, plan)
    if uow.postgres:
        index = record_disclosure(uow, plan.entry, row)  # one statement (services/disclosure_statements.py)
    else:
        index = append_pending(uow, plan.entry)
        _INSERT_DISCLOSURE.execute(uow.session, {**row, "audit_entry_id": index})
    uow.commit()
    return _answer(caller, ask, plan, index)


def _disclosure_row(caller: Caller, ask: DisclosureAsk, plan: _Plan) -> dict[str, Any]:
    """The disclosure's row, but for its audit entry's append id."""
    return {
        "id": plan.disclosure_id,
        "person_id": ask.person_id,
        "kind": "request",
        "recipient_org": caller.organisation_id,
        "partner": caller.partner_id,
        "category": ask.category,
        "purpose": ask.purpose,
        "effect": plan.effect,
        "basis": plan.basis,
        "record_ids": [r["record_id"] for r in plan.disclosed],
        "fields": plan.fields,
        "payload_sha256": plan.payload_sha256,
        "policy_version": plan.decision.policy_version,
        "created_at": plan.now,
    }


def _answer(caller: Caller, ask: DisclosureAsk, plan: _Plan, index: int) -> dict[str, Any]:
    """The answer to a recorded plan, or, for a denial, the refusal."""
    decision, disclosed = plan.decision, plan.disclosed
    if plan.effect == "deny":
        raise NoLegalBasisError(
            f"no statute or consent permits '{caller.org_type}' to receive '{ask.category}' for '{ask.purpose}'",
            extra={"disclosure_id": plan.disclosure_id, "decision": decision_view(decision)},
        )
    return {
        "disclosure_id": plan.disclosure_id,
        "person_id": ask.person_id,
        "category": ask.category,
        "purpose": ask.purpose,
        "basis": plan.basis,
        "obligations": list(decision.obligations),
        "policy_version": decision.policy_version,
        "audit_entry_id": index,
        "records": disclosed,
    }


def query_decision(broker: Broker, caller: Caller, ask: DisclosureAsk) -> dict[str, Any]:
    """A dry run: would the request be permitted, on what basis? Audited; discloses nothing, and does not
    reveal whether the person has records of the category."""
    _validate(broker, ask)
    with broker.uow(core=True) as uow:
        now = broker.clock.now()
        facts = load_facts(uow, ask.person_id, now)
        decision = decide(_request(caller, ask, None, None), facts, broker.policy, now)
        append_entry(
            uow,
            event="decision:query",
            now=now,
            caller=caller,
            person_id=ask.person_id,
            category=ask.category,
            purpose=ask.purpose,
            effect=decision.effect,
            basis=decision.basis.as_dict() if decision.basis else None,
            policy_version=decision.policy_version,
        )
        uow.commit()
    return decision_view(decision)


def parse_exception(value: dict[str, Any] | None) -> StatutoryException | None:
    if value is None:
        return None
    try:
        return StatutoryException(ground=value["ground"], justification=value["justification"])
    except KeyError as missing:
        raise InvalidRequestError(f"exception.{missing.args[0]} is required", field="exception") from None
