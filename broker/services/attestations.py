"""Withdrawal that reaches every recipient (issue #8, docs/withdrawal.md).

When a person withdraws a consent, every organisation that received their data under it is told, in the
withdrawal's own transaction, by a `consent.withdrawn` event that asks it to attest what it did with the data:
`deleted`, or `retained` under a statute that obliges it to keep the data. The consent no longer being a basis,
the data must be erased unless another ground for keeping it remains (GDPR 17(1)(b), and 17(3)(b) for a legal
obligation to keep it), and the controller must tell each recipient of the withdrawal and the erasure it asks for
(GDPR 19). The person sees each recipient's answer in the portal; an answer missing after its due date
(`Settings.attestation_due_days`, 14 days) is an item of the data-protection officer's anomaly queue
(broker/services/anomalies.py, `attestation_overdue`).

Who is asked: the organisations to which a permitted disclosure was made on this consent — records requested
(`disclosures.kind` "request") or a notice sent (`kind` "notice") — whether the consent was the disclosure's
primary basis or the basis of the records of one of its sources (the log entry's `detail.bases`). The organisation
that recorded the withdrawal through the API is asked too when it received data: it knows of the withdrawal, but
the data it holds is subject to the same duty, and its answer is what the person and the DPO see.

An answer is given once, by the organisation asked; it names a statute from `RETENTION_STATUTES` when the data is
kept, never free text, so that what the person is shown is a law they can look up. An answer after the due date is
accepted and marked late. Each answer is logged (`consent:attest`) with its outcome and statute; the note's
SHA-256 goes into the log, never its text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from broker.adapters.orm import AuditEntryRow, ConsentRow, DisclosureRow, WithdrawalAttestationRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import ConflictError, InvalidRequestError, NotFoundError
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry
from broker.services.events import emit

OUTCOMES = ("deleted", "retained")
#: What `list_attestations` filters by: not yet answered, answered, or every one.
STATUSES = ("open", "answered", "all")
NOTE_MAX = 2000
MAX_LIMIT = 500


class UnknownStatuteError(InvalidRequestError):
    code = "unknown_statute"


@dataclass(frozen=True)
class RetentionStatute:
    """A statute that obliges an organisation to keep client records it holds, named by its number in the Finnish
    statute book (Finlex), the way the policy's references name statutes."""

    id: str
    name: str
    keeps: str


#: The statutes a recipient may name when it keeps data after a withdrawal. Every statute that
#: policies/retention.yaml's periods rest on is here (tests/integration/test_withdrawal_cascade.py holds them in
#: step), and the laws that keep the records the broker's schedule does not cover: patient documents and records
#: that the archives authority orders kept for good. Not legal advice: the controller's DPO reviews this list.
#: The Act on Social Welfare Client Documents (254/2015) is not in it: 703/2023 repealed it from 1.1.2024 and
#: carries the retention periods of social welfare documents in its annex.
RETENTION_STATUTES: Mapping[str, RetentionStatute] = {
    statute.id: statute
    for statute in (
        RetentionStatute(
            "703/2023",
            "Act on the Processing of Client Data in Healthcare and Social Welfare (Client Data Act)",
            "social welfare and health care client documents, patient documents included, for the periods of its "
            "annex (e.g. 10 years after the matter closes for working-age adults' social services)",
        ),
        RetentionStatute(
            "380/2023",
            "Act on the Organisation of Employment Services",
            "employment-service client records, 4 years after the client relationship ends (122 §)",
        ),
        RetentionStatute(
            "381/2023",
            "Act on Multisectoral Joint Services Promoting Employment",
            "multi-sector joint service client records, 4 years after the client relationship ends (12 §)",
        ),
        RetentionStatute(
            "785/1992",
            "Act on the Status and Rights of Patients (Patient Act)",
            "patient documents that a health care professional has made of the care given",
        ),
        RetentionStatute(
            "94/2022",
            "Decree of the Ministry of Social Affairs and Health on Patient Documents",
            "patient documents, as the decree requires them to be made and kept",
        ),
        RetentionStatute(
            "831/1994",
            "Archives Act",
            "documents that the National Archives has ordered to be preserved permanently",
        ),
    )
}


# --- asking: the withdrawal's cascade ------------------------------------------------------------------------------


