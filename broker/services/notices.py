"""Statutory notices pushed by one organisation to another (e.g. an interruption notice to the social worker,
703/2023 14 § and 17 §; to the employment authority on request, 380/2023 115 §), and the recipient's inbox.

A notice is a disclosure: the policy must permit the recipient's organisation to receive the category for the
purpose from the sender, the content is projected to the allowed fields before it is stored, and the notice is
logged like any other disclosure.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select

from audit import canonical_json
from broker.adapters.envelope import Sealed, open_sealed, seal
from broker.adapters.orm import ConsentRow, DisclosureRow, NoticeRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import (
    InvalidRequestError,
    NoLegalBasisError,
    NotFoundError,
    UnknownOrganisationError,
    UnknownPurposeError,
)
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry, payload_digest
from broker.services.disclosures import decision_view, load_facts
from broker.services.events import emit
from broker.services.persons import organisation_type
from broker.services.sequencer import require_anchored
from policies import Decision, DecisionRequest, decide
from schemas.records import load_record, project

# Notice kind → (category of its content, default purpose).
NOTICE_KINDS: dict[str, tuple[str, str]] = {
    "interruption_notice": ("interruption_notice", "follow_up"),
    "attendance_report": ("attendance_report", "follow_up"),
    "substance_incident": ("substance_incident", "follow_up"),
    "concern_notification": ("concern_notification", "support_need_assessment"),
}


# Notices the broker itself sends (sender_org is None); partners cannot send these kinds.
CONSENT_WITHDRAWN = "consent_withdrawn"


def _notice_aad(notice_id: str, person_id: str, kind: str) -> bytes:
    return canonical_json({"v": 1, "notice": notice_id, "person": person_id, "kind": kind})


def send_notice(
    broker: Broker,
    caller: Caller,
    person_id: str,
    kind: str,
    recipient: str,
    content: object,
    purpose: str | None = None,
) -> dict[str, Any]:
    if kind not in NOTICE_KINDS:
        raise InvalidRequestError(f"unknown notice kind '{kind}'; one of {', '.join(NOTICE_KINDS)}", field="kind")
    category, default_purpose = NOTICE_KINDS[kind]
    purpose = purpose or default_purpose
    if purpose not in broker.policy.purposes:
        # As for disclosures: a word the policy does not know is a client error, not a denial to log.
        raise UnknownPurposeError(f"unknown purpose '{purpose}'", field="purpose")
    try:
        loaded = load_record(category, content)
    except ValidationError as error:
        raise InvalidRequestError(
            f"content does not match the '{category}' schema",
            field="content",
            extra={"errors": {"content": error.messages}},
        ) from None
    with broker.uow() as uow:
        require_anchored(broker, uow)  # a notice discloses content to another organisation too
        now = broker.clock.now()
        recipient_type = organisation_type(broker, uow, recipient)
        if recipient_type is None:
            raise UnknownOrganisationError(f"unknown organisation '{recipient}'", field="recipient")
        facts = load_facts(uow, person_id, now)
        decision = _decide_for_recipient(
            broker, caller, person_id, recipient, recipient_type, category, purpose, facts, now
        )
        notice_id = new_id("not")
        if not decision.permitted:
            index = append_entry(
                uow,
                event="disclosure:deny",
                now=now,
                caller=caller,
                person_id=person_id,
                category=category,
                purpose=purpose,
                effect="deny",
                policy_version=decision.policy_version,
                detail={
                    "notice_kind": kind,
                    "recipient": recipient,
                    "reasons": sorted({r.code for r in decision.reasons}),
                },
            )
            _disclosure(
                uow,
                notice_id,
                caller,
                person_id,
                recipient,
                category,
                purpose,
                "deny",
                None,
                [],
                None,
                decision.policy_version,
                index,
                now,
            )
            uow.commit()
            raise NoLegalBasisError(
                f"no statute or consent permits sending '{kind}' to '{recipient}' for '{purpose}'",
                extra={"decision": decision_view(decision)},
            )
        projected = project(category, loaded, decision.fields)
        sealed = seal(
            json.dumps(projected, ensure_ascii=False).encode(), _notice_aad(notice_id, person_id, kind), broker.keys
        )
        basis = decision.basis.as_dict() if decision.basis else None
        uow.session.add(
            NoticeRow(
                id=notice_id,
                person_id=person_id,
                kind=kind,
                sender_org=caller.organisation_id,
                recipient_org=recipient,
                basis=basis,
                kek_id=sealed.kek_id,
                wrapped_key=sealed.wrapped_key,
                nonce=sealed.nonce,
                ciphertext=sealed.ciphertext,
                created_at=now,
                acked_at=None,
            )
        )
        payload_sha256 = payload_digest(projected)
        index = append_entry(
            uow,
            event="notice:send",
            now=now,
            caller=caller,
            person_id=person_id,
            category=category,
            purpose=purpose,
            effect="permit",
            basis=basis,
            policy_version=decision.policy_version,
            fields=sorted(projected),
            payload_sha256=payload_sha256,
            detail={"notice_id": notice_id, "kind": kind, "recipient": recipient},
        )
        _disclosure(
            uow,
            notice_id,
            caller,
            person_id,
            recipient,
            category,
            purpose,
            "permit",
            basis,
            sorted(projected),
            payload_sha256,
            decision.policy_version,
            index,
            now,
        )
        emit_notice_delivered(uow, notice_id, person_id, kind, caller.organisation_id, recipient, now)
        uow.commit()
    return {
        "notice_id": notice_id,
        "person_id": person_id,
        "kind": kind,
        "recipient": recipient,
        "basis": basis,
        "fields": sorted(projected),
        "created_at": utc(now),
    }


def _decide_for_recipient(
    broker: Broker,
    caller: Caller,
    person_id: str,
    recipient: str,
    recipient_type: str,
    category: str,
    purpose: str,
    facts: Any,
    now: datetime,
) -> Decision:
    """The recipient's professional who will read the notice is not known yet: the notice may be sent if the
    policy lets some role of the recipient's organisation type receive it."""
    decision: Decision | None = None
    for role in sorted(broker.policy.roles_for(recipient_type)) or [""]:
        request = DecisionRequest(
            requester_org=recipient,
            requester_org_type=recipient_type,
            requester_role=role,
            person_id=person_id,
            category=category,
            purpose=purpose,
            source_org=caller.organisation_id,
            source_org_type=caller.org_type,
        )
        decision = decide(request, facts, broker.policy, now)
        if decision.permitted:
            return decision
    assert decision is not None
    return decision


