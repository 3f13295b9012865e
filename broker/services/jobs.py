"""The broker's scheduled jobs: `broker jobs run` runs them once, `broker worker` every few minutes (docs/jobs.md).

Housekeeping: used client-assertion and DPoP proof ids, access tokens and stored Idempotency-Key responses are
forgotten once their time is over; partner events and their deliveries once they are `event_retention_days` old
and no delivery of theirs is still being tried (an event names a person and their consents: it is kept no longer
than partners need it to catch up, GDPR 5(1)(e)).

Expiry: a consent request left unanswered past its deadline, a consent past its end date (`valid_until`), and a
consent bound to a service relationship that has ended are marked expired. Nothing waits for the job to be safe:
the policy refuses a consent past its end date or without its relationship on every decision, and the portal shows
a request past its deadline as expired. What the job adds is the record of the change — the status (and a consent's
version), the consent's history event by the system, the audit entry (`consent:request_expire`, `consent:expire`)
and the partner events (`consent_request.expired` to the requester, `consent.expired` to the requester and every
recipient, broker/services/events.py), so that the organisations named need not poll and the person's portal shows
the consent as ended.

A consent bound to a service relationship ends with it (flows.md, "Consent, as the law shapes it"; the text the
person agreed to reads "as long as <organisation> is serving me"), and the policy refuses it from that moment
(`consent_relationship_ended`). Ending the relationship expires it in the same transaction
(broker/services/persons.py `end_relationship`, through `expire_consents` here), for good: a later relationship
with the same organisation is a new matter, which does not bring back a consent given for the one that ended — and
the organisations named were told it ended (`relationship.ended`'s `consents_ended`). The job's pass over bound
consents catches any left active by a broker version from before that. A relationship counts if it ended when or
after the consent was given: a consent bound to an organisation that did not yet serve the person waits for that
service to begin.

Each batch is one short transaction (`batch_size` rows, default 20, about a millisecond of work each: on SQLite a
transaction holds the write lock every writer needs, so a disclosure waits at most one batch). It takes the row
lock of each person in it exclusively, in id order, as a withdrawal does (broker/services/persons.py
`lock_person`): a disclosure that read the consent as active has committed before the expiry commits (DESIGN.md
invariant 3), and the order is the same in every batch, so two batches never wait for each other in a circle.
Under the locks it reads the rows again and decides again, so a second run, or two runs at once, expire nothing
twice. A batch that fails (the database unavailable, a lock or statement timeout) rolls back whole and
stops the run; the next run takes it up again.

Time is injected (DESIGN.md invariant 9): what is due is decided as of `now` (default: the broker's clock). `now`
may lie in the past, expiring less, never in the future, which would end consents still in force. The changes are
recorded at the clock's time, when they are made; the partner events carry in `expired_at` the moment the consent
or request stopped being valid (its end date, deadline, or the relationship's end), which may be up to a job
interval earlier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, delete, exists, select, tuple_

from broker.adapters.orm import (
    AccessTokenRow,
    AssertionJtiRow,
    ConsentRequestRow,
    ConsentRow,
    DpopProofJtiRow,
    OutboxEventRow,
    RelationshipRow,
    WebhookDeliveryRow,
)
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import InvalidRequestError
from broker.services import Broker
from broker.services.audit_log import append_entry
from broker.services.consents import record_expiry
from broker.services.events import emit, iso
from broker.services.idempotency import purge_expired_keys
from broker.services.persons import lock_person

BATCH_SIZE = 20
# The log's actor for the job: the id goes into the leaf only as a salted commitment, the role as it is.
ACTOR = ("expiry", "system")

Reason = Literal["valid_until", "relationship_ended"]


class JobRunError(InvalidRequestError):
    code = "invalid_job_run"


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobReport:
    """What one run did."""

    now: datetime  # as of when expiry was decided
    used_ids_forgotten: int  # client-assertion and DPoP proof ids past their replay window
    tokens_forgotten: int  # access tokens past their expiry
    responses_forgotten: int  # stored responses of expired Idempotency-Keys
    events_forgotten: int  # partner events past their retention, with their finished deliveries
    requests_expired: int  # consent requests left unanswered past their deadline
    consents_expired: int  # consents past their end date
    consents_ended: int  # consents whose service relationship had ended
    transactions: int  # expiring transactions committed

    def lines(self) -> Iterator[str]:
        """The summary `broker jobs run` prints."""
        yield f"jobs run as of {iso(self.now)}"
        yield (
            f"forgot {self.used_ids_forgotten} used assertion and DPoP proof ids and {self.tokens_forgotten} expired "
            "access tokens"
        )
        yield f"forgot {self.responses_forgotten} stored responses of expired Idempotency-Keys"
        yield f"forgot {_count(self.events_forgotten, 'partner event')} past their retention"
        yield f"expired {_count(self.requests_expired, 'consent request')} left unanswered past the deadline"
        yield (
            f"expired {_count(self.consents_expired, 'consent')} past the end date and {self.consents_ended} whose "
            f"service relationship had ended, in {_count(self.transactions, 'transaction')}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (for a worker's log line)."""
        return {**asdict(self), "now": iso(self.now)}


