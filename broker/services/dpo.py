"""The data-protection officer's use cases (docs/dpo.md): searching the log, opening an entry and its actor
commitment, answering a person's log request, the anomaly queue and its reviews, the log's integrity, and the
activity counts behind the charts.

Reading the log is processing the personal data in it, so every use case here that shows entries about persons
appends its own entry in the same transaction (`audit:query`, `dpo:open_commitment`, `dpo:report`,
`dpo:review`), with the DPO as the actor — the DPO's id, like every actor id, only as a salted commitment.
An identity code is never logged: a search by identity code logs the person id it found.

Queries use the indexed columns (audit_entries: logged_at, person_id, organisation + logged_at, the primary key;
audit_leaves: entry_id; disclosures: person_id + created_at; audit_actors: actor_id), and read the canonical bytes
only of the rows a page shows or a rule needs. An entry's tree index and leaf hash are in audit_leaves, beside
the entry (broker/services/audit_read.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from audit import EVENT_TYPES, AuditVerificationError, verify_actor_commitment
from audit.errors import AuditError
from broker.adapters.checkpoint_sink import SinkError
from broker.adapters.orm import (
    AuditActorRow,
    AuditCheckpointRow,
    AuditEntryRow,
    AuditHeadRow,
    AuditLeafRow,
    AuditPendingRow,
    AuditVerificationRow,
    DisclosureRow,
    DpoReviewRow,
    OrganisationRow,
    PersonRow,
    RelationshipRow,
    WithdrawalAttestationRow,
)
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import ConflictError, InvalidRequestError, NotFoundError
from broker.domain.model import DPO_ROLE
from broker.services import Broker
from broker.services import anomalies as rules
from broker.services.audit_check import verify_broker_log
from broker.services.audit_log import append_entry
from broker.services.audit_read import EntryQuery, filtered, proof_bundle, shown_bytes
from broker.services.persons import find_person_by_hetu

SURFACE = "dpo"
MAX_PAGE = 200
BASIS_KINDS = ("statute", "consent", "exception")
EFFECTS = ("permit", "deny")
OUTCOMES = ("justified", "follow_up", "reported")
NOTE_MAX = 2000
#: A person's log request covers two years unless a special reason is given (Client Data Act 703/2023 11 §).
REPORT_YEARS = 2
#: The anomaly queue looks this many days back by default, and at most MAX_QUEUE_DAYS.
QUEUE_DAYS = 30
MAX_QUEUE_DAYS = 366
#: How many items a queue page lists.
QUEUE_LIMIT = 200
_CHUNK = 500


@dataclass(frozen=True)
class Officer:
    """The data-protection officer using the workspace: the id that the log's actor commitments and the reviews
    name, and the name shown."""

    actor_id: str
    name: str

    @property
    def actor(self) -> tuple[str, str]:
        return (self.actor_id, DPO_ROLE)


def _organisation_names(uow: UnitOfWork, ids: Iterable[str | None]) -> dict[str, str]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    rows = uow.session.execute(select(OrganisationRow.id, OrganisationRow.name).where(OrganisationRow.id.in_(wanted)))
    return {row.id: row.name for row in rows}


def organisations(broker: Broker) -> list[dict[str, str]]:
    """Every registered organisation, by name: for the filters."""
    with broker.uow(write=False) as uow:
        rows = uow.session.execute(
            select(OrganisationRow.id, OrganisationRow.name, OrganisationRow.org_type).order_by(OrganisationRow.name)
        )
        return [{"id": r.id, "name": r.name, "org_type": r.org_type} for r in rows]


def _entry_json(data: bytes) -> dict[str, Any]:
    parsed = json.loads(bytes(data))
    return parsed if isinstance(parsed, dict) else {}


def _basis_view(basis: object) -> dict[str, Any] | None:
    if not isinstance(basis, Mapping):
        return None
    return {
        name: basis.get(name)
        for name in ("kind", "rule", "reference", "lawful_basis", "consent_id", "consent_version", "exception_ground")
    }


# --- searching the log ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSearch:
    person_id: str | None = None
    organisation: str | None = None
    actor_id: str | None = None
    category: str | None = None
    purpose: str | None = None
    basis_kind: str | None = None
    effect: str | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    newest_first: bool = True
    cursor: int | None = None  # the last entry id of the previous page
    limit: int = 50

    def filters(self) -> dict[str, Any]:
        """What the search asked for, as its `audit:query` entry records it. Which professional was searched for
        stays out of the leaf, like every actor id (only that one was)."""
        out: dict[str, Any] = {}
        for name in ("person_id", "organisation", "category", "purpose", "basis_kind", "effect", "event"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.actor_id is not None:
            out["actor"] = True
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = utc(value).isoformat()
        out["order"] = "newest" if self.newest_first else "oldest"
        if self.cursor is not None:
            out["after"] = self.cursor
        return out


def _check_search(broker: Broker, search: LogSearch) -> None:
    if not 1 <= search.limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    checks = (
        ("category", search.category, broker.policy.categories),
        ("purpose", search.purpose, broker.policy.purposes),
        ("basis_kind", search.basis_kind, BASIS_KINDS),
        ("effect", search.effect, EFFECTS),
        ("event", search.event, EVENT_TYPES),
    )
    for name, value, allowed in checks:
        if value is not None and value not in allowed:
            raise InvalidRequestError(f"unknown {name}", field=name)
    if search.since is not None and search.until is not None and search.since >= search.until:
        raise InvalidRequestError("the period ends before it starts", field="until")


def _row_view(row: Any, names: Mapping[str, str], index: int | None) -> dict[str, Any]:
    entry = _entry_json(row.entry)
    return {
        "entry_id": row.id,
        "index": index,
        "logged_at": utc(row.logged_at),
        "event": row.event,
        "organisation": row.organisation,
        "organisation_name": names.get(row.organisation or "", row.organisation),
        "person_id": row.person_id,
        "category": row.category,
        "purpose": row.purpose,
        "effect": row.effect,
        "basis_kind": row.basis_kind,
        "basis": _basis_view(entry.get("basis")),
    }


def search_log(broker: Broker, officer: Officer, search: LogSearch) -> dict[str, Any]:
    """A page of entries, newest or oldest first by append order, and the cursor of the next page (None at the
    end). The search is logged (`audit:query`) with its filters and the number of entries it returned."""
    _check_search(broker, search)
    query = EntryQuery(
        person_id=search.person_id,
        organisation=search.organisation,
        event=search.event,
        category=search.category,
        purpose=search.purpose,
        effect=search.effect,
        basis_kind=search.basis_kind,
        since=search.since,
        until=search.until,
        actor_id=search.actor_id,
    )
    stmt = filtered(query)
    if search.cursor is not None:
        stmt = stmt.where(AuditEntryRow.id < search.cursor if search.newest_first else AuditEntryRow.id > search.cursor)
    order = AuditEntryRow.id.desc() if search.newest_first else AuditEntryRow.id.asc()
    stmt = stmt.order_by(order).limit(search.limit + 1)
    with broker.uow() as uow:
        rows = list(uow.session.execute(stmt))
        more = len(rows) > search.limit
        rows = rows[: search.limit]
        names = _organisation_names(uow, (r.AuditEntryRow.organisation for r in rows))
        append_entry(
            uow,
            event="audit:query",
            now=broker.clock.now(),
            actor=officer.actor,
            person_id=search.person_id,
            detail={"surface": SURFACE, "filters": search.filters(), "returned": len(rows)},
        )
        uow.commit()
        return {
            "rows": [_row_view(r.AuditEntryRow, names, r.idx) for r in rows],
            "next_cursor": rows[-1].AuditEntryRow.id if more and rows else None,
        }


def find_person(broker: Broker, officer: Officer, hetu: str) -> str | None:
    """The person with this identity code, or None; never creates one. The look-up is logged with the person id
    it found — the identity code itself never (DESIGN.md invariant 6). Raises InvalidHetuError for a malformed
    code, whose message does not repeat it."""
    with broker.uow() as uow:
        person_id = find_person_by_hetu(broker, uow, hetu)
        append_entry(
            uow,
            event="audit:query",
            now=broker.clock.now(),
            actor=officer.actor,
            person_id=person_id,
            detail={"surface": SURFACE, "filters": {"identity_code": True}, "returned": 0 if person_id is None else 1},
        )
        uow.commit()
    return person_id


def person_summary(broker: Broker, person_id: str) -> dict[str, Any]:
    with broker.uow(write=False) as uow:
        row = uow.session.execute(select(PersonRow.id, PersonRow.display_name).where(PersonRow.id == person_id)).first()
    if row is None:
        raise NotFoundError("no such person")
    return {"person_id": row.id, "name": row.display_name}


def _entry_row(uow: UnitOfWork, entry_id: int) -> AuditEntryRow:
    row = uow.session.get(AuditEntryRow, entry_id)
    if row is None:
        raise NotFoundError("no such audit entry")
    return row


def _leaf(uow: UnitOfWork, entry_id: int) -> tuple[int | None, bytes | None]:
    """The entry's tree index and leaf hash; (None, None) while it awaits the sequencer."""
    found = uow.session.execute(
        select(AuditLeafRow.idx, AuditLeafRow.leaf_hash).where(AuditLeafRow.entry_id == entry_id)
    ).first()
    return (found.idx, bytes(found.leaf_hash)) if found is not None else (None, None)