def _disclosure(
    uow: Any,
    disclosure_id: str,
    caller: Caller,
    person_id: str,
    recipient: str,
    category: str,
    purpose: str,
    effect: str,
    basis: dict[str, Any] | None,
    fields: list[str],
    payload_sha256: str | None,
    policy_version: str,
    index: int,
    now: datetime,
) -> None:
    uow.session.add(
        DisclosureRow(
            id=disclosure_id,
            person_id=person_id,
            kind="notice",
            recipient_org=recipient,
            partner=caller.partner_id,
            category=category,
            purpose=purpose,
            effect=effect,
            basis=basis,
            record_ids=[],
            fields=fields,
            payload_sha256=payload_sha256,
            policy_version=policy_version,
            audit_entry_id=index,
            created_at=now,
        )
    )


def notify_consent_withdrawn(
    broker: Broker, uow: UnitOfWork, consent: ConsentRow, organisations: list[str], now: datetime
) -> list[str]:
    """Tell each organisation that the person withdrew the consent (flows.md: "the recipients named in the consent
    are told"), in the withdrawal's own transaction. The notice says which consent, when, and its categories and
    purposes — the consent's terms, not record content, so it is no disclosure — and is sealed like every notice.
    The sender is the broker (sender_org None). Returns the notice ids."""
    content = {
        "consent_id": consent.id,
        "withdrawn_at": utc(now).isoformat().replace("+00:00", "Z"),
        "categories": list(consent.categories),
        "purposes": list(consent.purposes),
    }
    plaintext = json.dumps(content, ensure_ascii=False).encode()
    ids = []
    for organisation in organisations:
        notice_id = new_id("not")
        sealed = seal(plaintext, _notice_aad(notice_id, consent.person_id, CONSENT_WITHDRAWN), broker.keys)
        uow.session.add(
            NoticeRow(
                id=notice_id,
                person_id=consent.person_id,
                kind=CONSENT_WITHDRAWN,
                sender_org=None,
                recipient_org=organisation,
                basis=None,  # not a disclosure: no legal basis to name
                kek_id=sealed.kek_id,
                wrapped_key=sealed.wrapped_key,
                nonce=sealed.nonce,
                ciphertext=sealed.ciphertext,
                created_at=now,
                acked_at=None,
            )
        )
        emit_notice_delivered(uow, notice_id, consent.person_id, CONSENT_WITHDRAWN, None, organisation, now)
        ids.append(notice_id)
    return ids


def emit_notice_delivered(
    uow: UnitOfWork, notice_id: str, person_id: str, kind: str, sender: str | None, recipient: str, now: datetime
) -> None:
    """The `notice.delivered` event to the organisation in whose inbox the notice has landed, in the transaction
    that puts it there (issue #8). It names the notice, never its content: the recipient reads the inbox, where
    the notice is opened for it."""
    emit(
        uow,
        type="notice.delivered",
        organisations=[recipient],
        person_id=person_id,
        data={"notice_id": notice_id, "kind": kind, "sender": sender},
        now=now,
    )


def read_inbox(
    broker: Broker, caller: Caller, *, include_acknowledged: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    with broker.uow(write=False) as uow:
        stmt = select(NoticeRow).where(NoticeRow.recipient_org == caller.organisation_id)
        if not include_acknowledged:
            stmt = stmt.where(NoticeRow.acked_at.is_(None))
        rows = uow.session.scalars(stmt.order_by(NoticeRow.created_at, NoticeRow.id).limit(limit)).all()
        return [_notice_view(broker, row) for row in rows]


def _notice_view(broker: Broker, row: NoticeRow) -> dict[str, Any]:
    sealed = Sealed(ciphertext=row.ciphertext, nonce=row.nonce, wrapped_key=row.wrapped_key, kek_id=row.kek_id)
    content = json.loads(open_sealed(sealed, _notice_aad(row.id, row.person_id, row.kind), broker.keys))
    return {
        "notice_id": row.id,
        "person_id": row.person_id,
        "kind": row.kind,
        "sender": row.sender_org,
        "basis": row.basis,
        "content": content,
        "created_at": utc(row.created_at),
        "acknowledged_at": utc(row.acked_at) if row.acked_at else None,
    }


def acknowledge_notice(broker: Broker, caller: Caller, notice_id: str) -> dict[str, Any]:
    with broker.uow() as uow:
        row = uow.session.get(NoticeRow, notice_id)
        if row is None or row.recipient_org != caller.organisation_id:
            raise NotFoundError(f"no notice '{notice_id}' in the inbox of '{caller.organisation_id}'")
        now = broker.clock.now()
        if row.acked_at is None:
            row.acked_at = now
            append_entry(
                uow, event="notice:ack", now=now, caller=caller, person_id=row.person_id, detail={"notice_id": row.id}
            )
        uow.commit()
        return _notice_view(broker, row)
