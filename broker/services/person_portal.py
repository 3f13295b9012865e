"""The client portal's use cases (docs/portal.md): what a person — or someone acting for them under a registered
mandate — sees about themself, and the consents they grant, refuse and withdraw.

Every function takes a `PortalUser` and looks each object up together with the person whose data is shown
(`user.subject_id`): another person's request, consent or log entry is NotFoundError (404, never 403), so that its
existence is not revealed. A representative's mandate is checked again on every call, so it stops working the
moment it ends (the minor turns 18, the registration's end date passes) whatever a portal session still holds.

Every consent change is audited in the transaction that makes it, with who acted — the person, or the
representative and for whom — and recorded in the consent's history. What the person is shown names organisations,
never the professional who acted (703/2023 74 §): no staff id, no `recorded_by_actor`, no partner system. Values
are plain JSON-ready dicts; times are aware UTC datetimes, except in `my_data`, which is the download and uses
ISO 8601 strings.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.orm import Session

from broker.adapters.envelope import Sealed, open_hetu
from broker.adapters.orm import (
    ConsentEventRow,
    ConsentRequestRow,
    ConsentRow,
    ConsentTextRow,
    DisclosureRow,
    OrganisationRow,
    PersonRow,
    RecordRow,
    RelationshipRow,
    RepresentationRow,
)
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import ConflictError, ConsentNotActiveError, InvalidRequestError, NotFoundError
from broker.domain.model import PortalUser
from broker.services import Broker
from broker.services.attestations import announce_withdrawal, answers_by_consent, organisations_of
from broker.services.audit_log import append_entry
from broker.services.consent_texts import LANGUAGES, render_consent_text
from broker.services.consents import ConsentTerms, create_consent, emit_consent_granted, record_withdrawal
from broker.services.events import emit
from broker.services.notices import notify_consent_withdrawn
from broker.services.persons import (
    MANDATES,
    active_relationship_orgs,
    age,
    find_person_by_hetu,
    is_minor,
    lock_person,
    mandate_covers,
    representation_active,
)

REQUEST_STATUSES = ("pending", "granted", "refused", "expired")
EFFECTS = ("permit", "deny")
MAX_PER_PAGE = 100
LATEST_DISCLOSURES = 5
CONSENT_BASES = ("consent", "consent_or_exception")


# --- who is using the portal ---------------------------------------------------------------------------------


def person_for_login(broker: Broker, hetu: str) -> str | None:
    """The id of the person with this identity code (as the identity provider asserted it), found through its keyed
    hash; None when the broker knows no such person. Never creates a person. A malformed code raises
    InvalidHetuError, whose message never repeats it."""
    with broker.uow(write=False) as uow:
        return find_person_by_hetu(broker, uow, hetu)


def representations_of(broker: Broker, representative_id: str) -> list[dict[str, Any]]:
    """The persons the representative may act for now: registered, within its dates, and a mandate that covers the
    person at their age today. Sorted by name."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        rows = uow.session.execute(
            select(RepresentationRow, PersonRow.display_name, PersonRow.birth_date)
            .join(PersonRow, PersonRow.id == RepresentationRow.person_id)
            .where(RepresentationRow.representative_id == representative_id)
        ).all()
    found: dict[str, dict[str, Any]] = {}
    for row, name, born in sorted(rows, key=lambda r: (_mandate_rank(r[0].mandate), r[0].id)):
        if row.person_id in found or row.person_id == representative_id:
            continue
        if representation_active(row.valid_from, row.valid_until, now) and mandate_covers(
            row.mandate, minor=is_minor(born, now)
        ):
            found[row.person_id] = {
                "person_id": row.person_id,
                "name": name,
                "mandate": row.mandate,
                "valid_until": utc(row.valid_until) if row.valid_until else None,
            }
    return sorted(found.values(), key=lambda r: (r["name"] or "", r["person_id"]))


def _mandate_rank(mandate: str) -> int:
    return MANDATES.index(mandate) if mandate in MANDATES else len(MANDATES)


def portal_user(
    broker: Broker,
    login_person_id: str | None,
    *,
    acting_for: str | None = None,
    roles: Iterable[str] = frozenset(),
    language: str = "fi",
) -> PortalUser:
    """The portal user for a login. `acting_for` (another person's id) must be covered by an active representation
    whose mandate is valid for that person now; otherwise NotFoundError."""
    _check_language(language)
    roles = frozenset(roles)
    if acting_for is None or acting_for == login_person_id:
        return PortalUser(login_person_id, login_person_id, roles=roles, language=language)
    mandate = None
    if login_person_id is not None:
        with broker.uow(write=False) as uow:
            mandate = _mandate(uow, login_person_id, acting_for, broker.clock.now())
    if mandate is None:
        raise NotFoundError("no mandate to act for this person", extra={"code": "unknown_person"})
    return PortalUser(
        login_person_id,
        acting_for,
        representative_id=login_person_id,
        mandate=mandate,
        roles=roles,
        language=language,
    )