def open_entry(broker: Broker, officer: Officer, entry_id: int) -> dict[str, Any]:
    """One entry: its canonical bytes (what the leaf hashes), its plain columns, whether it has an actor
    commitment to open, and — once sequenced and covered by a checkpoint — its inclusion proof. Logged."""
    with broker.uow() as uow:
        row = _entry_row(uow, entry_id)
        index, leaf_hash = _leaf(uow, entry_id)
        names = _organisation_names(uow, [row.organisation])
        has_actor = uow.session.get(AuditActorRow, entry_id) is not None
        view = _row_view(row, names, index)
        canonical = shown_bytes(row.entry, row.split, index).decode("utf-8")
        leaf = leaf_hash.hex() if leaf_hash is not None else None
        append_entry(
            uow,
            event="audit:query",
            now=broker.clock.now(),
            actor=officer.actor,
            person_id=row.person_id,
            detail={"surface": SURFACE, "filters": {"entry_id": entry_id}, "returned": 1},
        )
        uow.commit()
    parsed = json.loads(canonical)
    view.update(
        canonical=canonical,
        pretty=json.dumps(parsed, indent=2, ensure_ascii=False, sort_keys=True),
        leaf_hash=leaf,
        has_actor=has_actor,
        actor_role=parsed.get("actor_role"),
        actor_commitment=parsed.get("actor_commitment"),
        proof=proof_bundle(broker, entry_id),
    )
    return view


