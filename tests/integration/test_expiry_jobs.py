"""The expiry job (broker/services/jobs.py, docs/jobs.md): `broker jobs run` marks expired the consent requests left
unanswered past their deadline, the consents past their end date and the consents whose service relationship has
ended — each once, with its history event, its audit entry and the partner events — and nothing else."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from audit.__main__ import main as verify_offline
from broker.adapters.orm import (
    AuditEntryRow,
    ConsentEventRow,
    ConsentRequestRow,
    ConsentRow,
    OutboxEventRow,
    WebhookDeliveryRow,
)
from broker.cli import main
from broker.demo import caller
from broker.domain.clock import utc
from broker.domain.errors import ConflictError
from broker.http.portal.proof import DOWNLOAD_MEMBERS
from broker.services import audit_read
from broker.services import person_portal as portal
from broker.services.consents import ConsentTerms, record_consent, request_consent, withdraw_consent
from broker.services.events import emit
from broker.services.jobs import JobRunError, consent_expiry, run_jobs
from broker.services.persons import end_relationship, lock_person, start_relationship
from broker.services.records import deposit_record
from broker.services.sequencer import Sequencer
from schemas.records.examples import EXAMPLES
from tests.support import Env, add_endpoint

# Flow F7: the health centre receives Kisälli's work assessment for assessing the capacity to work, on consent.
TERMS = {"recipients": ["varha-health"], "categories": ["work_assessment"], "purposes": ["work_capacity_assessment"]}
ASK = {"category": "work_assessment", "purpose": "work_capacity_assessment"}
TTL = timedelta(days=30)  # Settings.consent_request_ttl_days
POSTGRES_ONLY = pytest.param(
    "postgres",
    marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(
            not os.environ.get("BROKER_TEST_POSTGRES_URL"),
            reason="BROKER_TEST_POSTGRES_URL not set (the row lock is PostgreSQL's)",
        ),
    ],
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def served_person(env: Env) -> str:
    """A person Kisälli and the health centre serve, with a work assessment deposited by Kisälli."""
    person = env.person()
    env.serve(person, "kisalli", "varha-health")
    deposit_record(env.broker, caller(env.broker, "kisalli"), person, "work_assessment", EXAMPLES["work_assessment"])
    return person


def give_consent(env: Env, person: str, *, valid_until: datetime | None = None, bound: bool = False) -> str:
    terms = ConsentTerms(**TERMS, valid_until=valid_until, bound_to_relationship=bound)  # type: ignore[arg-type]
    view = record_consent(
        env.broker, caller(env.broker, "kisalli"), person, terms, method="in_person", witness="Pekka Salo"
    )
    consent_id: str = view["consent_id"]
    return consent_id


def ask_for_consent(env: Env, person: str) -> str:
    view = request_consent(
        env.broker, caller(env.broker, "kisalli"), person, **TERMS, valid_days=None, reason="Työkyvyn arviointi"
    )
    request_id: str = view["consent_request_id"]
    return request_id


def disclose(env: Env, person: str) -> Any:
    env._tokens.clear()  # the tests move the clock by days: a cached access token would have expired
    return env.post("varha-health", "/disclosures", {"person_id": person, **ASK})


def refusal_codes(response: Any) -> set[str]:
    assert response.status_code == 403, response.get_json()
    return {reason["code"] for reason in response.get_json()["decision"]["reasons"]}


def subscribe(env: Env, org: str) -> None:
    """An active endpoint of `org` subscribed to the expiry events, so that each event gets a delivery."""
    add_endpoint(env, f"whk_{org.replace('-', '_')}", org, ["consent_request.expired", "consent.expired"])


def outbox(env: Env, type_: str) -> list[OutboxEventRow]:
    with env.broker.uow(write=False) as uow:
        return list(uow.session.scalars(select(OutboxEventRow).where(OutboxEventRow.type == type_)))


def deliveries(env: Env) -> dict[str, str]:
    """Event id → endpoint of every delivery."""
    with env.broker.uow(write=False) as uow:
        return dict(uow.session.execute(select(WebhookDeliveryRow.event_id, WebhookDeliveryRow.endpoint_id)).all())


def entries(env: Env, event: str) -> list[tuple[int, dict[str, Any]]]:
    with env.broker.uow(write=False) as uow:
        rows = uow.session.execute(
            select(AuditEntryRow.id, AuditEntryRow.entry).where(AuditEntryRow.event == event).order_by(AuditEntryRow.id)
        ).all()
    return [(entry_id, json.loads(bytes(entry))) for entry_id, entry in rows]


def history(env: Env, consent_id: str) -> list[ConsentEventRow]:
    with env.broker.uow(write=False) as uow:
        return list(
            uow.session.scalars(
                select(ConsentEventRow).where(ConsentEventRow.consent_id == consent_id).order_by(ConsentEventRow.id)
            )
        )


def consent_row(env: Env, consent_id: str) -> ConsentRow:
    with env.broker.uow(write=False) as uow:
        row = uow.session.get(ConsentRow, consent_id)
    assert row is not None
    return row


def request_status(env: Env, request_id: str) -> str:
    with env.broker.uow(write=False) as uow:
        status: str = uow.session.scalar(select(ConsentRequestRow.status).where(ConsentRequestRow.id == request_id))
    return status


def counts(env: Env) -> tuple[int, ...]:
    """Rows of everything an expiry writes: history events, audit entries, outbox events, deliveries."""
    with env.broker.uow(write=False) as uow:
        return tuple(
            int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (ConsentEventRow, AuditEntryRow, OutboxEventRow, WebhookDeliveryRow)
        )


def assert_verifiable(env: Env, entry_id: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The entry is in the signed log: its proof bundle verifies offline, without the broker."""
    Sequencer(env.broker).run_once()
    bundle = audit_read.proof_bundle(env.broker, entry_id)
    assert bundle is not None
    path = tmp_path / f"proof-{bundle['index']}.json"
    path.write_text(json.dumps({name: bundle[name] for name in DOWNLOAD_MEMBERS}), encoding="utf-8")
    assert verify_offline(["verify-entry", str(path), "--key", bundle["verifier_keys"][-1]]) == 0
    assert capsys.readouterr().out.startswith(f"ok: entry {bundle['index']} is in ")