def announce_withdrawal(
    broker: Broker, uow: UnitOfWork, consent: ConsentRow, now: datetime, *, acting_org: str | None
) -> list[str]:
    """Tell the organisations of a consent just withdrawn in `uow` (the caller holds the person's row lock and
    commits): a `consent.withdrawn` event to the requester and every recipient except `acting_org` (the organisation
    whose professional recorded the withdrawal, None when the person withdrew in the portal), and to every
    organisation that received data under the consent — each of which is also asked to attest, with a
    WithdrawalAttestationRow due in `attestation_due_days`. Returns the organisations asked to attest, sorted."""
    holders = organisations_that_received_data(uow, consent)
    addressed = ({consent.requester_org, *consent.recipients} - {acting_org}) | set(holders)
    due_at = now + timedelta(days=broker.settings.attestation_due_days)
    attestation_ids = {org: new_id("att") for org in holders}
    asked: dict[str, dict[str, Any]] = {
        org: {
            "attestation": {
                "required": True,
                "attestation_id": attestation_ids[org],
                "due_at": due_at,
                "attestation_url": f"{broker.settings.issuer}/api/v1/consents/{consent.id}/attestation",
            }
        }
        for org in holders
    }
    event_ids = emit(
        uow,
        type="consent.withdrawn",
        organisations=addressed,
        person_id=consent.person_id,
        data={
            "consent_id": consent.id,
            "version": consent.version,
            "withdrawn_at": now,
            "attestation": {"required": False},
        },
        now=now,
        per_organisation=asked,
    )
    for org in holders:
        uow.session.add(
            WithdrawalAttestationRow(
                id=attestation_ids[org],
                consent_id=consent.id,
                organisation_id=org,
                person_id=consent.person_id,
                event_id=event_ids[org],
                requested_at=now,
                due_at=due_at,
                outcome=None,
                statute=None,
                note=None,
                answered_at=None,
                answered_by_client=None,
                answered_by_actor=None,
            )
        )
    return holders


def organisations_that_received_data(uow: UnitOfWork, consent: ConsentRow) -> list[str]:
    """The organisations to which a permitted disclosure of the person's data was made on `consent`, sorted.

    A disclosure row names its primary basis only; when records of several sources were decided on different bases
    the log entry holds each in `detail.bases`, so the entries of the person's other permitted requests by the
    consent's recipients are read too — a person's disclosures are few, and this runs once per withdrawal."""
    rows = uow.session.execute(
        select(
            DisclosureRow.recipient_org, DisclosureRow.kind, DisclosureRow.basis, DisclosureRow.audit_entry_id
        ).where(
            DisclosureRow.person_id == consent.person_id,
            DisclosureRow.created_at >= consent.created_at,
            DisclosureRow.effect == "permit",
        )
    ).all()
    found: set[str] = set()
    to_read: dict[int, str] = {}
    for recipient, kind, basis, entry_id in rows:
        if recipient in found:
            continue
        if _names(basis, consent.id):
            found.add(recipient)
        elif kind == "request" and recipient in consent.recipients:
            to_read[entry_id] = recipient
    pending = {entry_id: org for entry_id, org in to_read.items() if org not in found}
    if pending:
        entries = uow.session.execute(
            select(AuditEntryRow.id, AuditEntryRow.entry).where(AuditEntryRow.id.in_(sorted(pending)))
        )
        for entry_id, data in entries:
            detail = json.loads(bytes(data)).get("detail")
            bases = detail.get("bases") if isinstance(detail, dict) else None
            if isinstance(bases, list) and any(_names(basis, consent.id) for basis in bases):
                found.add(pending[entry_id])
    return sorted(found)


def _names(basis: object, consent_id: str) -> bool:
    return isinstance(basis, Mapping) and basis.get("kind") == "consent" and basis.get("consent_id") == consent_id


# --- answering -------------------------------------------------------------------------------------------------------


def check_answer(outcome: object, statute: object, note: object) -> None:
    """Raise InvalidRequestError naming the field when the answer is not one the broker can record."""
    if outcome not in OUTCOMES:
        raise InvalidRequestError(f"outcome must be one of: {', '.join(OUTCOMES)}", field="outcome")
    accepted = ", ".join(RETENTION_STATUTES)
    if outcome == "retained":
        if statute is None or statute == "":
            raise InvalidRequestError(
                f"data retained needs the statute that requires keeping it; one of: {accepted}", field="statute"
            )
        if not isinstance(statute, str) or statute not in RETENTION_STATUTES:
            raise UnknownStatuteError(
                f"statute must be a statute that requires keeping client records, one of: {accepted}",
                field="statute",
                extra={"accepted": list(RETENTION_STATUTES)},
            )
    elif statute is not None:
        raise InvalidRequestError("a statute is named only when the data is retained", field="statute")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        raise InvalidRequestError(f"note must be text of at most {NOTE_MAX} characters", field="note")