def open_commitment(broker: Broker, officer: Officer, entry_id: int) -> dict[str, Any]:
    """The professional behind an entry: the actor id and salt kept beside the log, checked against the entry's
    commitment (`audit.verify_actor_commitment`). Opening one is logged (`dpo:open_commitment`), whether it
    verifies or not. Raises NotFoundError when the entry names no actor."""
    with broker.uow() as uow:
        row = _entry_row(uow, entry_id)
        actor = uow.session.get(AuditActorRow, entry_id)
        if actor is None:
            raise NotFoundError("the entry names no actor")
        commitment = _entry_json(row.entry).get("actor_commitment")
        try:
            verify_actor_commitment(commitment if isinstance(commitment, str) else "", actor.actor_id, actor.salt)
            verified = True
        except AuditError:
            verified = False
        append_entry(
            uow,
            event="dpo:open_commitment",
            now=broker.clock.now(),
            actor=officer.actor,
            person_id=row.person_id,
            detail={"surface": SURFACE, "entry_id": entry_id, "verified": verified},
        )
        uow.commit()
        return {"entry_id": entry_id, "actor_id": actor.actor_id, "verified": verified}


# --- a person's log request --------------------------------------------------------------------------------------

DISCLOSURE_EVENTS = ("disclosure:permit", "disclosure:deny", "notice:send")


def years_before(moment: datetime, years: int) -> datetime:
    """The same local date and time `years` years earlier (29 February becomes the 28th)."""
    local = moment.astimezone(rules.HELSINKI)
    try:
        earlier = local.replace(year=local.year - years)
    except ValueError:
        earlier = local.replace(year=local.year - years, day=28)
    return earlier