def _mandate(uow: UnitOfWork, representative_id: str, person_id: str, now: datetime) -> str | None:
    """The mandate under which `representative_id` may act for `person_id` now, or None."""
    born = uow.session.scalar(select(PersonRow.birth_date).where(PersonRow.id == person_id))
    if born is None or representative_id == person_id:
        return None
    minor = is_minor(born, now)
    rows = uow.session.scalars(
        select(RepresentationRow).where(
            RepresentationRow.person_id == person_id, RepresentationRow.representative_id == representative_id
        )
    )
    valid = {
        row.mandate
        for row in rows
        if representation_active(row.valid_from, row.valid_until, now) and mandate_covers(row.mandate, minor=minor)
    }
    return next((m for m in MANDATES if m in valid), None)


def _acting(uow: UnitOfWork, user: PortalUser, now: datetime) -> tuple[str, str | None]:
    """The person whose data `user` sees, and the mandate they act under (None for the person themself), checked
    against the database now. Anything else is NotFoundError."""
    subject = user.subject_id
    if subject is None or user.login_person_id is None:
        raise NotFoundError("no person's data to show", extra={"code": "unknown_person"})
    if user.representative_id is None:
        if subject != user.login_person_id:
            raise NotFoundError("no person's data to show", extra={"code": "unknown_person"})
        return subject, None
    if user.representative_id != user.login_person_id:
        raise NotFoundError("no person's data to show", extra={"code": "unknown_person"})
    mandate = _mandate(uow, user.representative_id, subject, now)
    if mandate is None:
        raise NotFoundError("no mandate to act for this person", extra={"code": "unknown_person"})
    return subject, mandate


def _actor(user: PortalUser, mandate: str | None) -> tuple[str, str]:
    assert user.login_person_id is not None  # _acting has checked
    return user.login_person_id, "representative" if mandate else "person"


def _detail(subject: str, mandate: str | None, **detail: Any) -> dict[str, Any]:
    if mandate:
        detail.update(acting_for=subject, mandate=mandate)
    return detail


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise InvalidRequestError(f"language must be one of {', '.join(LANGUAGES)}", field="language")


# --- what is shown ---------------------------------------------------------------------------------------------