# --- consent requests ------------------------------------------------------------------------------------------


def test_a_request_past_its_deadline_expires_and_the_requester_is_told(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribe(env, "kisalli")
    person = served_person(env)
    asked_at = env.clock.now()
    due = ask_for_consent(env, person)
    env.clock.advance(days=10)
    not_yet = ask_for_consent(env, person)
    env.clock.at = asked_at + TTL  # exactly the deadline: the portal already shows it expired (now >= expires_at)
    user = portal.portal_user(env.broker, person, language="en")
    shown = {r["id"]: r["status"] for r in portal.list_requests(env.broker, user, status=None)}
    assert shown == {due: "expired", not_yet: "pending"}

    report = run_jobs(env.broker)

    assert (report.requests_expired, report.consents_expired, report.consents_ended) == (1, 0, 0)
    assert request_status(env, due) == "expired" and request_status(env, not_yet) == "pending"
    # The portal says the same as before the job, now from the stored status.
    assert {r["id"]: r["status"] for r in portal.list_requests(env.broker, user, status=None)} == shown
    # The requester is told, with ids and times only.
    [event] = outbox(env, "consent_request.expired")
    assert event.organisation_id == "kisalli" and event.person_id == person
    assert event.data == {"consent_request_id": due, "expired_at": iso(asked_at + TTL), "person_id": person}
    assert deliveries(env) == {event.id: "whk_kisalli"}
    # The log says so, by the system, and the entry is in the signed tree.
    [(entry_id, entry)] = entries(env, "consent:request_expire")
    assert entry["person_id"] == person and entry["actor_role"] == "system" and "organisation" not in entry
    assert entry["detail"] == {
        "consent_request_id": due,
        "expired_at": iso(asked_at + TTL),
        "told": ["kisalli"],
        "event_ids": [event.id],
    }
    assert_verifiable(env, entry_id, tmp_path, capsys)


def test_a_request_past_its_deadline_gets_the_same_answer_before_and_after_the_job(env: Env) -> None:
    person = served_person(env)
    request_id = ask_for_consent(env, person)
    env.clock.advance(days=31)
    user = portal.portal_user(env.broker, person, language="en")
    for _ in ("before", "after"):
        with pytest.raises(ConflictError) as refused:
            portal.refuse_request(env.broker, user, request_id)
        assert refused.value.extra == {"code": "request_expired"}
        run_jobs(env.broker)
    assert request_status(env, request_id) == "expired"


# --- consents past their end date ------------------------------------------------------------------------------


def test_a_consent_past_its_end_date_expires_and_everyone_it_names_is_told(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribe(env, "kisalli")
    subscribe(env, "varha-health")
    person = served_person(env)
    until = env.clock.now() + timedelta(days=10)
    consent_id = give_consent(env, person, valid_until=until)
    env.clock.at = until - timedelta(microseconds=1)
    assert disclose(env, person).status_code == 200
    env.clock.at = until
    # The policy does not wait for the job: from its end date on, the consent opens nothing.
    assert "consent_expired" in refusal_codes(disclose(env, person))

    report = run_jobs(env.broker)

    assert (report.requests_expired, report.consents_expired, report.consents_ended) == (0, 1, 0)
    row = consent_row(env, consent_id)
    assert (row.status, row.version, row.withdrawn_at) == ("expired", 2, None)
    *_, event = history(env, consent_id)
    assert (event.version, event.action, event.by_kind) == (2, "expire", "system")
    assert event.by_org is None and event.by_actor is None
    assert event.detail == {"reason": "valid_until", "expired_at": iso(until)}
    # The requester and the recipient are each told, in an event addressed to them alone.
    told = {e.organisation_id: e for e in outbox(env, "consent.expired")}
    assert sorted(told) == ["kisalli", "varha-health"]
    for e in told.values():
        assert e.data == {"consent_id": consent_id, "version": 2, "expired_at": iso(until), "person_id": person}
    assert deliveries(env) == {told["kisalli"].id: "whk_kisalli", told["varha-health"].id: "whk_varha_health"}
    [(entry_id, entry)] = entries(env, "consent:expire")
    assert entry["basis"] == {"kind": "consent", "consent_id": consent_id, "consent_version": 2}
    assert entry["actor_role"] == "system" and entry["person_id"] == person
    assert entry["detail"] == {
        "reason": "valid_until",
        "expired_at": iso(until),
        "told": ["kisalli", "varha-health"],
        "event_ids": [told["kisalli"].id, told["varha-health"].id],
    }
    assert_verifiable(env, entry_id, tmp_path, capsys)
    # Disclosures stay refused, now on the stored status, and the person sees the consent expired by the service.
    assert "consent_expired" in refusal_codes(disclose(env, person))
    [shown] = [
        c for c in portal.list_consents(env.broker, portal.portal_user(env.broker, person)) if c["id"] == consent_id
    ]
    assert (shown["status"], shown["in_effect"], shown["version"]) == ("expired", False, 2)
    assert [(h["action"], h["by_kind"]) for h in shown["history"]] == [("grant", "professional"), ("expire", "system")]


def test_a_consent_still_in_force_and_one_without_an_end_date_are_left_alone(env: Env) -> None:
    person = served_person(env)
    until = env.clock.now() + timedelta(days=10)
    in_force = give_consent(env, person, valid_until=until)
    open_ended = give_consent(env, person)
    env.clock.at = until - timedelta(microseconds=1)
    report = run_jobs(env.broker)
    assert (report.consents_expired, report.consents_ended, report.transactions) == (0, 0, 0)
    assert consent_row(env, in_force).status == consent_row(env, open_ended).status == "active"
    assert outbox(env, "consent.expired") == [] and entries(env, "consent:expire") == []


def test_a_withdrawn_consent_is_not_expired(env: Env) -> None:
    person = served_person(env)
    until = env.clock.now() + timedelta(days=10)
    consent_id = give_consent(env, person, valid_until=until)
    env.clock.advance(days=1)
    withdraw_consent(env.broker, caller(env.broker, "kisalli"), consent_id)
    env.clock.at = until + timedelta(days=1)
    report = run_jobs(env.broker)
    assert report.consents_expired == 0
    row = consent_row(env, consent_id)
    assert (row.status, row.version) == ("withdrawn", 2)
    assert [e.action for e in history(env, consent_id)] == ["grant", "withdraw"]
    assert outbox(env, "consent.expired") == [] and entries(env, "consent:expire") == []


def test_running_the_job_again_expires_nothing_twice(env: Env) -> None:
    subscribe(env, "varha-health")
    until = env.clock.now() + timedelta(days=10)
    persons = [served_person(env) for _ in range(3)]
    consent_ids = [give_consent(env, person, valid_until=until) for person in persons for _ in range(2)]
    request_ids = [ask_for_consent(env, person) for person in persons]
    env.clock.at = until + TTL

    first = run_jobs(env.broker, batch_size=4)
    # Six consents in pages of four, three requests in one: one transaction per page.
    assert (first.requests_expired, first.consents_expired, first.transactions) == (3, 6, 3)
    written = counts(env)
    second = run_jobs(env.broker, batch_size=4)
    assert (second.requests_expired, second.consents_expired, second.consents_ended) == (0, 0, 0)
    assert second.transactions == 0
    assert counts(env) == written
    assert all(consent_row(env, c).version == 2 for c in consent_ids)
    assert {request_status(env, r) for r in request_ids} == {"expired"}


def test_the_job_refuses_to_expire_ahead_of_time(env: Env) -> None:
    person = served_person(env)
    consent_id = give_consent(env, person, valid_until=env.clock.now() + timedelta(days=10))
    with pytest.raises(JobRunError, match="future"):
        run_jobs(env.broker, env.clock.now() + timedelta(days=11))
    with pytest.raises(JobRunError, match="UTC offset"):
        run_jobs(env.broker, datetime(2026, 1, 1))  # no UTC offset: the mistake under test
    with pytest.raises(JobRunError, match="batch_size"):
        run_jobs(env.broker, batch_size=0)
    assert consent_row(env, consent_id).status == "active"


def test_a_time_in_the_past_expires_only_what_was_due_then(env: Env) -> None:
    person = served_person(env)
    start = env.clock.now()
    early = give_consent(env, person, valid_until=start + timedelta(days=5))
    late = give_consent(env, person, valid_until=start + timedelta(days=20))
    env.clock.at = start + timedelta(days=30)
    # The as-of time may come with any UTC offset (here Helsinki's): the database compares it as UTC.
    report = run_jobs(env.broker, (start + timedelta(days=5)).astimezone(ZoneInfo("Europe/Helsinki")))
    assert report.consents_expired == 1 and report.now == start + timedelta(days=5)
    assert consent_row(env, early).status == "expired" and consent_row(env, late).status == "active"
    # The change is recorded when it is made; the event says when the consent ended.
    assert utc(history(env, early)[-1].at) == env.clock.now()
    [event] = [e for e in outbox(env, "consent.expired") if e.organisation_id == "kisalli"]
    assert event.data["expired_at"] == iso(start + timedelta(days=5))


# --- consents bound to a service relationship ------------------------------------------------------------------


def test_a_consent_bound_to_a_relationship_ends_with_it_for_good(env: Env) -> None:
    person = served_person(env)
    bound = give_consent(env, person, bound=True)
    assert disclose(env, person).status_code == 200
    env.clock.advance(days=3)
    ended_at = env.clock.now()
    relationship = end_relationship(env.broker, caller(env.broker, "kisalli"), person)

    # Ended with the relationship, in the same transaction: nothing is left for the job.
    assert consent_row(env, bound).status == "expired"
    assert "consent_expired" in refusal_codes(disclose(env, person))
    env.clock.advance(hours=1)
    report = run_jobs(env.broker)
    assert (report.consents_expired, report.consents_ended) == (0, 0)
    detail = {
        "reason": "relationship_ended",
        "expired_at": iso(ended_at),
        "relationship_id": relationship["relationship_id"],
    }
    assert history(env, bound)[-1].detail == detail
    [(_, entry)] = entries(env, "consent:expire")
    assert {k: entry["detail"][k] for k in detail} == detail
    told = {e.organisation_id: e.data for e in outbox(env, "consent.expired")}
    assert told == {
        org: {"consent_id": bound, "version": 2, "expired_at": iso(ended_at), "person_id": person}
        for org in ("kisalli", "varha-health")
    }
    # Kisälli serves the person again: a new matter, which does not bring back the consent given for the old one.
    start_relationship(env.broker, caller(env.broker, "kisalli"), person)
    assert "consent_expired" in refusal_codes(disclose(env, person))
    assert run_jobs(env.broker).consents_ended == 0


def test_a_bound_consent_lasts_while_its_relationship_does_and_waits_for_one_to_begin(env: Env) -> None:
    person = served_person(env)
    serving = give_consent(env, person, bound=True)
    # A consent bound to Kisälli given after an earlier relationship with it had ended waits for the next one.
    other = env.person()
    env.serve(other, "kisalli")
    end_relationship(env.broker, caller(env.broker, "kisalli"), other)
    env.clock.advance(minutes=1)
    waiting = give_consent(env, other, bound=True)
    env.clock.advance(days=400)
    report = run_jobs(env.broker)
    assert report.consents_ended == 0
    assert consent_row(env, serving).status == consent_row(env, waiting).status == "active"


def test_the_earlier_of_end_date_and_relationship_end_is_when_a_consent_expired() -> None:
    given = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime(2026, 6, 1, tzinfo=UTC)

    def expiry(status: str = "active", until: datetime | None = None, bound: bool = True, ends: Any = ()) -> Any:
        return consent_expiry(
            status=status, valid_from=given, valid_until=until, bound=bound, relationship_ends=ends, now=now
        )

    march, april = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    assert expiry(until=april, ends=[("rel_1", march)]).reason == "relationship_ended"
    assert expiry(until=march, ends=[("rel_1", april)]).reason == "valid_until"
    assert expiry(ends=[("rel_2", april), ("rel_1", march)]).relationship_id == "rel_1"
    # An end at the very moment the consent was given counts (the safe side); one before it does not.
    assert expiry(ends=[("rel_1", given)]).at == given
    assert expiry(ends=[("rel_1", given - timedelta(microseconds=1))]) is None
    assert expiry(ends=[("rel_1", now + timedelta(microseconds=1))]) is None
    assert expiry(bound=False, ends=[("rel_1", march)]) is None
    assert expiry(until=now).at == now
    assert expiry(status="withdrawn", until=march) is None


# --- concurrency -----------------------------------------------------------------------------------------------


def test_runs_at_the_same_time_expire_each_once(env: Env) -> None:
    """Two runs started together (two threads, each its own transactions): on PostgreSQL they meet on the persons'
    row locks and each expiry is made by one of them; on SQLite the write lock takes them in turn."""
    until = env.clock.now() + timedelta(days=10)
    persons = [served_person(env) for _ in range(6)]
    consent_ids = [give_consent(env, person, valid_until=until) for person in persons for _ in range(2)]
    request_ids = [ask_for_consent(env, person) for person in persons]
    env.clock.at = until + TTL
    start = threading.Barrier(2)

    def run() -> Any:
        start.wait()
        return run_jobs(env.broker, batch_size=3)

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: run(), range(2)))
    assert sum(r.consents_expired for r in reports) == len(consent_ids)
    assert sum(r.requests_expired for r in reports) == len(request_ids)
    for consent_id in consent_ids:
        assert [e.action for e in history(env, consent_id)] == ["grant", "expire"]
        assert consent_row(env, consent_id).version == 2
    assert len(entries(env, "consent:expire")) == len(consent_ids)
    assert len(entries(env, "consent:request_expire")) == len(request_ids)
    assert len(outbox(env, "consent.expired")) == 2 * len(consent_ids)
    assert len(outbox(env, "consent_request.expired")) == len(request_ids)