def person_report(
    broker: Broker, officer: Officer, person_id: str, *, special_reason: bool, form: str
) -> dict[str, Any]:
    """The answer to a person's request for their log (Client Data Act 703/2023 11 §; GDPR Art. 15): who has
    received — or asked for and been refused — the person's data, when, for what, on which basis and which
    fields, and the other events of the log about the person. The last two years, or everything when a special
    reason has been given. Free of charge: nothing here counts or bills. Making it is logged (`dpo:report`),
    each time and in each form (html, csv, pdf)."""
    now = broker.clock.now()
    since = None if special_reason else years_before(now, REPORT_YEARS)
    with broker.uow() as uow:
        person = uow.session.execute(
            select(PersonRow.id, PersonRow.display_name).where(PersonRow.id == person_id)
        ).first()
        if person is None:
            raise NotFoundError("no such person")
        stmt = select(DisclosureRow).where(DisclosureRow.person_id == person_id)
        if since is not None:
            stmt = stmt.where(DisclosureRow.created_at >= since)
        disclosures = list(uow.session.scalars(stmt.order_by(DisclosureRow.created_at, DisclosureRow.id)))
        older = 0
        if since is not None:
            older = (
                uow.session.scalar(
                    select(func.count())
                    .select_from(DisclosureRow)
                    .where(DisclosureRow.person_id == person_id, DisclosureRow.created_at < since)
                )
                or 0
            )
        entry_ids = [d.audit_entry_id for d in disclosures]
        indexes: dict[int, int | None] = {}
        for chunk in _chunks(entry_ids):
            for entry_id, idx in uow.session.execute(
                select(AuditLeafRow.entry_id, AuditLeafRow.idx).where(AuditLeafRow.entry_id.in_(chunk))
            ):
                indexes[entry_id] = idx
        events_stmt = (
            select(
                AuditEntryRow.id,
                AuditLeafRow.idx,
                AuditEntryRow.logged_at,
                AuditEntryRow.event,
                AuditEntryRow.organisation,
            )
            .outerjoin(AuditLeafRow, AuditLeafRow.entry_id == AuditEntryRow.id)
            .where(AuditEntryRow.person_id == person_id, AuditEntryRow.event.not_in(DISCLOSURE_EVENTS))
        )
        if since is not None:
            events_stmt = events_stmt.where(AuditEntryRow.logged_at >= since)
        events = list(uow.session.execute(events_stmt.order_by(AuditEntryRow.id)))
        names = _organisation_names(uow, [*(d.recipient_org for d in disclosures), *(e.organisation for e in events)])
        append_entry(
            uow,
            event="dpo:report",
            now=now,
            actor=officer.actor,
            person_id=person_id,
            detail={
                "surface": SURFACE,
                "form": form,
                "special_reason": special_reason,
                "disclosures": len(disclosures),
                "events": len(events),
            },
        )
        uow.commit()
        rows = [
            {
                "at": utc(d.created_at),
                "index": indexes.get(d.audit_entry_id),
                "entry_id": d.audit_entry_id,
                "kind": d.kind,
                "recipient": d.recipient_org,
                "recipient_name": names.get(d.recipient_org, d.recipient_org),
                "category": d.category,
                "purpose": d.purpose,
                "effect": d.effect,
                "basis": _basis_view(d.basis),
                "fields": list(d.fields),
            }
            for d in disclosures
        ]
        other = [
            {
                "at": utc(e.logged_at),
                "index": e.idx,
                "entry_id": e.id,
                "event": e.event,
                "organisation": e.organisation,
                "organisation_name": names.get(e.organisation or "", e.organisation),
            }
            for e in events
        ]
    return {
        "person": {"person_id": person.id, "name": person.display_name},
        "generated_at": now,
        "since": since,
        "special_reason": special_reason,
        "older_disclosures": int(older),
        "disclosures": rows,
        "events": other,
    }


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- the anomaly queue ---------------------------------------------------------------------------------------------


def _exception_pairs(broker: Broker) -> list[tuple[str, str]]:
    """The (category, purpose) pairs on which a statutory exception can be asserted at all: only the entries of
    these can name one, so only their bytes are read."""
    pairs = {
        (category, purpose)
        for rule in broker.policy.rules
        if rule.basis == "consent_or_exception"
        for category in rule.categories
        for purpose in rule.purposes
    }
    return sorted(pairs)


def _log_facts(broker: Broker, uow: UnitOfWork, since: datetime, until: datetime) -> list[rules.LogFacts]:
    stmt = (
        select(
            AuditEntryRow.id,
            AuditEntryRow.logged_at,
            AuditEntryRow.event,
            AuditEntryRow.organisation,
            AuditEntryRow.person_id,
            AuditEntryRow.effect,
            AuditEntryRow.basis_kind,
            AuditActorRow.actor_id,
        )
        .outerjoin(AuditActorRow, AuditActorRow.entry_id == AuditEntryRow.id)
        .where(
            AuditEntryRow.logged_at >= since,
            AuditEntryRow.logged_at <= until,
            AuditEntryRow.event.in_(sorted(rules.EVENTS)),
        )
    )
    grounds: dict[int, tuple[str, ...]] = {}
    pairs = _exception_pairs(broker)
    if pairs:
        with_bytes = select(AuditEntryRow.id, AuditEntryRow.entry).where(
            AuditEntryRow.logged_at >= since,
            AuditEntryRow.logged_at <= until,
            AuditEntryRow.event.in_(sorted(rules.DISCLOSURE_EVENTS)),
            or_(*(and_(AuditEntryRow.category == c, AuditEntryRow.purpose == p) for c, p in pairs)),
        )
        for entry_id, data in uow.session.execute(with_bytes):
            found = rules.exception_grounds(_entry_json(data))
            if found:
                grounds[entry_id] = found
    return [
        rules.LogFacts(
            entry_id=row.id,
            logged_at=utc(row.logged_at),
            event=row.event,
            organisation=row.organisation,
            actor_id=row.actor_id,
            person_id=row.person_id,
            effect=row.effect,
            basis_kind=row.basis_kind,
            exception_grounds=grounds.get(row.id, ()),
        )
        for row in uow.session.execute(stmt)
    ]


