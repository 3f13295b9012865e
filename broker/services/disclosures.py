"""The disclosure transaction (DESIGN.md, issue #2 item 7):

authenticate (done by the caller) → lock the person and load the facts → decide → decrypt → project to the
allowed fields → append the audit entry → commit → respond. Nothing leaves before the commit: a failure
anywhere rolls the whole transaction back and discloses nothing (invariant 2). Denials are committed to the
log too, and only then reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select

from broker.adapters.database import Prepared
from broker.adapters.orm import DisclosureRow, RecordRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import (
    InvalidRequestError,
    NoLegalBasisError,
    UnknownCategoryError,
    UnknownPurposeError,
)
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry, payload_digest
from broker.services.consents import consent_facts
from broker.services.persons import (
    active_relationship_orgs,
    age,
    has_legal_representative,
    is_minor,
    lock_person_birth_date,
    organisation_type,
)
from broker.services.records import open_record
from broker.services.sequencer import require_anchored
from policies import Decision, DecisionRequest, Facts, StatutoryException, decide
from schemas.records import project

_RECORDS = RecordRow.__table__
# Prebuilt Core statements for the disclosure transaction: built and compiled once, no ORM objects per request.
_RECORDS_TO_DISCLOSE = Prepared(
    select(
        _RECORDS.c.id,
        _RECORDS.c.person_id,
        _RECORDS.c.category,
        _RECORDS.c.source_org,
        _RECORDS.c.deposited_at,
        _RECORDS.c.kek_id,
        _RECORDS.c.wrapped_key,
        _RECORDS.c.nonce,
        _RECORDS.c.ciphertext,
    )
    .where(
        _RECORDS.c.person_id == bindparam("person_id"),
        _RECORDS.c.category == bindparam("category"),
        _RECORDS.c.ciphertext.is_not(None),
    )
    .order_by(_RECORDS.c.deposited_at, _RECORDS.c.id)
)
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
    born = lock_person_birth_date(uow, person_id, exclusive=exclusive)
    minor = is_minor(born, now)
    return Facts(
        relationships=active_relationship_orgs(uow, person_id),
        consents=consent_facts(uow, person_id),
        person_is_minor=minor,
        has_legal_representative=has_legal_representative(uow, person_id, now, minor=minor),
        person_age=age(born, now),
    )


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


def request_disclosure(broker: Broker, caller: Caller, ask: DisclosureAsk) -> dict[str, Any]:
    _validate(broker, ask)
    with broker.uow(core=True) as uow:
        require_anchored(broker, uow)
        now = broker.clock.now()
        facts = load_facts(uow, ask.person_id, now)
        records = _RECORDS_TO_DISCLOSE.rows(uow.session, {"person_id": ask.person_id, "category": ask.category})
        decisions: dict[str, Decision] = {}
        for source in sorted({r.source_org for r in records}):
            request = _request(caller, ask, source, organisation_type(broker, uow, source))
            decisions[source] = decide(request, facts, broker.policy, now)
        if not records:
            # Nothing to disclose; still decide, so that the answer (permit with no records, or a denial)
            # does not reveal whether records exist.
            decisions[""] = decide(_request(caller, ask, None, None), facts, broker.policy, now)
        permitted = {src: d for src, d in decisions.items() if d.permitted}
        disclosure_id = new_id("dis")
        if not permitted:
            denial = next(iter(decisions.values()))
            index = append_entry(
                uow,
                event="disclosure:deny",
                now=now,
                caller=caller,
                person_id=ask.person_id,
                category=ask.category,
                purpose=ask.purpose,
                effect="deny",
                policy_version=denial.policy_version,
                detail={"disclosure_id": disclosure_id, "reasons": sorted({r.code for r in denial.reasons})},
            )
            _store(uow, disclosure_id, caller, ask, "deny", None, [], [], None, denial.policy_version, index, now)
            uow.commit()
            raise NoLegalBasisError(
                f"no statute or consent permits '{caller.org_type}' to receive '{ask.category}' for '{ask.purpose}'",
                extra={"disclosure_id": disclosure_id, "decision": decision_view(denial)},
            )
        primary = next(iter(permitted.values()))
        disclosed = []
        for row in records:
            decision = permitted.get(row.source_org)
            if decision is None:
                continue
            disclosed.append(
                {
                    "record_id": row.id,
                    "category": row.category,
                    "source_organisation": row.source_org,
                    "deposited_at": utc(row.deposited_at).isoformat().replace("+00:00", "Z"),
                    "basis": decision.basis.as_dict() if decision.basis else None,
                    "content": project(row.category, open_record(broker, row), decision.fields),
                }
            )
        fields = sorted({f for item in disclosed for f in item["content"]})
        payload_sha256 = payload_digest(disclosed)
        basis = primary.basis.as_dict() if primary.basis else None
        bases = [d.basis.as_dict() for d in permitted.values() if d.basis]
        index = append_entry(
            uow,
            event="disclosure:permit",
            now=now,
            caller=caller,
            person_id=ask.person_id,
            category=ask.category,
            purpose=ask.purpose,
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
        )
        _store(
            uow,
            disclosure_id,
            caller,
            ask,
            "permit",
            basis,
            [r["record_id"] for r in disclosed],
            fields,
            payload_sha256,
            primary.policy_version,
            index,
            now,
        )
        uow.commit()
    return {
        "disclosure_id": disclosure_id,
        "person_id": ask.person_id,
        "category": ask.category,
        "purpose": ask.purpose,
        "basis": basis,
        "obligations": list(primary.obligations),
        "policy_version": primary.policy_version,
        "audit_entry_id": index,
        "records": disclosed,
    }


def _store(
    uow: UnitOfWork,
    disclosure_id: str,
    caller: Caller,
    ask: DisclosureAsk,
    effect: str,
    basis: dict[str, Any] | None,
    record_ids: list[str],
    fields: list[str],
    payload_sha256: str | None,
    policy_version: str,
    index: int,
    now: datetime,
) -> None:
    _INSERT_DISCLOSURE.execute(
        uow.session,
        {
            "id": disclosure_id,
            "person_id": ask.person_id,
            "kind": "request",
            "recipient_org": caller.organisation_id,
            "partner": caller.partner_id,
            "category": ask.category,
            "purpose": ask.purpose,
            "effect": effect,
            "basis": basis,
            "record_ids": record_ids,
            "fields": fields,
            "payload_sha256": payload_sha256,
            "policy_version": policy_version,
            "audit_entry_id": index,
            "created_at": now,
        },
    )


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