def _organisations(uow: UnitOfWork, ids: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    wanted = {i for i in ids if i}
    found: dict[str, dict[str, Any]] = {}
    if wanted:
        rows = uow.session.execute(
            select(OrganisationRow.id, OrganisationRow.name, OrganisationRow.org_type).where(
                OrganisationRow.id.in_(wanted)
            )
        )
        found = {r.id: {"id": r.id, "name": r.name, "org_type": r.org_type} for r in rows}
    return {i: found.get(i, {"id": i, "name": i, "org_type": None}) for i in wanted}


def _special(broker: Broker, category: str) -> bool:
    # A category the policy no longer knows is treated as special: it then needs the explicit tick.
    return category not in broker.policy.categories or broker.policy.is_special(category)


def _categories(broker: Broker, categories: Iterable[str]) -> list[dict[str, Any]]:
    return [{"id": c, "special": _special(broker, c)} for c in categories]


def _request_status(row: ConsentRequestRow, now: datetime) -> str:
    if row.status == "pending" and now >= utc(row.expires_at):
        return "expired"
    return row.status


def _request_view(
    broker: Broker, row: ConsentRequestRow, orgs: dict[str, dict[str, Any]], now: datetime
) -> dict[str, Any]:
    return {
        "id": row.id,
        "requester": orgs[row.requester_org],
        "recipients": [orgs[r] for r in row.recipients],
        "categories": _categories(broker, row.categories),
        "purposes": list(row.purposes),
        "valid_days": row.valid_days,
        "reason": row.reason,
        "status": _request_status(row, now),
        "created_at": utc(row.created_at),
        "expires_at": utc(row.expires_at),
        "answered_at": utc(row.answered_at) if row.answered_at else None,
        "consent_id": row.consent_id,
        "needs_explicit": any(_special(broker, c) for c in row.categories),
    }


def _request_orgs(rows: Iterable[ConsentRequestRow]) -> set[str]:
    return {org for row in rows for org in (row.requester_org, *row.recipients)}


def _requests(broker: Broker, uow: UnitOfWork, subject: str, status: str | None, now: datetime) -> list[dict[str, Any]]:
    rows = uow.session.scalars(
        select(ConsentRequestRow)
        .where(ConsentRequestRow.person_id == subject)
        .order_by(ConsentRequestRow.created_at.desc(), ConsentRequestRow.id)
    ).all()
    rows = [row for row in rows if status is None or _request_status(row, now) == status]
    orgs = _organisations(uow, _request_orgs(rows))
    return [_request_view(broker, row, orgs, now) for row in rows]


def _consent_status(row: ConsentRow, now: datetime) -> str:
    """The consent's status as the person should see it: one whose end date has passed is expired even before a
    job marks it so (the policy never uses it after that date either)."""
    if row.status == "active" and row.valid_until is not None and now >= utc(row.valid_until):
        return "expired"
    return row.status


def _histories(uow: UnitOfWork, consent_ids: Sequence[str]) -> dict[str, list[ConsentEventRow]]:
    found: dict[str, list[ConsentEventRow]] = {cid: [] for cid in consent_ids}
    if consent_ids:
        events = uow.session.scalars(
            select(ConsentEventRow)
            .where(ConsentEventRow.consent_id.in_(consent_ids))
            .order_by(ConsentEventRow.consent_id, ConsentEventRow.id)
        )
        for event in events:
            found[event.consent_id].append(event)
    return found


def _history_view(events: Iterable[ConsentEventRow], orgs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    # Who acted is said as a kind and an organisation; the professional's id (by_actor) is never shown.
    return [
        {
            "version": e.version,
            "action": e.action,
            "at": utc(e.at),
            "by_kind": e.by_kind,
            "by_org": {"id": e.by_org, "name": orgs[e.by_org]["name"]} if e.by_org else None,
        }
        for e in events
    ]


def _person_names(uow: UnitOfWork, ids: Iterable[str | None]) -> dict[str, str | None]:
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    rows = uow.session.execute(select(PersonRow.id, PersonRow.display_name).where(PersonRow.id.in_(wanted)))
    return {r.id: r.display_name for r in rows}


def _consents(
    broker: Broker, uow: UnitOfWork, subject: str, now: datetime, *, consent_id: str | None = None
) -> list[dict[str, Any]]:
    stmt = select(ConsentRow).where(ConsentRow.person_id == subject)
    if consent_id is not None:
        stmt = stmt.where(ConsentRow.id == consent_id)
    rows = uow.session.scalars(stmt.order_by(ConsentRow.created_at.desc(), ConsentRow.id)).all()
    histories = _histories(uow, [row.id for row in rows])
    # What each organisation asked after a withdrawal answered (docs/withdrawal.md); only withdrawn consents have any.
    answers = answers_by_consent(uow, [row.id for row in rows if row.status == "withdrawn"], now)
    orgs = _organisations(
        uow,
        {org for row in rows for org in (row.requester_org, row.bound_to_org, *row.recipients)}
        | {e.by_org for events in histories.values() for e in events if e.by_org}
        | organisations_of(answers.values()),
    )
    names = _person_names(uow, (row.representative_id for row in rows))
    serving = active_relationship_orgs(uow, subject) if any(row.bound_to_org for row in rows) else frozenset()
    born = uow.session.scalar(select(PersonRow.birth_date).where(PersonRow.id == subject))
    minor = born is not None and is_minor(born, now)
    views = []
    for row in rows:
        status = _consent_status(row, now)
        # Active and usable now, as the policy sees it: a consent bound to a service relationship is usable only
        # while that relationship lasts (ending the relationship also expires it; one given before the
        # relationship began waits for it), and a representative's consent counts only while the mandate covers
        # the person (a custodian's ends when the minor comes of age).
        in_effect = (
            status == "active"
            and (row.bound_to_org is None or row.bound_to_org in serving)
            and (row.given_by != "representative" or mandate_covers(row.mandate or "", minor=minor))
        )
        views.append(
            {
                "id": row.id,
                "kind": "consent",
                "status": status,
                "in_effect": in_effect,
                "version": row.version,
                "requester": orgs[row.requester_org],
                "recipients": [orgs[r] for r in row.recipients],
                "categories": _categories(broker, row.categories),
                "purposes": list(row.purposes),
                "valid_from": utc(row.valid_from),
                "valid_until": utc(row.valid_until) if row.valid_until else None,
                "bound_to": orgs[row.bound_to_org] if row.bound_to_org else None,
                "explicit": row.explicit,
                "written": row.written,
                "method": row.method,
                "given_by": row.given_by,
                "representative": (
                    {"id": row.representative_id, "name": names.get(row.representative_id)}
                    if row.representative_id
                    else None
                ),
                "mandate": row.mandate,
                # The witness is part of the consent the person gave; who recorded it (staff) is not shown.
                "witness": row.witness,
                "language": row.language,
                "text_sha256": row.text_sha256,
                "request_id": row.request_id,
                "created_at": utc(row.created_at),
                "withdrawn_at": utc(row.withdrawn_at) if row.withdrawn_at else None,
                "history": _history_view(histories[row.id], orgs),
                "attestations": sorted(
                    ({**answer, "organisation": orgs[answer["organisation"]]} for answer in answers.get(row.id, ())),
                    key=lambda a: (str(a["organisation"]["name"]), a["organisation"]["id"]),
                ),
            }
        )
    return views


def _refused_requests(broker: Broker, uow: UnitOfWork, subject: str, now: datetime) -> list[dict[str, Any]]:
    return [{**view, "kind": "request", "history": []} for view in _requests(broker, uow, subject, "refused", now)]


def _own_consent(uow: UnitOfWork, subject: str, consent_id: object) -> ConsentRow:
    row = uow.session.get(ConsentRow, consent_id) if isinstance(consent_id, str) else None
    if row is None or row.person_id != subject:
        raise NotFoundError(f"no consent '{consent_id}'", extra={"code": "unknown_consent"})
    return row


def _own_request(uow: UnitOfWork, subject: str, request_id: object) -> ConsentRequestRow:
    row = uow.session.get(ConsentRequestRow, request_id) if isinstance(request_id, str) else None
    if row is None or row.person_id != subject:
        raise NotFoundError(f"no consent request '{request_id}'", extra={"code": "unknown_consent_request"})
    return row


# --- overview, requests and consents ---------------------------------------------------------------------------


def overview(broker: Broker, user: PortalUser) -> dict[str, Any]:
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        person = uow.session.get(PersonRow, subject)
        if person is None:
            raise NotFoundError("no person's data to show", extra={"code": "unknown_person"})
        flows = _statutory(broker, uow, subject, now, user.language)
        return {
            "person": {"id": person.id, "name": person.display_name},
            "pending_requests": _requests(broker, uow, subject, "pending", now),
            "active_consents": [c for c in _consents(broker, uow, subject, now) if c["status"] == "active"],
            "latest_disclosures": _log(broker, uow, subject, user.language, per_page=LATEST_DISCLOSURES)["items"],
            "statutory_summary": {
                "count": len(flows),
                "organisation_types": sorted({t for flow in flows for t in flow["recipients"]}),
            },
        }


def list_requests(broker: Broker, user: PortalUser, status: str | None = "pending") -> list[dict[str, Any]]:
    """The subject's consent requests, newest first; `status` one of pending, granted, refused, expired (a pending
    request past its expiry counts as expired), or None for all."""
    if status is not None and status not in REQUEST_STATUSES:
        raise InvalidRequestError(f"status must be one of {', '.join(REQUEST_STATUSES)}", field="status")
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        return _requests(broker, uow, subject, status, now)


def get_request(broker: Broker, user: PortalUser, request_id: str) -> dict[str, Any]:
    """One request, with the plain-language explanations (in the user's language) of the consent-based flows it
    could open."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        row = _own_request(uow, subject, request_id)
        orgs = _organisations(uow, _request_orgs([row]))
        view = _request_view(broker, row, orgs, now)
    view["explanations"] = _consent_explanations(broker, row, orgs, user.language)
    return view


def _consent_explanations(
    broker: Broker, row: ConsentRequestRow, orgs: dict[str, dict[str, Any]], language: str
) -> list[str]:
    """The explanations of the rules a consent on these terms could serve: permits resting on consent whose
    receiving organisation types, categories and purposes overlap the request's (the recipients are the ones who
    would ask for the records)."""
    types = {orgs[r]["org_type"] for r in row.recipients}
    categories, purposes = set(row.categories), set(row.purposes)
    texts: list[str] = []
    for rule in broker.policy.rules:
        if rule.effect != "permit" or rule.basis not in CONSENT_BASES:
            continue
        if rule.requester_org_types & types and rule.categories & categories and rule.purposes & purposes:
            text = rule.explanation.get(language) or rule.explanation.get("fi")
            if text and text not in texts:
                texts.append(text)
    return texts


def _check_answerable(row: ConsentRequestRow, now: datetime) -> None:
    # Past its deadline the answer is the same whether or not the expiry job (broker/services/jobs.py) has run.
    if _request_status(row, now) == "expired":
        raise ConflictError("the request has expired", extra={"code": "request_expired"})
    if row.status != "pending":
        raise ConflictError(f"the request has been answered ({row.status})", extra={"code": "request_not_pending"})


def _narrowed(
    row: ConsentRequestRow, recipients: Sequence[str], categories: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The chosen terms: non-empty subsets of what was asked (the person may narrow a request, never widen it)."""
    chosen = []
    for name, values, asked in (("recipients", recipients, row.recipients), ("categories", categories, row.categories)):
        if isinstance(values, str) or not values or not all(isinstance(v, str) for v in values):
            raise InvalidRequestError(f"choose at least one of the requested {name}", field=name)
        if not set(values) <= set(asked):
            raise InvalidRequestError(f"{name} must be among those the request names", field=name)
        chosen.append(sorted(set(values)))
    return chosen[0], chosen[1]


def _terms(
    row: ConsentRequestRow, recipients: list[str], categories: list[str], language: str, now: datetime
) -> ConsentTerms:
    return ConsentTerms(
        recipients=recipients,
        categories=categories,
        purposes=sorted(set(row.purposes)),
        valid_until=now + timedelta(days=row.valid_days) if row.valid_days else None,
        explicit=True,
        written=True,
        language=language,
    )


def _render(session: Session, row: ConsentRequestRow, terms: ConsentTerms) -> str:
    # The same call consents.create_consent makes for these terms, so that the text shown is the text stored.
    return render_consent_text(
        session,
        terms.language,
        requester=row.requester_org,
        recipients=terms.recipients,
        categories=terms.categories,
        purposes=terms.purposes,
        valid_until=terms.valid_until,
        bound_to_org=None,
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def consent_text(
    broker: Broker,
    user: PortalUser,
    request_id: str,
    *,
    recipients: list[str],
    categories: list[str],
    language: str,
) -> dict[str, Any]:
    """The exact consent text for the chosen (narrowed) terms in `language`, and its SHA-256: grant_request stores
    this text only when it is given the same hash back."""
    _check_language(language)
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        row = _own_request(uow, subject, request_id)
        _check_answerable(row, now)
        chosen_recipients, chosen_categories = _narrowed(row, recipients, categories)
        text = _render(uow.session, row, _terms(row, chosen_recipients, chosen_categories, language, now))
    return {"text": text, "sha256": _sha256(text), "language": language}


def grant_request(
    broker: Broker,
    user: PortalUser,
    request_id: str,
    *,
    recipients: list[str],
    categories: list[str],
    language: str,
    text_sha256: str,
    confirm_special: bool,
) -> dict[str, Any]:
    """Grant the request on the chosen terms: an explicit, written consent given in the portal with
    e-identification, by the person or their representative. Special categories need `confirm_special` (explicit
    consent, GDPR 9(2)(a)); the text for the final terms must hash to `text_sha256` (what the person saw is what is
    stored, GDPR 7(1))."""
    _check_language(language)
    with broker.uow() as uow:
        now = broker.clock.now()
        subject, mandate = _acting(uow, user, now)
        lock_person(uow, subject, exclusive=True)
        row = _own_request(uow, subject, request_id)
        _check_answerable(row, now)
        chosen_recipients, chosen_categories = _narrowed(row, recipients, categories)
        if confirm_special is not True and any(_special(broker, c) for c in chosen_categories):
            raise InvalidRequestError(
                "the chosen categories include special-category data: the consent to it must be confirmed explicitly",
                field="confirm_special",
            )
        terms = _terms(row, chosen_recipients, chosen_categories, language, now)
        digest = _sha256(_render(uow.session, row, terms))
        if not isinstance(text_sha256, str) or not hmac.compare_digest(digest.encode(), text_sha256.encode()):
            raise InvalidRequestError(
                "the consent text for these terms is not the one reviewed; review it again", field="text_sha256"
            )
        consent = create_consent(
            uow,
            person_id=subject,
            requester_org=row.requester_org,
            terms=terms,
            now=now,
            method="portal",
            written=True,
            given_by="representative" if mandate else "person",
            representative_id=user.representative_id if mandate else None,
            mandate=mandate,
            request_id=row.id,
        )
        if consent.text_sha256 != digest:  # the same rendering on both sides; never store another text
            raise RuntimeError("the stored consent text differs from the reviewed one")
        row.status = "granted"
        row.answered_at = now
        row.consent_id = consent.id
        append_entry(
            uow,
            event="consent:grant",
            now=now,
            actor=_actor(user, mandate),
            person_id=subject,
            basis={"kind": "consent", "consent_id": consent.id, "consent_version": consent.version},
            detail=_detail(subject, mandate, method="portal", consent_request_id=row.id),
        )
        # Every organisation named in it hears of it, the requester also of the answer to its request (issue #8).
        emit_consent_granted(uow, consent, now, acting_org=None)
        _emit_answered(uow, row, "granted", now)
        view = _consents(broker, uow, subject, now, consent_id=consent.id)[0]
        uow.commit()
    return view


def refuse_request(broker: Broker, user: PortalUser, request_id: str) -> dict[str, Any]:
    with broker.uow() as uow:
        now = broker.clock.now()
        subject, mandate = _acting(uow, user, now)
        lock_person(uow, subject, exclusive=True)
        row = _own_request(uow, subject, request_id)
        _check_answerable(row, now)
        row.status = "refused"
        row.answered_at = now
        append_entry(
            uow,
            event="consent:refuse",
            now=now,
            actor=_actor(user, mandate),
            person_id=subject,
            detail=_detail(subject, mandate, method="portal", consent_request_id=row.id),
        )
        _emit_answered(uow, row, "refused", now)
        view = _request_view(broker, row, _organisations(uow, _request_orgs([row])), now)
        uow.commit()
    return view


def _emit_answered(uow: UnitOfWork, row: ConsentRequestRow, answer: str, now: datetime) -> None:
    """The `consent_request.answered` event to the organisation that asked, in the answer's own transaction."""
    emit(
        uow,
        type="consent_request.answered",
        organisations=[row.requester_org],
        person_id=row.person_id,
        data={"consent_request_id": row.id, "answer": answer, "consent_id": row.consent_id},
        now=now,
    )


def list_consents(broker: Broker, user: PortalUser) -> list[dict[str, Any]]:
    """Every consent of the subject (active, expired, withdrawn) with its history, and the refused requests
    (`kind` "request", status "refused"), newest first."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        entries = _consents(broker, uow, subject, now) + _refused_requests(broker, uow, subject, now)
    return sorted(entries, key=lambda e: e["created_at"], reverse=True)


def get_consent(broker: Broker, user: PortalUser, consent_id: str) -> dict[str, Any]:
    """One consent: its terms, the exact text the person saw, its history."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        row = _own_consent(uow, subject, consent_id)
        view = _consents(broker, uow, subject, now, consent_id=row.id)[0]
        text = uow.session.get(ConsentTextRow, row.text_sha256)
    view["text"] = (
        {"text": text.text, "sha256": text.sha256, "language": text.language, "version": text.version} if text else None
    )
    return view


def _told(row: ConsentRow) -> list[str]:
    """The organisations a withdrawal is told to: the requester and every recipient."""
    return list(dict.fromkeys([row.requester_org, *row.recipients]))


def withdrawal_consequences(broker: Broker, user: PortalUser, consent_id: str) -> dict[str, Any]:
    """What withdrawing means: which organisations are told, and which statutory flows continue for the same
    categories or recipients — those never depended on the consent (flows.md, "Two things called consent")."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        row = _own_consent(uow, subject, consent_id)
        told = _told(row)
        orgs = _organisations(uow, told)
        flows = _statutory(broker, uow, subject, now, user.language)
    types = {orgs[o]["org_type"] for o in row.recipients}
    categories = set(row.categories)
    continuing = [
        {"flow": f["flow"], "explanation": f["explanation"], "reference": f["reference"]}
        for f in flows
        if categories & set(f["categories"]) or types & set(f["recipients"])
    ]
    return {
        "told": [orgs[o] for o in told],
        "continuing": continuing,
        # Those that received data under the consent must answer within this many days (docs/withdrawal.md).
        "attestation_due_days": broker.settings.attestation_due_days,
    }


def withdraw_consent(broker: Broker, user: PortalUser, consent_id: str) -> dict[str, Any]:
    """Withdraw the consent, effective for every later request (invariant 3: the person's row is locked exclusively,
    as in consents.withdraw_consent), and tell the requester and every recipient through their inbox."""
    with broker.uow() as uow:
        now = broker.clock.now()
        subject, mandate = _acting(uow, user, now)
        row = _own_consent(uow, subject, consent_id)
        lock_person(uow, subject, exclusive=True)
        uow.session.refresh(row)
        status = _consent_status(row, now)
        if status != "active":
            raise ConsentNotActiveError(f"consent '{row.id}' is {status}, not active")
        record_withdrawal(
            uow,
            row,
            now,
            by_kind="representative" if mandate else "person",
            by_org=None,
            by_actor=user.login_person_id,
            reason=None,
        )
        told = _told(row)
        notice_ids = notify_consent_withdrawn(broker, uow, row, told, now)
        # `consent.withdrawn` to each of them, and each organisation that received data under the consent is asked
        # what it did with it (docs/withdrawal.md).
        asked = announce_withdrawal(broker, uow, row, now, acting_org=None)
        append_entry(
            uow,
            event="consent:withdraw",
            now=now,
            actor=_actor(user, mandate),
            person_id=subject,
            basis={"kind": "consent", "consent_id": row.id, "consent_version": row.version},
            detail=_detail(
                subject, mandate, method="portal", told=told, notice_ids=notice_ids, attestations_asked=asked
            ),
        )
        view = _consents(broker, uow, subject, now, consent_id=row.id)[0]
        uow.commit()
    return view


# --- who has seen my information -------------------------------------------------------------------------------


_LOG_COLUMNS = (
    DisclosureRow.id,
    DisclosureRow.kind,
    DisclosureRow.recipient_org,
    DisclosureRow.category,
    DisclosureRow.purpose,
    DisclosureRow.effect,
    DisclosureRow.basis,
    DisclosureRow.created_at,
)


def disclosure_log(
    broker: Broker,
    user: PortalUser,
    *,
    organisation: str | None = None,
    category: str | None = None,
    effect: str | None = None,
    since: date | None = None,
    until: date | None = None,
    page: int = 1,
    per_page: int = 20,
) -> dict[str, Any]:
    """Every disclosure of the subject's data and every refused request, newest first, a page at a time: date,
    organisation, category, purpose, effect and basis — never the professional who asked (703/2023 74 §).
    `since` and `until` are days (UTC), both inclusive."""
    if effect is not None and effect not in EFFECTS:
        raise InvalidRequestError(f"effect must be one of {', '.join(EFFECTS)}", field="effect")
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidRequestError("page must be a whole number from 1", field="page")
    if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequestError(f"per_page must be from 1 to {MAX_PER_PAGE}", field="per_page")
    if since is not None and until is not None and since > until:
        raise InvalidRequestError("since must not be after until", field="since")
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        return _log(
            broker,
            uow,
            subject,
            user.language,
            organisation=organisation,
            category=category,
            effect=effect,
            since=since,
            until=until,
            page=page,
            per_page=per_page,
        )


def log_organisations(broker: Broker, user: PortalUser) -> list[dict[str, Any]]:
    """The organisations that appear in the subject's log — to filter it by — sorted by name: one DISTINCT query
    on the (person_id, created_at) index, however long the log."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        ids = uow.session.scalars(
            select(DisclosureRow.recipient_org).where(DisclosureRow.person_id == subject).distinct()
        ).all()
        orgs = _organisations(uow, ids)
    return sorted(orgs.values(), key=lambda o: (str(o["name"] or o["id"]), o["id"]))


def _log(
    broker: Broker,
    uow: UnitOfWork,
    subject: str,
    language: str,
    *,
    organisation: str | None = None,
    category: str | None = None,
    effect: str | None = None,
    since: date | None = None,
    until: date | None = None,
    page: int = 1,
    per_page: int | None = 20,
) -> dict[str, Any]:
    """One page of the log (every entry when `per_page` is None): one COUNT and one LIMIT/OFFSET query, both on
    the (person_id, created_at) index."""
    conditions: list[Any] = [DisclosureRow.person_id == subject]
    if organisation:
        conditions.append(DisclosureRow.recipient_org == organisation)
    if category:
        conditions.append(DisclosureRow.category == category)
    if effect:
        conditions.append(DisclosureRow.effect == effect)
    if since is not None:
        conditions.append(DisclosureRow.created_at >= datetime.combine(since, time.min, UTC))
    if until is not None:
        conditions.append(DisclosureRow.created_at < datetime.combine(until + timedelta(days=1), time.min, UTC))
    total = uow.session.scalar(select(func.count()).select_from(DisclosureRow).where(*conditions)) or 0
    stmt = select(*_LOG_COLUMNS).where(*conditions).order_by(DisclosureRow.created_at.desc(), DisclosureRow.id.desc())
    if per_page is not None:
        stmt = stmt.limit(per_page).offset((page - 1) * per_page)
    rows = uow.session.execute(stmt).all()
    orgs = _organisations(uow, {r.recipient_org for r in rows})
    items = [
        {
            "id": r.id,
            "at": utc(r.created_at),
            "organisation": orgs[r.recipient_org],
            "category": r.category,
            "purpose": r.purpose,
            "effect": r.effect,
            "basis": _basis_view(broker, r.basis, language),
            "kind": r.kind,
        }
        for r in rows
    ]
    pages = max(1, math.ceil(total / per_page)) if per_page else 1
    return {"items": items, "total": total, "page": page, "pages": pages}


def _basis_view(broker: Broker, basis: dict[str, Any] | None, language: str) -> dict[str, Any] | None:
    """The basis a disclosure was made on, with the rule's plain-language explanation when the current policy
    still has the rule."""
    if not basis:
        return None
    rule_id = basis.get("rule")
    rule = broker.policy.by_id.get(rule_id) if isinstance(rule_id, str) else None
    return {
        "kind": basis.get("kind"),
        "rule": rule_id,
        "flow": rule.flow if rule else rule_id,
        "reference": basis.get("reference"),
        "lawful_basis": basis.get("lawful_basis"),
        "consent_id": basis.get("consent_id"),
        "exception_ground": basis.get("exception_ground"),
        "explanation": (rule.explanation.get(language) or rule.explanation.get("fi")) if rule else None,
    }


# --- shared without my consent ---------------------------------------------------------------------------------


def statutory_flows(broker: Broker, user: PortalUser) -> list[dict[str, Any]]:
    """The flows resting on statute that could apply to the subject: those in which an organisation involved with
    the person (serving them now, holding records it deposited about them, or having received their data) receives
    or is the source — and, for a rule with an age condition, only at the person's age. Withdrawing a consent does
    not stop these. One entry per flow, in the policy's order."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        return _statutory(broker, uow, subject, now, user.language)


def _involved_org_types(uow: UnitOfWork, subject: str) -> set[str]:
    involved = union(
        select(RelationshipRow.organisation_id.label("org")).where(
            RelationshipRow.person_id == subject, RelationshipRow.ended_at.is_(None)
        ),
        select(RecordRow.source_org.label("org")).where(RecordRow.person_id == subject),
        select(DisclosureRow.recipient_org.label("org")).where(
            DisclosureRow.person_id == subject, DisclosureRow.effect == "permit"
        ),
    ).subquery()
    return set(
        uow.session.scalars(select(OrganisationRow.org_type).where(OrganisationRow.id.in_(select(involved.c.org))))
    )


def _statutory(broker: Broker, uow: UnitOfWork, subject: str, now: datetime, language: str) -> list[dict[str, Any]]:
    born = uow.session.scalar(select(PersonRow.birth_date).where(PersonRow.id == subject))
    years = age(born, now) if born is not None else None
    involved = _involved_org_types(uow, subject)
    flows: dict[str, dict[str, Any]] = {}
    for rule in broker.policy.rules:
        if rule.effect != "permit" or rule.basis != "statute":
            continue
        if rule.person_age_under is not None and (years is None or years >= rule.person_age_under):
            continue
        if not (rule.requester_org_types & involved or rule.source_org_types & involved):
            continue
        entry = flows.get(rule.flow)
        if entry is None:
            flows[rule.flow] = {
                "flow": rule.flow,
                "rule_id": rule.id,
                "recipients": sorted(rule.requester_org_types),
                "sources": sorted(rule.source_org_types),
                "categories": sorted(rule.categories),
                "purposes": sorted(rule.purposes),
                "reference": rule.secrecy_ground,
                "lawful_basis": rule.lawful_basis,
                "explanation": rule.explanation.get(language) or rule.explanation.get("fi"),
            }
        else:  # another statutory rule of the same flow: one entry that covers both
            for key, values in (
                ("recipients", rule.requester_org_types),
                ("sources", rule.source_org_types),
                ("categories", rule.categories),
                ("purposes", rule.purposes),
            ):
                entry[key] = sorted(set(entry[key]) | values)
    return list(flows.values())


# --- my data ---------------------------------------------------------------------------------------------------


def my_data(broker: Broker, user: PortalUser) -> dict[str, Any]:
    """Everything the broker holds about the subject, JSON-ready (ISO 8601 strings): the person, service
    relationships, consents with their history and exact texts, consent requests, every disclosure, the records'
    metadata (never their content) and representations in both directions.

    The person's own identity code is in it (`person.hetu`), decrypted for this download only: it belongs to
    the person, but must never go into a URL, a log line or an audit entry (invariant 6)."""
    with broker.uow(write=False) as uow:
        now = broker.clock.now()
        subject, _ = _acting(uow, user, now)
        person = uow.session.get(PersonRow, subject)
        if person is None:
            raise NotFoundError("no person's data to show", extra={"code": "unknown_person"})
        hetu = open_hetu(
            Sealed(
                ciphertext=person.hetu_ciphertext,
                nonce=person.hetu_nonce,
                wrapped_key=person.hetu_wrapped_key,
                kek_id=person.hetu_kek_id,
            ),
            person.id,
            broker.keys,
        )
        relationships = uow.session.scalars(
            select(RelationshipRow).where(RelationshipRow.person_id == subject).order_by(RelationshipRow.started_at)
        ).all()
        records = uow.session.execute(
            select(
                RecordRow.id,
                RecordRow.category,
                RecordRow.source_org,
                RecordRow.deposited_at,
                RecordRow.ciphertext.is_(None).label("erased"),
            )
            .where(RecordRow.person_id == subject)
            .order_by(RecordRow.deposited_at, RecordRow.id)
        ).all()
        consents = _consents(broker, uow, subject, now)
        texts = {
            t.sha256: t
            for t in uow.session.scalars(
                select(ConsentTextRow).where(ConsentTextRow.sha256.in_({c["text_sha256"] for c in consents}))
            )
        }
        representations = uow.session.scalars(
            select(RepresentationRow)
            .where((RepresentationRow.person_id == subject) | (RepresentationRow.representative_id == subject))
            .order_by(RepresentationRow.created_at)
        ).all()
        names = _person_names(uow, {i for r in representations for i in (r.person_id, r.representative_id)})
        orgs = _organisations(
            uow,
            {r.organisation_id for r in relationships}
            | {r.source_org for r in records}
            | {r.registered_by for r in representations},
        )
        data = {
            "generated_at": now,
            "person": {"id": person.id, "name": person.display_name, "birth_date": person.birth_date, "hetu": hetu},
            "relationships": [
                {
                    "organisation": orgs[r.organisation_id],
                    "started_at": utc(r.started_at),
                    "ended_at": utc(r.ended_at) if r.ended_at else None,
                    "active": r.ended_at is None,
                }
                for r in relationships
            ],
            "consents": [
                {
                    **c,
                    "text": (
                        {"text": texts[c["text_sha256"]].text, "version": texts[c["text_sha256"]].version}
                        if c["text_sha256"] in texts
                        else None
                    ),
                }
                for c in consents
            ],
            "requests": _requests(broker, uow, subject, None, now),
            "disclosures": _log(broker, uow, subject, user.language, per_page=None)["items"],
            "records": [
                {
                    "id": r.id,
                    "category": r.category,
                    "source": orgs[r.source_org],
                    "deposited_at": utc(r.deposited_at),
                    "erased": bool(r.erased),
                }
                for r in records
            ],
            "representations": {
                "representatives": [
                    _representation_view(r, r.representative_id, names, orgs, now)
                    for r in representations
                    if r.person_id == subject
                ],
                "represents": [
                    _representation_view(r, r.person_id, names, orgs, now)
                    for r in representations
                    if r.representative_id == subject
                ],
            },
        }
    result: dict[str, Any] = _json_ready(data)
    return result


def _representation_view(
    row: RepresentationRow,
    other: str,
    names: dict[str, str | None],
    orgs: dict[str, dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    return {
        "person": {"id": other, "name": names.get(other)},
        "mandate": row.mandate,
        "valid_from": utc(row.valid_from),
        "valid_until": utc(row.valid_until) if row.valid_until else None,
        "active": representation_active(row.valid_from, row.valid_until, now),
        "registered_by": orgs[row.registered_by],
    }


#: Values that are JSON-ready as they are — most of a download (ids, names, codes) — passed through without a call.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _json_ready(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, datetime):
        return utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else _json_ready(v) for v in value]
    return value