def _baselines(
    uow: UnitOfWork, candidates: Iterable[tuple[str, str, date]], thresholds: rules.Thresholds
) -> dict[tuple[str, str, date], int]:
    """Each candidate professional's requests in the baseline days before the candidate day: one count each,
    through the actor index."""
    found = {}
    for organisation, actor_id, day in sorted(candidates):
        start, end = rules.baseline_period(day, thresholds)
        count = uow.session.scalar(
            select(func.count())
            .select_from(AuditActorRow)
            .join(AuditEntryRow, AuditEntryRow.id == AuditActorRow.entry_id)
            .where(
                AuditActorRow.actor_id == actor_id,
                AuditEntryRow.organisation == organisation,
                AuditEntryRow.event.in_(sorted(rules.REQUEST_EVENTS)),
                AuditEntryRow.logged_at >= start,
                AuditEntryRow.logged_at < end,
            )
        )
        found[(organisation, actor_id, day)] = int(count or 0)
    return found


def _relationships(uow: UnitOfWork, entries: Iterable[rules.LogFacts]) -> dict[tuple[str, str], list[Any]]:
    persons = sorted({e.person_id for e in entries if e.event == "disclosure:permit" and e.person_id})
    found: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for chunk in _chunks(persons):
        for row in uow.session.execute(
            select(
                RelationshipRow.person_id,
                RelationshipRow.organisation_id,
                RelationshipRow.started_at,
                RelationshipRow.ended_at,
            ).where(RelationshipRow.person_id.in_(chunk))
        ):
            ended = utc(row.ended_at) if row.ended_at is not None else None
            found[(row.person_id, row.organisation_id)].append((utc(row.started_at), ended))
    return found


def _withdrawal_facts(uow: UnitOfWork, now: datetime) -> list[rules.WithdrawalFacts]:
    """The withdrawals with an attestation unanswered past its due date as of `now` (the due-date index), each with
    every attestation it asked for and its `consent:withdraw` entry — the withdrawal entries of those persons only,
    whose bytes name the consent (`basis.consent_id`)."""
    attestations = WithdrawalAttestationRow
    unanswered = or_(attestations.answered_at.is_(None), attestations.answered_at > now)
    overdue = select(attestations.consent_id).where(attestations.due_at <= now, unanswered).distinct()
    asked: dict[str, list[rules.AttestationFacts]] = defaultdict(list)
    persons: set[str] = set()
    for row in uow.session.execute(
        select(
            attestations.consent_id,
            attestations.organisation_id,
            attestations.person_id,
            attestations.due_at,
            attestations.answered_at,
        ).where(attestations.consent_id.in_(overdue))
    ):
        answered = utc(row.answered_at) if row.answered_at is not None else None
        asked[row.consent_id].append(rules.AttestationFacts(row.organisation_id, utc(row.due_at), answered))
        persons.add(row.person_id)
    found: dict[str, rules.WithdrawalFacts] = {}
    for chunk in _chunks(sorted(persons)):
        for entry_id, logged_at, person_id, data in uow.session.execute(
            select(AuditEntryRow.id, AuditEntryRow.logged_at, AuditEntryRow.person_id, AuditEntryRow.entry)
            .where(AuditEntryRow.event == "consent:withdraw", AuditEntryRow.person_id.in_(chunk))
            .order_by(AuditEntryRow.id)
        ):
            basis = _entry_json(data).get("basis")
            consent_id = basis.get("consent_id") if isinstance(basis, Mapping) else None
            if isinstance(consent_id, str) and consent_id in asked and consent_id not in found:
                found[consent_id] = rules.WithdrawalFacts(
                    entry_id=entry_id,
                    logged_at=utc(logged_at),
                    consent_id=consent_id,
                    person_id=person_id,
                    attestations=tuple(sorted(asked[consent_id], key=lambda a: a.organisation)),
                )
    return list(found.values())


def find_anomalies(
    broker: Broker, *, days: int = QUEUE_DAYS, thresholds: rules.Thresholds = rules.DEFAULT_THRESHOLDS
) -> list[rules.Finding]:
    """Every finding of every rule over the last `days` days (Finnish calendar days, today included), and every
    withdrawal still unanswered past its due date, however long ago it was made (`rules.attestations_overdue`)."""
    if not 1 <= days <= MAX_QUEUE_DAYS:
        raise InvalidRequestError(f"days must be between 1 and {MAX_QUEUE_DAYS}", field="days")
    now = broker.clock.now()
    since, until = rules.window(now, days)
    with broker.uow(write=False) as uow:
        entries = _log_facts(broker, uow, since, until)
        baselines = _baselines(uow, rules.volume_candidates(entries, thresholds), thresholds)
        relationships = _relationships(uow, entries)
        withdrawals = _withdrawal_facts(uow, now)
    return rules.evaluate(
        entries,
        now=now,
        baselines=baselines,
        relationships=relationships,
        thresholds=thresholds,
        withdrawals=withdrawals,
    )