@pytest.mark.parametrize("database_url", [POSTGRES_ONLY], indirect=True)
def test_an_expiry_waits_for_a_disclosure_that_holds_the_person(env: Env) -> None:
    """Invariant 3: the job takes the person's row exclusively, as a withdrawal does, so a disclosure that has read
    the consent (holding the row FOR SHARE) commits before the expiry does."""
    person = served_person(env)
    until = env.clock.now() + timedelta(days=10)
    consent_id = give_consent(env, person, valid_until=until)
    env.clock.at = until
    with env.broker.uow() as uow, ThreadPoolExecutor(1) as pool:
        lock_person(uow, person, exclusive=False)
        running = pool.submit(run_jobs, env.broker)
        time.sleep(0.5)
        assert not running.done() and consent_row(env, consent_id).status == "active"
        uow.commit()
        assert running.result(timeout=30).consents_expired == 1
    assert consent_row(env, consent_id).status == "expired"


# --- the command line ------------------------------------------------------------------------------------------


def test_the_command_line_runs_the_jobs_and_prints_a_summary(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = env.broker.settings
    monkeypatch.setenv("BROKER_MODE", "test")
    monkeypatch.setenv("BROKER_INSTANCE_PATH", str(settings.instance_path))
    monkeypatch.setenv("BROKER_DATABASE_URL", settings.database_url)
    # The data is made on the test clock (January 2026); the command runs on the real one, and --now lies between.
    person = served_person(env)
    start = env.clock.now()
    consent_id = give_consent(env, person, valid_until=start + timedelta(days=10))
    request_id = ask_for_consent(env, person)
    moment = start + timedelta(days=15)

    assert main(["jobs", "run", "--now", moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"jobs run as of {iso(moment)}"
    # The partner calls above left used assertion and proof ids and access tokens, long expired by then.
    assert re.fullmatch(
        r"forgot [1-9]\d* used assertion and DPoP proof ids and [1-9]\d* expired access tokens", lines[1]
    )
    assert lines[2:] == [
        "forgot 0 stored responses of expired Idempotency-Keys",
        "forgot 0 partner events past their retention",
        "expired 0 consent requests left unanswered past the deadline",
        "expired 1 consent past the end date and 0 whose service relationship had ended, in 1 transaction",
    ]
    assert consent_row(env, consent_id).status == "expired" and request_status(env, request_id) == "pending"

    assert main(["jobs", "run"]) == 0  # as of the real clock: the request's deadline has passed too
    out = capsys.readouterr().out
    assert "expired 1 consent request left unanswered past the deadline" in out
    assert "expired 0 consents past the end date" in out
    assert request_status(env, request_id) == "expired"

    assert main(["jobs", "run", "--now", "2999-01-01T00:00:00Z"]) == 2
    assert "cannot run as of a future time" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["jobs", "run", "--now", "2026-01-30T00:00:00"])
    assert "give the UTC offset" in capsys.readouterr().err


# --- partner events past their retention -----------------------------------------------------------------------


def test_old_partner_events_are_forgotten_once_their_deliveries_are_over(env: Env) -> None:
    add_endpoint(env, "whk_1", "kela", ["consent.granted"])

    def emit_one() -> str:
        with env.broker.uow() as uow:
            ids = emit(
                uow, type="consent.granted", organisations=["kela"], person_id=None, data={}, now=env.clock.now()
            )
            uow.commit()
        return ids["kela"]

    delivered, still_tried, failed = emit_one(), emit_one(), emit_one()
    with env.broker.uow() as uow:
        for row in uow.session.scalars(select(WebhookDeliveryRow)):
            row.status = {delivered: "delivered", still_tried: "pending", failed: "failed"}[row.event_id]
        uow.commit()
    env.clock.advance(days=env.broker.settings.event_retention_days - 1)
    recent = emit_one()
    assert run_jobs(env.broker).events_forgotten == 0  # none old enough yet
    env.clock.advance(days=2)

    report = run_jobs(env.broker)

    assert report.events_forgotten == 2
    with env.broker.uow(write=False) as uow:
        kept = set(uow.session.scalars(select(OutboxEventRow.id)))
        deliveries = {row.event_id: row.status for row in uow.session.scalars(select(WebhookDeliveryRow))}
    # A delivery still being tried keeps its event; the newer event is within its retention.
    assert kept == {still_tried, recent}
    assert deliveries == {still_tried: "pending", recent: "pending"}
