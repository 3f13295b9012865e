"""Withdrawal that reaches every recipient (issue #8, acceptance; docs/withdrawal.md), end to end on SQLite and
PostgreSQL with the clock pinned.

Recipients receive the person's data under a consent through real disclosures over the API; the person logs in to
the portal through the development identity provider and withdraws there; each recipient gets `consent.withdrawn`,
pushed to its loopback receiver as a signed Security Event Token, asking it to attest; one attests `deleted`, one
`retained` under a statute, through the API; the person sees both answers, and the silent one, on the consent's
page; the silent recipient is in the data-protection officer's anomaly queue only once its due date has passed,
and the item can be reviewed.

The portal's login checks the ID token against the real time (tests/integration/test_portal.py), so the clock is
pinned to the present; what must lie in the past is made first with the clock moved back, as in
tests/integration/test_dpo.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from babel.dates import format_date
from sqlalchemy import select
from werkzeug.test import TestResponse

from broker.adapters.orm import AuditEntryRow, DpoReviewRow, OutboxEventRow, WithdrawalAttestationRow
from broker.adapters.signing import verify_jws
from broker.domain import labels
from broker.domain.clock import FixedClock
from broker.domain.errors import ConflictError
from broker.services import anomalies as rules
from broker.services import dpo, person_portal, persons
from broker.services.anomalies import HELSINKI, AttestationFacts, WithdrawalFacts
from broker.services.attestations import RETENTION_STATUTES
from broker.services.events import SET_MEDIA_TYPE, SET_TYP, event_uri
from broker.services.webhooks import deliver_due
from schemas.records.examples import EXAMPLES
from tests.integration.test_portal import csrf_of, location, log_in, visible_text
from tests.integration.test_portal import grant as grant_in_portal
from tests.support import Env, free_port, new_hetu

ROOT = Path(__file__).resolve().parents[2]
OFFICER = dpo.Officer(actor_id="Tiina Tietosuoja", name="Tiina Tietosuoja")
EN = {"Accept-Language": "en"}
CATEGORY, PURPOSE = "service_need_assessment", "multisector_planning"
#: Flow F9b: employment services, a third-sector producer and Ohjaamo receive the multi-sector service-need
#: assessment only on the person's consent; social work receives it by statute (F9), consent or not.
ON_CONSENT = ("kisalli", "aurajoki-foundation", "ohjaamo-turku")
BY_STATUTE = "varha-social-work"
SOURCE = "turku-employment"


@pytest.fixture
def clock() -> FixedClock:
    # Authlib's client checks the ID token's `exp` and `iat` against the real time (tests/integration/test_portal.py).
    return FixedClock(at=datetime.now(UTC).replace(microsecond=0))


# --- a receiver on loopback --------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A partner's webhook endpoint: an HTTP server on 127.0.0.1 that takes pushed tokens (RFC 8935 §2) and answers
    202."""

    server: ThreadingHTTPServer
    received: list[tuple[str, bytes]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/events"


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    started: dict[str, Receiver] = {}
    threads = []
    for org in ON_CONSENT:
        received: list[tuple[str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            sink = received

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.sink.append((self.headers.get("Content-Type", ""), body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        threads.append(thread)
        started[org] = Receiver(server, received)
    yield started
    for receiver in started.values():
        receiver.server.shutdown()
        receiver.server.server_close()
    for thread in threads:
        thread.join(timeout=5)


# --- the person and the partners -------------------------------------------------------------------------------------


def person_who_can_log_in(env: Env, name: str = "Mikko Laine") -> str:
    """A person known to the broker and offered as a persona by the development identity provider (demo.json)."""
    hetu = new_hetu()
    person_id = persons.resolve_person(env.broker, None, hetu, name)
    instance = env.broker.settings.instance_path
    instance.mkdir(parents=True, exist_ok=True)
    demo = {"issuer": env.issuer, "persons": [{"person_id": person_id, "hetu": hetu, "name": name, "login": "mikko"}]}
    (instance / "demo.json").write_text(json.dumps(demo), encoding="utf-8")
    return person_id


def deposit(env: Env, org: str, person_id: str, category: str) -> None:
    response = env.post(org, "/records", {"person_id": person_id, "category": category, "content": EXAMPLES[category]})
    assert response.status_code == 201, response.get_json()


def disclose(env: Env, org: str, person_id: str) -> dict[str, Any]:
    response = env.post(org, "/disclosures", {"person_id": person_id, "category": CATEGORY, "purpose": PURPOSE})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def attest(env: Env, org: str, consent_id: str, **answer: Any) -> TestResponse:
    return env.post(org, f"/consents/{consent_id}/attestation", answer)


def shown_date(moment: datetime, language: str = "en") -> str:
    return str(format_date(moment.astimezone(HELSINKI), "long", locale=language))


def withdrawn_events(env: Env) -> dict[str, dict[str, Any]]:
    with env.broker.uow(write=False) as uow:
        rows = uow.session.scalars(select(OutboxEventRow).where(OutboxEventRow.type == "consent.withdrawn")).all()
        return {row.organisation_id: {"id": row.id, "data": row.data} for row in rows}


def attestation_rows(env: Env) -> dict[str, WithdrawalAttestationRow]:
    with env.broker.uow(write=False) as uow:
        return {row.organisation_id: row for row in uow.session.scalars(select(WithdrawalAttestationRow))}


def overdue_items(env: Env) -> list[rules.Finding]:
    return [f for f in dpo.find_anomalies(env.broker) if f.rule == rules.ATTESTATION_OVERDUE]


def assert_accessible(page: TestResponse, language: str) -> None:
    """The structural checks the portal's pages pass in every language (tests/integration/test_portal.py; the served
    tests run axe-core on them): the language, one h1, landmarks, a scope on every table header, a label for every
    control, aria references that resolve, and no identifier of the vocabulary shown raw."""
    text = page.get_data(as_text=True)
    assert f'<html lang="{language}">' in text and len(re.findall(r"<h1[ >]", text)) == 1
    assert '<main id="main"' in text and "<script" not in text and "style=" not in text
    assert not re.search(r"<th(?=[\s>])(?![^>]*scope=)", text)
    for control in re.findall(r'<(?:input|select)\b(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', text):
        assert f'for="{control}"' in text, control
    for attribute in ("aria-describedby", "aria-labelledby"):
        for named in re.findall(rf'{attribute}="([^"]+)"', text):
            for target in named.split():
                assert f'id="{target}"' in text, (attribute, target)
    shown = visible_text(page)
    raw = [word for word in (*RETENTION_STATUTES, "retained", "overdue", *ON_CONSENT) if f" {word} " in shown]
    assert raw == [], raw


def answers_on_the_page(page: TestResponse) -> dict[str, str]:
    """The consent page's table of answers: organisation → what its row says."""
    text = page.get_data(as_text=True)
    table = re.search(r'<caption id="answers-caption">.*?</table>', text, re.S)
    assert table, text
    rows = re.findall(r'<th scope="row">(.*?)</th>(.*?)</tr>', table.group(0), re.S)
    return {
        html.unescape(name.strip()): " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cells)).split())
        for name, cells in rows
    }


# --- the acceptance ------------------------------------------------------------------------------------------------


def test_a_withdrawal_in_the_portal_reaches_every_recipient_and_their_answers_reach_the_person_and_the_dpo(
    env: Env, clock: FixedClock, receivers: dict[str, Receiver]
) -> None:
    person_id = person_who_can_log_in(env)
    env.serve(person_id, *ON_CONSENT, BY_STATUTE, SOURCE)
    deposit(env, SOURCE, person_id, CATEGORY)
    for org, receiver in receivers.items():
        registered = env.post(org, "/webhooks", {"url": receiver.url, "events": ["consent.withdrawn"]})
        assert registered.status_code == 201, registered.get_json()

    # Employment services asks; the person grants in the portal.
    asked = env.post(
        "kisalli",
        "/consent-requests",
        {
            "person_id": person_id,
            "recipients": [*ON_CONSENT, BY_STATUTE],
            "categories": [CATEGORY],
            "purposes": [PURPOSE],
            "valid_days": 180,
            "reason": "Jotta voimme suunnitella palvelusi yhdessä.",
        },
    )
    assert asked.status_code == 201, asked.get_json()
    browser = log_in(env, "mikko")
    granted = grant_in_portal(
        browser,
        asked.get_json()["consent_request_id"],
        {"recipients": [*ON_CONSENT, BY_STATUTE], "categories": [CATEGORY], "confirm_special": "yes"},
    )
    consent_id = location(granted).rsplit("/", 1)[1]

    # Three recipients receive the assessment under the consent; social work by statute.
    for org in ON_CONSENT:
        assert disclose(env, org, person_id)["basis"]["consent_id"] == consent_id
    assert disclose(env, BY_STATUTE, person_id)["basis"]["kind"] == "statute"

    # The person withdraws in the portal, told first that the recipients must answer.
    clock.advance(minutes=5)
    env._tokens.clear()
    confirm = browser.get(f"/portal/consents/{consent_id}/withdraw", headers=EN)
    assert "must say within 14 days whether it has deleted the information" in visible_text(confirm)
    withdrawn = browser.post(f"/portal/consents/{consent_id}/withdraw", token=csrf_of(confirm))
    assert location(withdrawn) == f"/portal/consents/{consent_id}"
    withdrawn_at = clock.now()
    due_at = withdrawn_at + timedelta(days=14)

    # Each recipient that received data is asked to attest; social work is told only; the person acted, so the
    # requester is told too (it is also a recipient that received data).
    told = withdrawn_events(env)
    assert sorted(told) == sorted([*ON_CONSENT, BY_STATUTE])
    asked_to_attest = attestation_rows(env)
    assert sorted(asked_to_attest) == sorted(ON_CONSENT)
    for org in ON_CONSENT:
        attestation = told[org]["data"]["attestation"]
        assert attestation["required"] is True and attestation["attestation_id"] == asked_to_attest[org].id
        assert attestation["due_at"] == due_at.isoformat().replace("+00:00", "Z")
        assert asked_to_attest[org].event_id == told[org]["id"]
    assert told[BY_STATUTE]["data"]["attestation"] == {"required": False}

    # Pushed for real: each receiver gets its one signed token, verifiable with the broker's published keys.
    report = deliver_due(env.broker, concurrency=1)
    assert report.count("delivered") == len(ON_CONSENT), report.lines()
    jwks = env.client.get("/.well-known/jwks.json").get_json()
    for org, receiver in receivers.items():
        [(content_type, body)] = receiver.received
        assert content_type == SET_MEDIA_TYPE
        claims = verify_jws(body.decode("ascii"), jwks, typ=SET_TYP)
        assert (claims["aud"], claims["jti"]) == (org, told[org]["id"])
        [(uri, data)] = claims["events"].items()
        assert uri == event_uri(env.issuer, "consent.withdrawn")
        assert data["consent_id"] == consent_id and data["person_id"] == person_id
        assert data["attestation"]["attestation_url"] == f"{env.issuer}/api/v1/consents/{consent_id}/attestation"

    # One deletes, one keeps the data under the Client Data Act; Ohjaamo says nothing.
    clock.advance(minutes=20)  # within the portal session's idle time
    env._tokens.clear()  # the cached access tokens expired meanwhile
    deleted = attest(env, "kisalli", consent_id, outcome="deleted")
    assert deleted.status_code == 200, deleted.get_json()
    retained = attest(
        env,
        "aurajoki-foundation",
        consent_id,
        outcome="retained",
        statute="703/2023",
        note="Part of our client documents as the producer of the work activity.",
    )
    assert retained.status_code == 200, retained.get_json()
    assert retained.get_json()["status"] == "retained" and retained.get_json()["late"] is False

    # The person sees every answer on the consent's page, in each language.
    browser.client.set_cookie("broker_lang", "en")
    page = browser.get(f"/portal/consents/{consent_id}")
    assert page.status_code == 200
    shown = answers_on_the_page(page)
    assert shown == {
        "Työllistämispalvelut Kisälli, Lieto": f"Deleted Deleted on {shown_date(clock.now())}.",
        "Aurajoen työkeskussäätiö": (
            "Kept because a law requires it Kept because of this law: Act on the Processing of Client Data in "
            f"Healthcare and Social Welfare (703/2023). Answered on {shown_date(clock.now())}."
        ),
        "Ohjaamo Turku": f"Waiting for the answer The answer is due by {shown_date(due_at)}.",
    }, shown
    for language, law in (
        ("fi", "Laki sosiaali- ja terveydenhuollon asiakastietojen käsittelystä (703/2023)"),
        ("sv", "Lag om behandling av klientuppgifter inom social- och hälsovården (703/2023)"),
        ("en", "Act on the Processing of Client Data in Healthcare and Social Welfare (703/2023)"),
    ):
        browser.client.set_cookie("broker_lang", language)
        page = browser.get(f"/portal/consents/{consent_id}")
        assert_accessible(page, language)
        text = visible_text(page)
        assert law in text and shown_date(due_at, language) in text, language

    # Not in the DPO's queue before the deadline, not even a minute before it.
    assert overdue_items(env) == []
    clock.at = due_at - timedelta(minutes=1)
    assert overdue_items(env) == []

    # After it, the silent recipient is: one item, at the withdrawal's log entry, naming it.
    clock.at = due_at + timedelta(days=1)
    [item] = overdue_items(env)
    with env.broker.uow(write=False) as uow:
        withdrawal = uow.session.get(AuditEntryRow, item.entry_id)
        assert withdrawal is not None and withdrawal.event == "consent:withdraw"
        logged = json.loads(bytes(withdrawal.entry))
    assert logged["basis"]["consent_id"] == consent_id
    assert logged["detail"]["attestations_asked"] == sorted(ON_CONSENT)
    assert (item.organisation, item.person_id) == ("ohjaamo-turku", person_id)
    assert dict(item.detail) == {
        "consent_id": consent_id,
        "silent": ["ohjaamo-turku"],
        "due": due_at.astimezone(HELSINKI).date().isoformat(),
        "asked": 3,
    }
    queue = dpo.anomaly_queue(env.broker, OFFICER)
    [queued] = [i for i in queue["items"] if i["rule"] == rules.ATTESTATION_OVERDUE]
    assert queued["organisation_name"] == "Ohjaamo Turku" and queued["detail"]["silent_names"] == ["Ohjaamo Turku"]
    assert queue["counts"][rules.ATTESTATION_OVERDUE] == 1
    # An old silence does not age out of a short queue.
    assert [i["entry_id"] for i in dpo.anomaly_queue(env.broker, OFFICER, days=1)["items"]] == [item.entry_id]
    # The person sees it too.
    view = person_portal.get_consent(env.broker, person_portal.portal_user(env.broker, person_id), consent_id)
    statuses = {a["organisation"]["id"]: a["status"] for a in view["attestations"]}
    assert statuses == {"kisalli": "deleted", "aurajoki-foundation": "retained", "ohjaamo-turku": "overdue"}

    # Reviewable like every item: the review is stored and logged, and the item leaves the open queue.
    reviewed = dpo.review_anomaly(
        env.broker,
        OFFICER,
        item.entry_id,
        rules.ATTESTATION_OVERDUE,
        note="Called Ohjaamo; they will answer this week.",
        outcome="follow_up",
    )
    assert reviewed["outcome"] == "follow_up"
    assert overdue_items(env) != [] and not [
        i for i in dpo.anomaly_queue(env.broker, OFFICER)["items"] if i["rule"] == rules.ATTESTATION_OVERDUE
    ]
    with pytest.raises(ConflictError):
        dpo.review_anomaly(
            env.broker, OFFICER, item.entry_id, rules.ATTESTATION_OVERDUE, note="Again.", outcome="justified"
        )

    # A late answer is accepted, marked late, and ends the silence.
    env._tokens.clear()  # the cached access tokens expired meanwhile
    late = attest(env, "ohjaamo-turku", consent_id, outcome="deleted")
    assert late.status_code == 200, late.get_json()
    assert late.get_json()["late"] is True and late.get_json()["status"] == "deleted"
    assert overdue_items(env) == []
    with env.broker.uow(write=False) as uow:
        answers = [
            json.loads(bytes(e))
            for e in uow.session.scalars(
                select(AuditEntryRow.entry).where(AuditEntryRow.event == "consent:attest").order_by(AuditEntryRow.id)
            )
        ]
    assert [
        (a["organisation"], a["detail"]["outcome"], a["detail"].get("statute"), a["detail"]["late"]) for a in answers
    ] == [
        ("kisalli", "deleted", None, False),
        ("aurajoki-foundation", "retained", "703/2023", False),
        ("ohjaamo-turku", "deleted", None, True),
    ]
    note = "Part of our client documents as the producer of the work activity."
    assert answers[1]["payload_sha256"] == hashlib.sha256(note.encode()).hexdigest()
    assert note not in json.dumps(answers)


def test_the_dpo_reviews_an_overdue_withdrawal_in_the_workspace_and_the_person_sees_the_silence(env: Env) -> None:
    """The withdrawal lies three weeks back (made with the clock moved there), so that both logins happen now."""
    now = env.clock.now()
    env.clock.at = now - timedelta(days=21)
    person_id = person_who_can_log_in(env)
    env.serve(person_id, "kisalli", "varha-health")
    deposit(env, "kisalli", person_id, "work_assessment")
    consent = env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person_id,
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "in_person",
            "witness": "Pekka Salo",
        },
    )
    consent_id = consent.get_json()["consent_id"]
    ask = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
    assert env.post("varha-health", "/disclosures", ask).status_code == 200
    assert env.post("kisalli", f"/consents/{consent_id}/withdraw", {"reason": "the person asked"}).status_code == 200
    due_at = env.clock.now() + timedelta(days=14)
    env.clock.at = now
    env._tokens.clear()

    person = log_in(env, "mikko")
    person.client.set_cookie("broker_lang", "en")
    assert answers_on_the_page(person.get(f"/portal/consents/{consent_id}")) == {
        "Varha, Liedon terveysasema": (
            f"No answer in time The answer was due on {shown_date(due_at)}. The matter has gone to the "
            "data-protection officer."
        )
    }

    workspace = log_in(env, "dpo", env.app.test_client())
    queue = workspace.get("/dpo/anomalies", headers=EN)
    [path] = re.findall(r'href="(/dpo/anomalies/\d+/attestation_overdue)"', queue.get_data(as_text=True))
    text = visible_text(queue)
    assert "Withdrawal not answered" in text
    assert f"Consent {consent_id}: no answer from Varha, Liedon terveysasema" in text
    for language, rule in (("fi", "Peruutukseen ei vastattu"), ("sv", "Återkallelsen besvarades inte")):
        workspace.client.set_cookie("broker_lang", language)
        assert rule in visible_text(workspace.get("/dpo/anomalies")), language
    workspace.client.set_cookie("broker_lang", "en")
    form = workspace.get(path, headers=EN)
    assert form.status_code == 200 and "Varha, Liedon terveysasema" in visible_text(form)
    saved = workspace.post(
        path, {"note": "Asked the health centre to answer.", "outcome": "follow_up", "days": "30"}, token=csrf_of(form)
    )
    assert location(saved) == "/dpo/anomalies"
    with env.broker.uow(write=False) as uow:
        [review] = uow.session.scalars(select(DpoReviewRow)).all()
    assert (review.rule, review.outcome) == ("attestation_overdue", "follow_up")
    assert path not in workspace.get("/dpo/anomalies", headers=EN).get_data(as_text=True)
    assert "Withdrawal not answered" in visible_text(workspace.get("/dpo/anomalies?tab=reviewed", headers=EN))


# --- the API's answers to wrong attestations -----------------------------------------------------------------------


@pytest.fixture
def withdrawn(env: Env) -> str:
    """A consent under which the health centre received Kisälli's work assessment (F7), withdrawn at Kisälli; Ohjaamo
    is named in it but received nothing."""
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    deposit(env, "kisalli", person_id, "work_assessment")
    consent = env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person_id,
            "recipients": ["varha-health", "ohjaamo-turku"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "paper",
        },
    )
    consent_id: str = consent.get_json()["consent_id"]
    ask = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
    assert env.post("varha-health", "/disclosures", ask).status_code == 200
    assert env.post("kisalli", f"/consents/{consent_id}/withdraw", {}).status_code == 200
    return consent_id


def problem(response: TestResponse, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()
    assert response.status_code == status, body
    assert response.mimetype == "application/problem+json"
    assert body["code"] == code, body
    if field is not None:
        assert body["field"] == field, body
    return body


def test_an_answer_for_an_unknown_consent_or_without_a_question_is_404(env: Env, withdrawn: str) -> None:
    problem(attest(env, "varha-health", "con_" + "0" * 32, outcome="deleted"), 404, "unknown_consent")
    # Named in the consent, but it received nothing: it was not asked.
    problem(attest(env, "ohjaamo-turku", withdrawn, outcome="deleted"), 404, "unknown_attestation")
    # Not named at all: the consent is not its to see.
    problem(attest(env, "demo-employer", withdrawn, outcome="deleted"), 404, "unknown_consent")
    # A consent that is still in force asks no one.
    person_id = env.person()
    active = env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person_id,
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "paper",
        },
    )
    problem(attest(env, "varha-health", active.get_json()["consent_id"], outcome="deleted"), 404, "unknown_attestation")
    assert attestation_rows(env)["varha-health"].outcome is None


def test_retained_needs_a_statute_that_requires_keeping_client_records(env: Env, withdrawn: str) -> None:
    problem(attest(env, "varha-health", withdrawn, outcome="retained"), 400, "invalid_request", "statute")
    problem(attest(env, "varha-health", withdrawn, outcome="retained", statute=None), 400, "invalid_request", "statute")
    free_text = problem(
        attest(env, "varha-health", withdrawn, outcome="retained", statute="we need it for our own statistics"),
        400,
        "unknown_statute",
        "statute",
    )
    assert free_text["accepted"] == list(RETENTION_STATUTES)
    for statute in RETENTION_STATUTES:
        assert statute in free_text["detail"]
    # A statute that lifts secrecy for a disclosure is not one that keeps records; nor is a repealed one.
    for statute in ("189/2001", "254/2015", "703/2023 53 §"):
        problem(attest(env, "varha-health", withdrawn, outcome="retained", statute=statute), 400, "unknown_statute")
    problem(attest(env, "varha-health", withdrawn, outcome="deleted", statute="703/2023"), 400, "invalid_request")
    problem(attest(env, "varha-health", withdrawn, outcome="archived"), 400, "invalid_request", "outcome")
    problem(attest(env, "varha-health", withdrawn, outcome="deleted", note="x" * 2001), 400, "invalid_request")
    assert attestation_rows(env)["varha-health"].outcome is None


def test_an_organisation_answers_once_and_only_for_itself(env: Env, withdrawn: str) -> None:
    answered = attest(env, "varha-health", withdrawn, outcome="retained", statute="785/1992", note="  ")
    assert answered.status_code == 200, answered.get_json()
    body = answered.get_json()
    assert (body["organisation"], body["outcome"], body["statute"], body["note"]) == (
        "varha-health",
        "retained",
        "785/1992",
        None,
    )
    again = problem(attest(env, "varha-health", withdrawn, outcome="deleted"), 409, "already_attested")
    assert "already attested" in again["detail"]
    # Kisälli, the requester, did not receive the data and cannot answer for the health centre.
    problem(attest(env, "kisalli", withdrawn, outcome="deleted"), 404, "unknown_attestation")
    row = attestation_rows(env)["varha-health"]
    assert (row.outcome, row.statute, row.answered_by_client) == ("retained", "785/1992", "varha-health")
    assert row.answered_by_actor == "varha-health-staff-1"


def test_each_organisation_lists_the_attestations_asked_of_it(env: Env, withdrawn: str) -> None:
    def listed(org: str, query: str = "") -> list[dict[str, Any]]:
        response = env.get(org, f"/attestations{query}")
        assert response.status_code == 200, response.get_json()
        found: list[dict[str, Any]] = response.get_json()
        return found

    [open_one] = listed("varha-health")
    assert (open_one["consent_id"], open_one["status"], open_one["outcome"]) == (withdrawn, "pending", None)
    assert listed("varha-health", "?status=answered") == []
    assert listed("kisalli", "?status=all") == [] and listed("ohjaamo-turku", "?status=all") == []
    env.clock.advance(days=15)
    env._tokens.clear()
    [overdue] = listed("varha-health")
    assert overdue["status"] == "overdue"
    assert attest(env, "varha-health", withdrawn, outcome="deleted").status_code == 200
    assert listed("varha-health") == []
    [answered] = listed("varha-health", "?status=answered")
    assert answered["status"] == "deleted" and answered["late"] is True
    assert listed("varha-health", "?status=all") == [answered]
    problem(env.get("varha-health", "/attestations?status=late"), 400, "invalid_request", "status")
    problem(env.get("varha-health", "/attestations?limit=0"), 400, "invalid_request", "limit")


# --- the rule and the statutes -------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def withdrawal(*attestations: AttestationFacts, entry_id: int = 7) -> WithdrawalFacts:
    return WithdrawalFacts(entry_id, T0, "con_1", "per_1", attestations)


def test_the_overdue_rule_flags_a_withdrawal_while_someone_asked_is_silent_past_the_due_date() -> None:
    due = T0 + timedelta(days=14)
    silent = AttestationFacts("ohjaamo-turku", due)
    answered = AttestationFacts("kisalli", due, T0 + timedelta(days=1))
    assert rules.attestations_overdue([withdrawal(silent, answered)], due - timedelta(seconds=1)) == []
    [finding] = rules.attestations_overdue([withdrawal(silent, answered)], due)
    assert (finding.rule, finding.entry_id, finding.logged_at, finding.organisation) == (
        rules.ATTESTATION_OVERDUE,
        7,
        T0,
        "ohjaamo-turku",
    )
    assert dict(finding.detail) == {"consent_id": "con_1", "silent": ["ohjaamo-turku"], "due": "2026-03-16", "asked": 2}
    # An answer given after `now` is not known yet at `now`; one given before it ends the silence.
    late = AttestationFacts("ohjaamo-turku", due, due + timedelta(days=2))
    assert len(rules.attestations_overdue([withdrawal(late)], due + timedelta(days=1))) == 1
    assert rules.attestations_overdue([withdrawal(late)], due + timedelta(days=2)) == []
    # Two silent: one item naming both, and no single organisation.
    [both] = rules.attestations_overdue([withdrawal(silent, AttestationFacts("aurajoki-foundation", due))], due)
    assert both.organisation is None and both.detail["silent"] == ["aurajoki-foundation", "ohjaamo-turku"]
    # A withdrawal logged after `now` is not read.
    assert rules.attestations_overdue([withdrawal(silent)], T0 - timedelta(seconds=1)) == []
    # evaluate() runs it with the log rules.
    found = rules.evaluate([], now=due, baselines={}, relationships={}, withdrawals=[withdrawal(silent)])
    assert [f.rule for f in found] == [rules.ATTESTATION_OVERDUE]


def test_every_statute_the_retention_schedule_rests_on_is_accepted_and_every_accepted_one_has_a_label() -> None:
    schedule = yaml.safe_load((ROOT / "policies" / "retention.yaml").read_text(encoding="utf-8"))
    cited = {
        number for rule in schedule["rules"].values() for number in re.findall(r"\b\d{1,4}/\d{4}\b", rule["reference"])
    }
    assert cited and cited <= set(RETENTION_STATUTES), cited - set(RETENTION_STATUTES)
    assert set(labels.STATUTES) == set(RETENTION_STATUTES)
    assert set(labels.ATTESTATION_STATUSES) == {"pending", "overdue", "deleted", "retained"}