def _reviewed_keys(uow: UnitOfWork, findings: Sequence[rules.Finding]) -> set[tuple[int, str]]:
    if not findings:
        return set()
    first = min(f.entry_id for f in findings)
    rows = uow.session.execute(select(DpoReviewRow.entry_id, DpoReviewRow.rule).where(DpoReviewRow.entry_id >= first))
    return {(row.entry_id, row.rule) for row in rows}


def anomaly_queue(
    broker: Broker,
    officer: Officer,
    *,
    days: int = QUEUE_DAYS,
    limit: int = QUEUE_LIMIT,
    thresholds: rules.Thresholds = rules.DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """The items not yet reviewed, oldest first (at most `limit`), with their total. Looking at the queue is
    logged (`audit:query`): its items point at persons' entries."""
    findings = find_anomalies(broker, days=days, thresholds=thresholds)
    with broker.uow() as uow:
        reviewed = _reviewed_keys(uow, findings)
        waiting = [f for f in findings if f.key not in reviewed]
        shown = waiting[:limit]
        names = _organisation_names(uow, _finding_organisations(shown))
        indexes = _indexes(uow, [f.entry_id for f in shown])
        append_entry(
            uow,
            event="audit:query",
            now=broker.clock.now(),
            actor=officer.actor,
            detail={"surface": SURFACE, "filters": {"anomalies": "open", "days": days}, "returned": len(shown)},
        )
        uow.commit()
    return {
        "days": days,
        "total": len(waiting),
        "items": [_finding_view(f, names, indexes) for f in shown],
        "counts": {rule: sum(1 for f in waiting if f.rule == rule) for rule in rules.RULES},
    }


def _indexes(uow: UnitOfWork, entry_ids: Sequence[int]) -> dict[int, int | None]:
    found: dict[int, int | None] = {}
    for chunk in _chunks(sorted(set(entry_ids))):
        for entry_id, idx in uow.session.execute(
            select(AuditLeafRow.entry_id, AuditLeafRow.idx).where(AuditLeafRow.entry_id.in_(chunk))
        ):
            found[entry_id] = idx
    return found


def _finding_organisations(findings: Iterable[rules.Finding]) -> set[str | None]:
    """The organisations a page of findings names: each finding's own, and the silent ones of an overdue
    attestation."""
    named: set[str | None] = set()
    for finding in findings:
        named.add(finding.organisation)
        named.update(finding.detail.get("silent", ()))
    return named


def _finding_view(
    finding: rules.Finding, names: Mapping[str, str], indexes: Mapping[int, int | None]
) -> dict[str, Any]:
    detail = dict(finding.detail)
    if "silent" in detail:
        detail["silent_names"] = [names.get(org, org) for org in detail["silent"]]
    return {
        "entry_id": finding.entry_id,
        "index": indexes.get(finding.entry_id),
        "rule": finding.rule,
        "logged_at": finding.logged_at,
        "organisation": finding.organisation,
        "organisation_name": names.get(finding.organisation or "", finding.organisation),
        "person_id": finding.person_id,
        "detail": detail,
    }


def anomaly_item(
    broker: Broker,
    entry_id: int,
    rule: str,
    *,
    days: int = QUEUE_DAYS,
    thresholds: rules.Thresholds = rules.DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """One item of the queue (open or reviewed), for its review page. NotFoundError when the rule does not flag
    the entry within the queue's period."""
    if rule not in rules.RULES:
        raise NotFoundError("no such rule")
    finding = next(
        (f for f in find_anomalies(broker, days=days, thresholds=thresholds) if f.key == (entry_id, rule)), None
    )
    with broker.uow(write=False) as uow:
        review = uow.session.scalars(
            select(DpoReviewRow).where(DpoReviewRow.entry_id == entry_id, DpoReviewRow.rule == rule)
        ).first()
        if finding is None and review is None:
            raise NotFoundError("the rule does not flag this entry")
        row = _entry_row(uow, entry_id)
        index, _leaf_hash = _leaf(uow, entry_id)
        names = _organisation_names(uow, {row.organisation} | _finding_organisations([finding] if finding else []))
        view = (
            _finding_view(finding, names, {entry_id: index})
            if finding is not None
            else {
                "entry_id": entry_id,
                "index": index,
                "rule": rule,
                "logged_at": utc(row.logged_at),
                "organisation": row.organisation,
                "organisation_name": names.get(row.organisation or "", row.organisation),
                "person_id": row.person_id,
                "detail": {},
            }
        )
        view["event"] = row.event
        view["review"] = _review_view(review) if review is not None else None
    return view


def _review_view(row: DpoReviewRow) -> dict[str, Any]:
    return {
        "entry_id": row.entry_id,
        "rule": row.rule,
        "reviewer": row.reviewer,
        "note": row.note,
        "outcome": row.outcome,
        "reviewed_at": utc(row.reviewed_at),
    }


def review_anomaly(
    broker: Broker,
    officer: Officer,
    entry_id: int,
    rule: str,
    *,
    note: str,
    outcome: str,
    days: int = QUEUE_DAYS,
    thresholds: rules.Thresholds = rules.DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Review one item: store the note and outcome (`DpoReviewRow`) and log `dpo:review` in the same
    transaction. The log gets the note's SHA-256, never its text: a free-text note may name people. Raises
    InvalidRequestError for a missing or too long note or an unknown outcome, NotFoundError for an item not in the
    queue, ConflictError for one already reviewed."""
    text = note.strip()
    if not text:
        raise InvalidRequestError("a note is required", field="note")
    if len(text) > NOTE_MAX:
        raise InvalidRequestError(f"the note is longer than {NOTE_MAX} characters", field="note")
    if outcome not in OUTCOMES:
        raise InvalidRequestError("unknown outcome", field="outcome")
    if rule not in rules.RULES:
        raise NotFoundError("no such rule")
    # Read-only first: the rules read a period of the log, which must not hold the write lock on SQLite.
    if not any(f.key == (entry_id, rule) for f in find_anomalies(broker, days=days, thresholds=thresholds)):
        raise NotFoundError("the rule does not flag this entry")
    now = broker.clock.now()
    with broker.uow() as uow:
        entry = _entry_row(uow, entry_id)
        done = uow.session.scalars(
            select(DpoReviewRow.id).where(DpoReviewRow.entry_id == entry_id, DpoReviewRow.rule == rule)
        ).first()
        if done is not None:
            raise ConflictError("this item has already been reviewed")
        review = DpoReviewRow(
            entry_id=entry_id, rule=rule, reviewer=officer.actor_id, note=text, outcome=outcome, reviewed_at=now
        )
        uow.session.add(review)
        try:
            uow.session.flush()
        except IntegrityError:
            # Another review of the same item committed first (PostgreSQL's unique index).
            raise ConflictError("this item has already been reviewed") from None
        append_entry(
            uow,
            event="dpo:review",
            now=now,
            actor=officer.actor,
            person_id=entry.person_id,
            payload_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            detail={"surface": SURFACE, "entry_id": entry_id, "rule": rule, "outcome": outcome},
        )
        view = _review_view(review)
        uow.commit()
    return view


def reviewed_anomalies(broker: Broker, officer: Officer, *, limit: int = QUEUE_LIMIT) -> dict[str, Any]:
    """The reviewed items, the latest review first (at most `limit`). Logged like the open queue."""
    with broker.uow() as uow:
        total = uow.session.scalar(select(func.count()).select_from(DpoReviewRow)) or 0
        rows = list(
            uow.session.execute(
                select(DpoReviewRow, AuditLeafRow.idx, AuditEntryRow.logged_at, AuditEntryRow.organisation)
                .join(AuditEntryRow, AuditEntryRow.id == DpoReviewRow.entry_id)
                .outerjoin(AuditLeafRow, AuditLeafRow.entry_id == DpoReviewRow.entry_id)
                .order_by(DpoReviewRow.reviewed_at.desc(), DpoReviewRow.id.desc())
                .limit(limit)
            )
        )
        names = _organisation_names(uow, (r.organisation for r in rows))
        append_entry(
            uow,
            event="audit:query",
            now=broker.clock.now(),
            actor=officer.actor,
            detail={"surface": SURFACE, "filters": {"anomalies": "reviewed"}, "returned": len(rows)},
        )
        uow.commit()
        items = [
            {
                **_review_view(r.DpoReviewRow),
                "index": r.idx,
                "logged_at": utc(r.logged_at),
                "organisation": r.organisation,
                "organisation_name": names.get(r.organisation or "", r.organisation),
            }
            for r in rows
        ]
    return {"total": int(total), "items": items}


# --- the log's integrity ------------------------------------------------------------------------------------------


def _verification_view(row: Any) -> dict[str, Any]:
    return {
        "started_at": utc(row.started_at),
        "finished_at": utc(row.finished_at),
        "ok": bool(row.ok),
        "size": row.size,
        "exported_size": row.exported_size,
        "failure_index": row.failure_index,
        "failure_kind": row.failure_kind,
        "message": row.message,
    }


def integrity_status(broker: Broker) -> dict[str, Any]:
    """The newest signed checkpoint, what has reached the sink outside the database, how many entries await
    their tree position, and the last full verification."""
    with broker.uow(write=False) as uow:
        checkpoint = uow.session.scalars(
            select(AuditCheckpointRow).order_by(AuditCheckpointRow.id.desc()).limit(1)
        ).first()
        head = uow.session.scalars(select(AuditHeadRow).limit(1)).first()
        pending = uow.session.scalar(select(func.count()).select_from(AuditPendingRow))
        verification = uow.session.scalars(
            select(AuditVerificationRow).order_by(AuditVerificationRow.id.desc()).limit(1)
        ).first()
        return {
            "checkpoint": (
                {
                    "size": checkpoint.size,
                    "root_hex": bytes(checkpoint.root).hex(),
                    "root_base64": base64.b64encode(bytes(checkpoint.root)).decode("ascii"),
                    "signed_at": utc(checkpoint.signed_at),
                    "exported_at": utc(checkpoint.exported_at) if checkpoint.exported_at is not None else None,
                    "note": checkpoint.note,
                }
                if checkpoint is not None
                else None
            ),
            "head": (
                {
                    "size": head.size,
                    "exported_size": head.exported_size,
                    "exported_at": utc(head.exported_at) if head.exported_at is not None else None,
                }
                if head is not None
                else None
            ),
            "pending": int(pending or 0),
            "verification": _verification_view(verification) if verification is not None else None,
        }


def record_verification(broker: Broker) -> dict[str, Any]:
    """Verify the whole log (`broker.services.audit_check.verify_broker_log`: every entry, the stored subtree
    hashes, every signed checkpoint and the sink's newest one) and store the result as an AuditVerificationRow;
    return it as a dict. A failed verification is a result, not an error: it is stored and returned with the
    first bad index and the kind of failure. `broker audit verify` and the integrity page's "verify now" both
    call this."""
    started = broker.clock.now()
    result: dict[str, Any]
    extra: dict[str, Any] = {}
    try:
        check = verify_broker_log(broker)
        result = {"ok": True, "size": check.size, "exported_size": check.exported_size}
        extra = {"root": check.root.hex(), "checkpoints": check.checkpoints, "pending": check.pending}
    except AuditVerificationError as error:
        result = {
            "ok": False,
            "size": 0,
            "exported_size": None,
            "failure_index": error.index,
            "failure_kind": str(error.kind),
            "message": error.message,
        }
    except SinkError as error:
        result = {
            "ok": False,
            "size": 0,
            "exported_size": None,
            "failure_kind": "sink_unreachable",
            "message": f"the checkpoint sink could not be read: {type(error).__name__}",
        }
    row = AuditVerificationRow(started_at=started, finished_at=broker.clock.now(), **result)
    with broker.uow() as uow:
        if not row.ok:
            # The size the database claims, for the record: the verification could not confirm it.
            head_size = uow.session.scalar(select(AuditHeadRow.size).limit(1))
            row.size = int(head_size or 0)
        uow.session.add(row)
        uow.session.flush()
        view = _verification_view(row)
        uow.commit()
    return view | extra


# --- activity, for the charts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayCount:
    day: date
    permits: int
    denials: int


def activity(broker: Broker, *, days: int = 30) -> dict[str, Any]:
    """Disclosures (records handed over on request, notices sent) and denials per Finnish calendar day over the
    last `days` days, and per organisation that acted (requested, or sent a notice). Counts only, no person."""
    if not 1 <= days <= MAX_QUEUE_DAYS:
        raise InvalidRequestError(f"days must be between 1 and {MAX_QUEUE_DAYS}", field="days")
    now = broker.clock.now()
    since, until = rules.window(now, days)
    per_day: dict[date, list[int]] = {since.date() + timedelta(days=i): [0, 0] for i in range(days)}
    per_org: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with broker.uow(write=False) as uow:
        rows = uow.session.execute(
            select(AuditEntryRow.logged_at, AuditEntryRow.event, AuditEntryRow.organisation).where(
                AuditEntryRow.logged_at >= since,
                AuditEntryRow.logged_at <= until,
                AuditEntryRow.event.in_(DISCLOSURE_EVENTS),
            )
        )
        for logged_at, event, organisation in rows:
            slot = 1 if event == "disclosure:deny" else 0
            day = rules.local_day(utc(logged_at))
            if day in per_day:
                per_day[day][slot] += 1
            per_org[organisation or ""][slot] += 1
        names = _organisation_names(uow, per_org)
    return {
        "since": since,
        "until": until,
        "days": [asdict(DayCount(day, *counts)) for day, counts in sorted(per_day.items())],
        "organisations": sorted(
            (
                {"id": org, "name": names.get(org, org), "permits": counts[0], "denials": counts[1]}
                for org, counts in per_org.items()
            ),
            key=lambda o: (-(o["permits"] + o["denials"]), o["name"]),
        ),
    }