def attest(
    broker: Broker,
    caller: Caller,
    consent_id: str,
    *,
    outcome: str,
    statute: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Record the calling organisation's answer for a withdrawn consent: `deleted`, or `retained` under a statute of
    RETENTION_STATUTES. NotFoundError (`unknown_consent`) when the consent is not one the organisation may see,
    (`unknown_attestation`) when the organisation was not asked; ConflictError (`already_attested`) for a second
    answer. An answer after the due date is recorded and marked late."""
    if isinstance(note, str):
        note = note.strip() or None  # a blank note is no note
    check_answer(outcome, statute, note)
    with broker.uow() as uow:
        stmt = select(WithdrawalAttestationRow).where(
            WithdrawalAttestationRow.consent_id == consent_id,
            WithdrawalAttestationRow.organisation_id == caller.organisation_id,
        )
        if uow.postgres:
            # Two answers at once: the second waits here and then finds the first (SQLite serialises writers).
            stmt = stmt.with_for_update()
        row = uow.session.scalars(stmt).one_or_none()
        if row is None:
            consent = uow.session.get(ConsentRow, consent_id)
            if consent is None or caller.organisation_id not in (consent.requester_org, *consent.recipients):
                raise NotFoundError(
                    f"no consent '{consent_id}' visible to organisation '{caller.organisation_id}'",
                    extra={"code": "unknown_consent"},
                )
            raise NotFoundError(
                f"organisation '{caller.organisation_id}' has not been asked to attest for consent '{consent_id}': "
                "it received no data under it, or the consent has not been withdrawn",
                extra={"code": "unknown_attestation"},
            )
        if row.outcome is not None:
            raise ConflictError(
                f"organisation '{caller.organisation_id}' has already attested for consent '{consent_id}' "
                f"({row.outcome})",
                extra={"code": "already_attested"},
            )
        consent = uow.session.get(ConsentRow, consent_id)
        assert consent is not None  # the attestation's foreign key
        now = broker.clock.now()
        late = now > utc(row.due_at)
        row.outcome = outcome
        row.statute = statute
        row.note = note
        row.answered_at = now
        row.answered_by_client = caller.partner_id
        row.answered_by_actor = caller.actor_id
        append_entry(
            uow,
            event="consent:attest",
            now=now,
            caller=caller,
            person_id=row.person_id,
            basis={
                "kind": "consent",
                "consent_id": consent_id,
                "consent_version": consent.version,
            },
            # The note is the organisation's free text and may name people: the log keeps its fingerprint only.
            payload_sha256=hashlib.sha256(note.encode("utf-8")).hexdigest() if note else None,
            detail={
                "attestation_id": row.id,
                "outcome": outcome,
                **({"statute": statute} if statute else {}),
                "late": late,
            },
        )
        uow.session.flush()
        view = attestation_view(row, now)
        uow.commit()
    return view


def list_attestations(
    broker: Broker, caller: Caller, *, status: str = "open", limit: int = 100
) -> list[dict[str, Any]]:
    """The attestations asked of the calling organisation, oldest request first: `open` (not answered), `answered`
    or `all`."""
    if status not in STATUSES:
        raise InvalidRequestError(f"status must be one of: {', '.join(STATUSES)}", field="status")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequestError(f"limit must be from 1 to {MAX_LIMIT}", field="limit")
    with broker.uow(write=False) as uow:
        stmt = select(WithdrawalAttestationRow).where(
            WithdrawalAttestationRow.organisation_id == caller.organisation_id
        )
        if status == "open":
            stmt = stmt.where(WithdrawalAttestationRow.outcome.is_(None))
        elif status == "answered":
            stmt = stmt.where(WithdrawalAttestationRow.outcome.is_not(None))
        rows = uow.session.scalars(
            stmt.order_by(WithdrawalAttestationRow.requested_at, WithdrawalAttestationRow.id).limit(limit)
        ).all()
        now = broker.clock.now()
        return [attestation_view(row, now) for row in rows]


def attestation_status(row: WithdrawalAttestationRow, now: datetime) -> str:
    """`deleted` or `retained` once answered; before that `pending`, or `overdue` from the due date on."""
    if row.outcome is not None:
        return row.outcome
    return "overdue" if now >= utc(row.due_at) else "pending"


def attestation_view(row: WithdrawalAttestationRow, now: datetime) -> dict[str, Any]:
    answered_at = utc(row.answered_at) if row.answered_at else None
    return {
        "attestation_id": row.id,
        "consent_id": row.consent_id,
        "person_id": row.person_id,
        "organisation": row.organisation_id,
        "event_id": row.event_id,
        "requested_at": utc(row.requested_at),
        "due_at": utc(row.due_at),
        "status": attestation_status(row, now),
        "outcome": row.outcome,
        "statute": row.statute,
        "note": row.note,
        "answered_at": answered_at,
        "late": answered_at is not None and answered_at > utc(row.due_at),
    }


# --- what the person sees ------------------------------------------------------------------------------------------


def answers_by_consent(uow: UnitOfWork, consent_ids: Sequence[str], now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Each consent's attestations as the person sees them — organisation id, status, due date, answer date, statute —
    keyed by consent id. The note and who answered (a professional) are not shown: the person is told organisations,
    never staff (703/2023 74 §)."""
    found: dict[str, list[dict[str, Any]]] = {cid: [] for cid in consent_ids}
    if not consent_ids:
        return found
    rows = uow.session.scalars(
        select(WithdrawalAttestationRow)
        .where(WithdrawalAttestationRow.consent_id.in_(list(consent_ids)))
        .order_by(WithdrawalAttestationRow.consent_id, WithdrawalAttestationRow.organisation_id)
    )
    for row in rows:
        view = attestation_view(row, now)
        found[row.consent_id].append(
            {
                key: view[key]
                for key in ("organisation", "status", "due_at", "answered_at", "statute", "late", "requested_at")
            }
        )
    return found


def organisations_of(answers: Iterable[Iterable[Mapping[str, Any]]]) -> set[str]:
    return {answer["organisation"] for group in answers for answer in group}