def run_jobs(broker: Broker, now: datetime | None = None, *, batch_size: int = BATCH_SIZE) -> JobReport:
    """Run every scheduled job once, in turn: forget expired credentials and Idempotency-Key responses, then
    expire what is due as of `now` (default: the broker's clock), `batch_size` rows a transaction."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise JobRunError("batch_size must be a whole number from 1", field="batch_size")
    clock_now = broker.clock.now()
    now = clock_now if now is None else now
    if now.tzinfo is None:
        raise JobRunError("the time to run as of must carry its UTC offset", field="now")
    now = utc(now)
    if now > clock_now:
        raise JobRunError(
            "the jobs cannot run as of a future time: that would end consents still in force", field="now"
        )
    used_ids, tokens = forget_expired_credentials(broker, now)
    responses = purge_expired_keys(broker)
    events = forget_old_events(broker, now - timedelta(days=broker.settings.event_retention_days))
    tally = _Tally()
    for kind in _CANDIDATES:
        _expire(broker, kind, now, batch_size, tally)
    return JobReport(
        now=now,
        used_ids_forgotten=used_ids,
        tokens_forgotten=tokens,
        responses_forgotten=responses,
        events_forgotten=events,
        requests_expired=tally.requests_expired,
        consents_expired=tally.consents_expired,
        consents_ended=tally.consents_ended,
        transactions=tally.transactions,
    )


def forget_expired_credentials(broker: Broker, now: datetime) -> tuple[int, int]:
    """Forget used assertion and DPoP proof ids and access tokens whose time was over at `now` (no later than the
    broker's clock); returns (ids, tokens) deleted, `ids` counting both kinds (`broker.oauth.purge_expired`).

    For a periodic job, not the request path: purges inside concurrent token requests would lock the same rows. A
    `jti` row is deleted only after its `expires_at`, when its assertion can no longer pass `exp` (or its proof can
    no longer pass the `iat` window)."""
    with broker.uow() as uow:
        jtis = uow.session.execute(delete(AssertionJtiRow).where(AssertionJtiRow.expires_at < now))
        proofs = uow.session.execute(delete(DpopProofJtiRow).where(DpopProofJtiRow.expires_at < now))
        tokens = uow.session.execute(delete(AccessTokenRow).where(AccessTokenRow.expires_at < now))
        uow.commit()
    return jtis.rowcount + proofs.rowcount, tokens.rowcount  # type: ignore[attr-defined]


EVENT_BATCH = 500


def forget_old_events(broker: Broker, before: datetime) -> int:
    """Delete the partner events created before `before` whose deliveries are all over (delivered or given up),
    with those deliveries; returns the events deleted. Events are walked in sequence order, which is their order of
    creation up to the seconds that concurrent transactions take to commit, a batch a transaction; the walk stops
    at the first event not yet old enough, so that a run reads only what it deletes (and what still waits)."""
    forgotten = 0
    after = 0
    while True:
        with broker.uow() as uow:
            page = uow.session.execute(
                select(OutboxEventRow.seq, OutboxEventRow.id, OutboxEventRow.created_at)
                .where(OutboxEventRow.seq > after)
                .order_by(OutboxEventRow.seq)
                .limit(EVENT_BATCH)
            ).all()
            old = [row for row in page if utc(row.created_at) < before]
            ids = [row.id for row in old]
            if ids:
                uow.session.execute(
                    delete(WebhookDeliveryRow).where(
                        WebhookDeliveryRow.event_id.in_(ids), WebhookDeliveryRow.status != "pending"
                    )
                )
                still_pending = exists().where(WebhookDeliveryRow.event_id == OutboxEventRow.id)
                done = uow.session.execute(delete(OutboxEventRow).where(OutboxEventRow.id.in_(ids), ~still_pending))
                forgotten += done.rowcount  # type: ignore[attr-defined]
            uow.commit()
        if len(old) < len(page) or len(page) < EVENT_BATCH:
            return forgotten
        after = page[-1].seq


# --- when a consent has ended ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expiry:
    """Why a consent has ended, and from when."""

    at: datetime
    reason: Reason
    relationship_id: str | None = None  # the relationship whose end ended it

    def detail(self) -> dict[str, Any]:
        """What the history event and the audit entry say of it."""
        found: dict[str, Any] = {"reason": self.reason, "expired_at": iso(self.at)}
        if self.relationship_id is not None:
            found["relationship_id"] = self.relationship_id
        return found


def consent_expiry(
    *,
    status: str,
    valid_from: datetime,
    valid_until: datetime | None,
    bound: bool,
    relationship_ends: Iterable[tuple[str, datetime | None]],
    now: datetime,
) -> Expiry | None:
    """Whether an active consent has ended by `now`, and from when: at its end date, or — when it is bound to a
    service relationship — when a relationship of that organisation with the person ended at or after the consent
    was given (`relationship_ends`: the id and `ended_at` of that organisation's relationships with the person,
    None for one still open); the earlier of the two. The consent ends when the relationship ends, even at the very
    moment it was given: ending it is the safe side (DESIGN.md invariant 1)."""
    if status != "active":
        return None
    found: list[Expiry] = []
    if valid_until is not None and utc(valid_until) <= now:
        found.append(Expiry(utc(valid_until), "valid_until"))
    if bound:
        given = utc(valid_from)
        ends = sorted((utc(end), rid) for rid, end in relationship_ends if end is not None and given <= utc(end) <= now)
        if ends:
            found.append(Expiry(ends[0][0], "relationship_ended", ends[0][1]))
    return min(found, key=lambda e: e.at) if found else None


# --- batches ---------------------------------------------------------------------------------------------------

_REQUESTS = ConsentRequestRow.__table__
_CONSENTS = ConsentRow.__table__
_RELATIONSHIPS = RelationshipRow.__table__


def _due_requests(now: datetime) -> tuple[Select[Any], Sequence[ColumnElement[Any]]]:
    # The index (status, expires_at) of migration 0008 serves the range; the key runs in its order.
    query = select(_REQUESTS.c.id, _REQUESTS.c.person_id, _REQUESTS.c.expires_at).where(
        _REQUESTS.c.status == "pending", _REQUESTS.c.expires_at <= now
    )
    return query, (_REQUESTS.c.expires_at, _REQUESTS.c.id)


def _consents_past_end(now: datetime) -> tuple[Select[Any], Sequence[ColumnElement[Any]]]:
    # The index (status, valid_until) of migration 0008; NULL (no end date) never compares true.
    query = select(_CONSENTS.c.id, _CONSENTS.c.person_id, _CONSENTS.c.valid_until).where(
        _CONSENTS.c.status == "active", _CONSENTS.c.valid_until <= now
    )
    return query, (_CONSENTS.c.valid_until, _CONSENTS.c.id)


def _consents_without_relationship(now: datetime) -> tuple[Select[Any], Sequence[ColumnElement[Any]]]:
    # The active consents bound to a relationship (the index (bound_to_org, status) of migration 0008 skips the
    # unbound majority), each probed on the relationships' (person, organisation) index. Ending a relationship ends
    # its bound consents at once; this pass catches any that an earlier version of the broker left active.
    ended = exists().where(
        _RELATIONSHIPS.c.person_id == _CONSENTS.c.person_id,
        _RELATIONSHIPS.c.organisation_id == _CONSENTS.c.bound_to_org,
        _RELATIONSHIPS.c.ended_at.is_not(None),
        _RELATIONSHIPS.c.ended_at >= _CONSENTS.c.valid_from,
        _RELATIONSHIPS.c.ended_at <= now,
    )
    query = select(_CONSENTS.c.id, _CONSENTS.c.person_id).where(
        _CONSENTS.c.status == "active", _CONSENTS.c.bound_to_org.is_not(None), ended
    )
    return query, (_CONSENTS.c.id,)


_CANDIDATES: dict[str, Callable[[datetime], tuple[Select[Any], Sequence[ColumnElement[Any]]]]] = {
    "requests": _due_requests,
    "consents_by_date": _consents_past_end,
    "consents_by_relationship": _consents_without_relationship,
}


@dataclass
class _Tally:
    requests_expired: int = 0
    consents_expired: int = 0
    consents_ended: int = 0
    transactions: int = 0


def _expire(broker: Broker, kind: str, now: datetime, batch_size: int, tally: _Tally) -> None:
    """Walk the candidates of one kind a page at a time (read-only, keyset order: each page one index range
    however far the walk has got) and expire each page in one transaction that decides again under the locks."""
    query, key = _CANDIDATES[kind](now)
    after: tuple[Any, ...] | None = None
    while True:
        page_query = query
        if after is not None:
            # The first column's bound is what an index range can use; the row comparison breaks ties by id.
            page_query = query.where(key[0] >= after[0], tuple_(*key) > tuple_(*after))
        with broker.uow(write=False) as uow:
            page = list(uow.session.execute(page_query.order_by(*key).limit(batch_size)))
        if not page:
            return
        after = tuple(page[-1]._mapping[column] for column in key)
        ids = [row.id for row in page]
        persons = sorted({row.person_id for row in page})
        with broker.uow() as uow:
            for person_id in persons:
                lock_person(uow, person_id, exclusive=True)
            if kind == "requests":
                tally.requests_expired += _expire_requests(broker, uow, ids, now)
            else:
                for reason in expire_consents(broker, uow, ids, persons, now):
                    if reason == "valid_until":
                        tally.consents_expired += 1
                    else:
                        tally.consents_ended += 1
            uow.commit()
        tally.transactions += 1
        if len(page) < batch_size:
            return


def _expire_requests(broker: Broker, uow: UnitOfWork, ids: list[str], now: datetime) -> int:
    """Expire the requests of `ids` still pending past their deadline (the persons are locked)."""
    rows = uow.session.scalars(
        select(ConsentRequestRow)
        .where(
            ConsentRequestRow.id.in_(ids),
            ConsentRequestRow.status == "pending",
            ConsentRequestRow.expires_at <= now,
        )
        .order_by(ConsentRequestRow.id)
        .with_for_update()
    ).all()
    recorded_at = broker.clock.now()
    for row in rows:
        row.status = "expired"
        expired_at = utc(row.expires_at)
        event_ids = emit(
            uow,
            type="consent_request.expired",
            organisations=[row.requester_org],
            person_id=row.person_id,
            data={"consent_request_id": row.id, "expired_at": expired_at},
            now=recorded_at,
        )
        append_entry(
            uow,
            event="consent:request_expire",
            now=recorded_at,
            actor=ACTOR,
            person_id=row.person_id,
            detail={
                "consent_request_id": row.id,
                "expired_at": iso(expired_at),
                "told": [row.requester_org],
                "event_ids": [event_ids[row.requester_org]],
            },
        )
    return len(rows)


def expire_consents(broker: Broker, uow: UnitOfWork, ids: list[str], persons: list[str], now: datetime) -> list[Reason]:
    """Expire the consents of `ids` that are still active and have ended by `now` (the caller holds the persons'
    row locks): each with its history event, audit entry and `consent.expired` event. Returns the reason of each
    one expired. Also run by `end_relationship` for the consents bound to the relationship it ends."""
    rows = uow.session.scalars(
        select(ConsentRow)
        .where(ConsentRow.id.in_(ids), ConsentRow.status == "active")
        .order_by(ConsentRow.id)
        .with_for_update()
    ).all()
    ends: defaultdict[tuple[str, str], list[tuple[str, datetime | None]]] = defaultdict(list)
    if any(row.bound_to_org for row in rows):
        for rid, person_id, organisation_id, ended_at in uow.session.execute(
            select(
                RelationshipRow.id, RelationshipRow.person_id, RelationshipRow.organisation_id, RelationshipRow.ended_at
            ).where(RelationshipRow.person_id.in_(persons), RelationshipRow.ended_at.is_not(None))
        ):
            ends[(person_id, organisation_id)].append((rid, ended_at))
    recorded_at = broker.clock.now()
    reasons: list[Reason] = []
    for row in rows:
        expiry = consent_expiry(
            status=row.status,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            bound=row.bound_to_org is not None,
            relationship_ends=ends.get((row.person_id, row.bound_to_org or ""), ()),
            now=now,
        )
        if expiry is None:
            continue
        record_expiry(uow, row, recorded_at, detail=expiry.detail())
        # Everyone the consent named: the system ended it, so no organisation knows already.
        told = sorted({row.requester_org, *row.recipients})
        event_ids = emit(
            uow,
            type="consent.expired",
            organisations=told,
            person_id=row.person_id,
            data={"consent_id": row.id, "version": row.version, "expired_at": expiry.at},
            now=recorded_at,
        )
        append_entry(
            uow,
            event="consent:expire",
            now=recorded_at,
            actor=ACTOR,
            person_id=row.person_id,
            basis={"kind": "consent", "consent_id": row.id, "consent_version": row.version},
            detail={**expiry.detail(), "told": told, "event_ids": [event_ids[org] for org in told]},
        )
        reasons.append(expiry.reason)
    return reasons


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


__all__ = [
    "ACTOR",
    "BATCH_SIZE",
    "Expiry",
    "JobReport",
    "JobRunError",
    "consent_expiry",
    "expire_consents",
    "forget_expired_credentials",
    "forget_old_events",
    "run_jobs",
]
