"""The data-protection officer's workspace (broker/http/dpo, broker/services/dpo.py, docs/dpo.md), on SQLite and
PostgreSQL: who gets in, searching the log, opening an entry and its actor commitment, a person's log report in
HTML, CSV and PDF, the anomaly rules and the review of their items, the register of processing activities, the
integrity page and "verify now", and the activity charts.

Log data comes from the partner API, as partners make it. The DPO logs in through the development identity
provider like a browser (tests/integration/test_portal.py), so the clock is the real present during the login;
data that must lie at other times is made first, with the clock moved, and the clock put back before the login.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from broker.adapters.orm import (
    AuditActorRow,
    AuditEntryRow,
    AuditLeafRow,
    AuditVerificationRow,
    DpoReviewRow,
    PortalSessionRow,
)
from broker.domain.clock import FixedClock
from broker.domain.errors import InvalidRequestError, NotFoundError
from broker.http.dpo import charts, documents
from broker.services import anomalies as rules
from broker.services import dpo, persons
from broker.services.anomalies import HELSINKI, LogFacts
from broker.services.audit_read import final_bytes, positioned
from broker.services.sequencer import Sequencer
from schemas.records.examples import EXAMPLES
from tests.integration.test_portal import csrf_of, location, log_in
from tests.support import ROLE, Env, new_hetu

EN = {"Accept-Language": "en"}
OFFICER = dpo.Officer(actor_id="Tiina Tietosuoja", name="Tiina Tietosuoja")


@pytest.fixture
def clock() -> FixedClock:
    # Authlib's client checks the ID token's `exp` and `iat` against the real time (tests/integration/test_portal.py).
    return FixedClock(at=datetime.now(UTC).replace(microsecond=0))


# --- Making log data -----------------------------------------------------------------------------------------------


def move_to(env: Env, moment: datetime) -> None:
    """Put the clock at `moment`; the cached partner tokens would be expired (or not yet issued) there."""
    env.clock.at = moment.astimezone(UTC)
    env._tokens.clear()


def back_to_now(env: Env) -> None:
    move_to(env, datetime.now(UTC).replace(microsecond=0))


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=HELSINKI)


def staff_token(env: Env, org: str, actor: str) -> str:
    """An access token for one named professional of `org` (the assertion's `act.sub`)."""
    response = env.token_response(org, env.assertion(org, act={"sub": actor, "role": ROLE[org]}))
    assert response.status_code == 200, response.get_json()
    token: str = response.get_json()["access_token"]
    return token


def ask(
    env: Env, token: str, person_id: str, category: str, purpose: str, exception: dict[str, str] | None = None
) -> TestResponse:
    body: dict[str, Any] = {"person_id": person_id, "category": category, "purpose": purpose}
    if exception is not None:
        body["exception"] = exception
    return env.client.post(
        "/api/v1/disclosures", json=body, headers=env.token_headers(token, "POST", "/api/v1/disclosures")
    )


def deposit(env: Env, org: str, person_id: str, category: str) -> None:
    response = env.post(org, "/records", {"person_id": person_id, "category": category, "content": EXAMPLES[category]})
    assert response.status_code == 201, response.get_json()


def consent_to_health(env: Env, person_id: str) -> str:
    response = env.post(
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
    assert response.status_code == 201, response.get_json()
    consent_id: str = response.get_json()["consent_id"]
    return consent_id


EXCEPTION = {"ground": "care_need_health_or_safety_at_risk", "justification": "Acute risk observed at the workplace."}


@dataclass
class Traffic:
    person: str
    hetu: str
    other: str
    consent_id: str
    times: dict[str, datetime]
    entries: dict[str, int]


def last_entry(env: Env, event: str) -> AuditEntryRow:
    with env.broker.uow(write=False) as uow:
        row = uow.session.scalars(
            select(AuditEntryRow).where(AuditEntryRow.event == event).order_by(AuditEntryRow.id.desc())
        ).first()
    assert row is not None, f"no {event} entry"
    return row


@pytest.fixture
def traffic(env: Env) -> Traffic:
    """Mikko, served by Kisälli, Varha social work and the health centre: an attendance report disclosed on a statute
    (F5), a work assessment refused, disclosed on his consent (F7) and then on a statutory exception, and one
    disclosure three years ago. Another person is only looked up."""
    now = env.clock.now()
    times = {
        "old": now - timedelta(days=3 * 365),
        "statute": now - timedelta(days=3),
        "deny": now - timedelta(days=2),
        "consent": now - timedelta(days=2) + timedelta(hours=1),
        "exception": now - timedelta(days=1),
    }
    hetu = new_hetu()
    move_to(env, times["old"])
    person = persons.resolve_person(env.broker, None, hetu, "Mikko Laine")
    assert env.person(hetu=hetu) == person
    env.serve(person, "kisalli", "varha-social-work", "varha-health")
    deposit(env, "kisalli", person, "attendance_report")
    entries = {}
    old = ask(env, env.token("varha-social-work"), person, "attendance_report", "follow_up")
    assert old.status_code == 200, old.get_json()
    entries["old"] = int(old.get_json()["audit_entry_id"])
    move_to(env, times["statute"])
    statute = ask(env, env.token("varha-social-work"), person, "attendance_report", "follow_up")
    assert statute.status_code == 200 and statute.get_json()["basis"]["kind"] == "statute"
    entries["statute"] = int(statute.get_json()["audit_entry_id"])
    move_to(env, times["deny"])
    deposit(env, "kisalli", person, "work_assessment")
    denied = ask(env, env.token("varha-health"), person, "work_assessment", "work_capacity_assessment")
    assert denied.status_code == 403
    entries["deny"] = last_entry(env, "disclosure:deny").id
    move_to(env, times["consent"])
    consent_id = consent_to_health(env, person)
    consented = ask(env, env.token("varha-health"), person, "work_assessment", "work_capacity_assessment")
    assert consented.status_code == 200 and consented.get_json()["basis"]["consent_id"] == consent_id
    entries["consent"] = int(consented.get_json()["audit_entry_id"])
    move_to(env, times["exception"])
    excepted = ask(env, env.token("varha-health"), person, "work_assessment", "work_capacity_assessment", EXCEPTION)
    assert excepted.status_code == 200 and excepted.get_json()["basis"]["kind"] == "exception"
    entries["exception"] = int(excepted.get_json()["audit_entry_id"])
    other = env.person()
    back_to_now(env)
    return Traffic(person, hetu, other, consent_id, times, entries)


# --- The DPO's browser ---------------------------------------------------------------------------------------------


@dataclass
class Workspace:
    client: FlaskClient

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.client.get(path, headers=EN, **kwargs)

    def token(self) -> str:
        return csrf_of(self.client.get("/dpo/integrity"))

    def post(self, path: str, data: dict[str, Any] | None = None, *, token: str | None = None) -> TestResponse:
        form = dict(data or {})
        form["csrf_token"] = token if token is not None else self.token()
        return self.client.post(path, data=form, headers=EN)


@pytest.fixture
def workspace(env: Env) -> Workspace:
    browser = log_in(env, "dpo")
    return Workspace(browser.client)


def text_of(page: TestResponse) -> str:
    body = page.get_data(as_text=True)
    body = re.sub(r"<(script|style|head)\b.*?</\1>", " ", body, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def entries(env: Env, event: str) -> list[dict[str, Any]]:
    with env.broker.uow(write=False) as uow:
        rows = uow.session.scalars(select(AuditEntryRow).where(AuditEntryRow.event == event).order_by(AuditEntryRow.id))
        return [json.loads(bytes(r.entry)) for r in rows]


def all_log_bytes(env: Env) -> bytes:
    with env.broker.uow(write=False) as uow:
        return b"\n".join(bytes(e) for e in uow.session.scalars(select(AuditEntryRow.entry)))


def linked_entries(page: TestResponse) -> list[int]:
    return [int(i) for i in re.findall(r'href="/dpo/entries/(\d+)"', page.get_data(as_text=True))]


# --- Who gets in ---------------------------------------------------------------------------------------------------


def test_a_visitor_is_sent_to_the_portal_login_and_brought_back_to_the_workspace(env: Env) -> None:
    client = env.app.test_client()
    assert location(client.get("/dpo/search?effect=deny")) == "/portal/login"
    log_in(env, "dpo", client, landing="/dpo/search?effect=deny")
    page = client.get("/dpo/search?effect=deny", headers=EN)
    assert page.status_code == 200
    assert "Search the log" in text_of(page)
    # The portal's DPO landing page leads here, and the same session works on both.
    assert 'href="/dpo/"' in client.get("/portal/", headers=EN).get_data(as_text=True)


def test_a_person_who_is_not_the_dpo_is_refused(env: Env) -> None:
    hetu = new_hetu(date(1980, 5, 5))
    person = persons.resolve_person(env.broker, None, hetu, "Mikko Laine")
    demo = {"persons": [{"person_id": person, "hetu": hetu, "name": "Mikko Laine", "login": "mikko"}]}
    instance = env.broker.settings.instance_path
    (instance / "demo.json").write_text(json.dumps(demo), encoding="utf-8")
    browser = log_in(env, "mikko")
    for path in ("/dpo/", "/dpo/search", f"/dpo/persons/{person}", "/dpo/integrity", "/dpo/register.csv"):
        page = browser.get(path, headers=EN)
        assert page.status_code == 403, path
        assert "for the data-protection officer only" in text_of(page)
    token = csrf_of(browser.get("/portal/"))
    assert browser.client.post("/dpo/integrity/verify", data={"csrf_token": token}).status_code == 403
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalars(select(AuditVerificationRow)).first() is None


def test_every_page_is_served_with_the_portals_headers_and_no_script(env: Env, workspace: Workspace) -> None:
    for path in ("/dpo/", "/dpo/search", "/dpo/persons", "/dpo/anomalies", "/dpo/register", "/dpo/integrity"):
        page = workspace.get(path)
        assert page.status_code == 200, path
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy and "unsafe-inline" not in policy
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["Content-Language"] == "en"
        body = page.get_data(as_text=True)
        assert "<script" not in body and " style=" not in body
        assert '<html lang="en">' in body and body.count("<h1") == 1


def test_a_form_without_the_sessions_csrf_token_is_refused(env: Env, workspace: Workspace) -> None:
    refused = workspace.post("/dpo/integrity/verify", token="forged")
    assert refused.status_code == 400
    assert "The form has expired" in text_of(refused)
    assert workspace.get("/dpo/integrity/verify").status_code == 405
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalars(select(AuditVerificationRow)).first() is None


def test_the_language_switch_brings_the_dpo_back_to_the_workspace_page(env: Env, workspace: Workspace) -> None:
    answer = workspace.post("/portal/language", {"lang": "sv", "next": "/dpo/register"})
    assert location(answer) == "/dpo/register"
    page = workspace.client.get("/dpo/register")
    assert '<html lang="sv">' in page.get_data(as_text=True)
    # Never to another site.
    elsewhere = workspace.post("/portal/language", {"lang": "fi", "next": "https://example.org/dpo/"})
    assert location(elsewhere) == "/portal/"


# --- Searching the log ---------------------------------------------------------------------------------------------


def test_the_search_filters_each_narrow_the_entries(env: Env, traffic: Traffic) -> None:
    broker = env.broker

    def found(**filters: Any) -> list[int]:
        """The ids found, leaving out the entries that the searches themselves append."""
        result = dpo.search_log(broker, OFFICER, dpo.LogSearch(limit=200, **filters))
        return [row["entry_id"] for row in result["rows"] if row["event"] != "audit:query"]

    def about_the_person() -> list[int]:
        with broker.uow(write=False) as uow:
            stmt = select(AuditEntryRow.id).where(AuditEntryRow.person_id == traffic.person)
            return sorted(uow.session.scalars(stmt))

    mine = about_the_person()
    by_person = found(person_id=traffic.person)
    assert by_person == sorted(mine, reverse=True)  # newest first
    assert found(person_id=traffic.person, newest_first=False) == mine
    assert found(effect="deny") == [traffic.entries["deny"]]
    assert found(basis_kind="exception") == [traffic.entries["exception"]]
    assert found(basis_kind="consent", event="disclosure:permit") == [traffic.entries["consent"]]
    assert found(basis_kind="statute", person_id=traffic.person) == [traffic.entries["statute"], traffic.entries["old"]]
    assert set(found(category="work_assessment", event="disclosure:permit")) == {
        traffic.entries["consent"],
        traffic.entries["exception"],
    }
    assert found(purpose="follow_up") == [traffic.entries["statute"], traffic.entries["old"]]
    assert set(found(organisation="varha-health", event="disclosure:permit")) == {
        traffic.entries["consent"],
        traffic.entries["exception"],
    }
    # The professional, through the actor openings kept beside the log.
    assert found(actor_id="varha-social-work-staff-1", event="disclosure:permit") == [
        traffic.entries["statute"],
        traffic.entries["old"],
    ]
    assert found(actor_id="nobody-at-all") == []
    # A period: from the deny's day to the day before the exception.
    since = rules.day_start(rules.local_day(traffic.times["deny"]))
    until = rules.day_start(rules.local_day(traffic.times["exception"]))
    assert found(since=since, until=until, person_id=traffic.person, event="disclosure:permit") == [
        traffic.entries["consent"]
    ]
    # Page by page, newest first with the cursor: nothing twice and nothing left out (the entries that the
    # searches append are newer than the first page, so they are not on it).
    everything = about_the_person()
    seen: list[int] = []
    cursor = None
    while True:
        page = dpo.search_log(broker, OFFICER, dpo.LogSearch(person_id=traffic.person, cursor=cursor, limit=3))
        seen += [row["entry_id"] for row in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(everything, reverse=True)


def test_each_search_is_logged_with_its_filters_and_never_names_the_professional(env: Env, traffic: Traffic) -> None:
    search = dpo.LogSearch(person_id=traffic.person, actor_id="varha-social-work-staff-1", effect="deny")
    dpo.search_log(env.broker, OFFICER, search)
    [logged] = [e for e in entries(env, "audit:query") if e.get("person_id") == traffic.person]
    assert logged["detail"]["surface"] == "dpo"
    assert logged["detail"]["filters"] == {
        "person_id": traffic.person,
        "effect": "deny",
        "actor": True,
        "order": "newest",
    }
    assert logged["detail"]["returned"] == 0 and logged["actor_role"] == "data_protection_officer"
    assert "varha-social-work-staff-1" not in json.dumps(logged) and "Tiina" not in json.dumps(logged)
    row = last_entry(env, "audit:query")
    with env.broker.uow(write=False) as uow:
        opening = uow.session.get(AuditActorRow, row.id)
    assert opening is not None and opening.actor_id == OFFICER.actor_id


def test_the_search_page_shows_index_time_event_organisation_and_basis(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    page = workspace.get(f"/dpo/search?person_id={traffic.person}&category=work_assessment&order=oldest")
    assert page.status_code == 200
    wanted = [traffic.entries["deny"], traffic.entries["consent"], traffic.entries["exception"]]
    assert [e for e in linked_entries(page) if e in wanted] == wanted  # the deposit of the assessment is there too
    text = text_of(page)
    for words in (
        "Request for records refused",
        "Records disclosed on request",
        "Varha, Liedon terveysasema",
        "Statutory exception",
        "703/2023 56 §",
        traffic.consent_id,
        "pending",  # nothing has been sequenced yet
        "Mikko Laine",
    ):
        assert words in text, words
    Sequencer(env.broker).run_once()
    sequenced = workspace.get(f"/dpo/search?person_id={traffic.person}&category=work_assessment&order=oldest")
    assert "pending" not in text_of(sequenced).split("Results", 1)[1]
    assert workspace.get("/dpo/search?effect=maybe").status_code == 400
    assert workspace.get("/dpo/search?since=yesterday").status_code == 400
    assert workspace.get("/dpo/search?colour=red").status_code == 400


def test_a_search_by_identity_code_is_posted_and_the_code_stays_out_of_urls_pages_and_the_log(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    answer = workspace.post("/dpo/search/person", {"hetu": traffic.hetu})
    assert location(answer) == f"/dpo/search?person_id={traffic.person}"
    page = workspace.get(location(answer))
    assert page.status_code == 200 and traffic.entries["exception"] in linked_entries(page)
    assert traffic.hetu not in page.get_data(as_text=True)
    lookup = [e for e in entries(env, "audit:query") if e["detail"]["filters"] == {"identity_code": True}]
    assert lookup and lookup[0]["person_id"] == traffic.person and lookup[0]["detail"]["returned"] == 1
    # A code no one has, and one that is no code at all.
    unknown = workspace.post("/dpo/search/person", {"hetu": new_hetu()})
    assert unknown.status_code == 404 and "No one with this personal identity code" in text_of(unknown)
    malformed = workspace.post("/dpo/search/person", {"hetu": "010101-123X"})
    assert malformed.status_code == 400 and "010101-123X" not in malformed.get_data(as_text=True)
    assert traffic.hetu.encode() not in all_log_bytes(env)


# --- One entry and its actor commitment ----------------------------------------------------------------------------


def test_an_entry_shows_its_canonical_bytes_and_opening_the_commitment_names_the_professional(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    entry_id = traffic.entries["statute"]
    page = workspace.get(f"/dpo/entries/{entry_id}")
    assert page.status_code == 200
    with env.broker.uow(write=False) as uow:
        found = uow.session.execute(positioned().where(AuditEntryRow.id == entry_id)).one()
        canonical = final_bytes(found.AuditEntryRow.entry, found.AuditEntryRow.split, found.idx).decode()
    assert canonical in html.unescape(page.get_data(as_text=True))
    assert "varha-social-work-staff-1" not in page.get_data(as_text=True)
    opened = workspace.post(f"/dpo/entries/{entry_id}/actor")
    assert opened.status_code == 200
    assert "varha-social-work-staff-1" in text_of(opened) and "it verifies" in text_of(opened)
    [logged] = entries(env, "dpo:open_commitment")
    assert logged["detail"] == {"surface": "dpo", "entry_id": entry_id, "verified": True}
    assert logged["person_id"] == traffic.person
    # A stored opening that does not match the leaf's commitment is shown as such, and logged as such.
    with env.broker.uow() as uow:
        uow.session.execute(
            update(AuditActorRow).where(AuditActorRow.entry_id == entry_id).values(actor_id="someone-else")
        )
        uow.commit()
    tampered = workspace.post(f"/dpo/entries/{entry_id}/actor")
    assert "do NOT match" in text_of(tampered)
    assert entries(env, "dpo:open_commitment")[-1]["detail"]["verified"] is False
    assert workspace.get("/dpo/entries/999999").status_code == 404


def test_an_entry_without_an_actor_has_no_commitment_to_open(env: Env, workspace: Workspace) -> None:
    with env.broker.uow() as uow:
        from broker.services.audit_log import append_entry

        entry_id = append_entry(uow, event="consent:expire", now=env.clock.now(), detail={"consents": 1})
        uow.commit()
    assert "names no professional" in text_of(workspace.get(f"/dpo/entries/{entry_id}"))
    assert workspace.post(f"/dpo/entries/{entry_id}/actor").status_code == 404


# --- A person's log report ----------------------------------------------------------------------------------------


def test_the_report_lists_every_disclosure_of_the_last_two_years_with_recipient_basis_and_fields(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    page = workspace.get(f"/dpo/persons/{traffic.person}")
    assert page.status_code == 200
    text = text_of(page)
    for words in (
        "Mikko Laine",
        traffic.person,
        "Varha, aikuissosiaalityö",
        "Varha, Liedon terveysasema",
        "703/2023 14 §, 17 §",  # F5's statute
        f"consent {traffic.consent_id}",
        "703/2023 56 §",
        "No basis: nothing was shared.",
        ", ".join(sorted(env.broker.policy.rule("F5").fields["attendance_report"])),
        "One older disclosure is not included.",
        "Record deposited",
    ):
        assert words in text, words
    assert text.count("Records disclosed on request") == 3  # statute, consent, exception — not the old one
    [made] = entries(env, "dpo:report")
    assert made["person_id"] == traffic.person
    assert made["detail"] == {
        "surface": "dpo",
        "form": "html",
        "special_reason": False,
        "disclosures": 4,
        "events": made["detail"]["events"],
    }


def test_with_a_special_reason_the_report_includes_entries_older_than_two_years(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    page = workspace.get(f"/dpo/persons/{traffic.person}?special_reason=yes")
    text = text_of(page)
    assert text.count("Records disclosed on request") == 4 and "older disclosure" not in text
    assert "the whole log" in text
    assert entries(env, "dpo:report")[-1]["detail"]["special_reason"] is True
    assert workspace.get(f"/dpo/persons/{traffic.person}?reason=moon").status_code == 400
    assert workspace.get("/dpo/persons/per_nobody").status_code == 404


def test_the_report_downloads_as_csv_for_excel(env: Env, traffic: Traffic, workspace: Workspace) -> None:
    answer = workspace.get(f"/dpo/persons/{traffic.person}/report.csv")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert answer.headers["Content-Disposition"] == f'attachment; filename="log-report-{traffic.person}.csv"'
    data = answer.get_data()
    assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 with a byte-order mark, for Excel
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0][:3] == ["Time", "What happened", "Organisation"]
    disclosed = [r for r in rows[1:] if r[1] == "Records disclosed on request"]
    assert len(disclosed) == 3
    statute = next(r for r in disclosed if r[7] == "703/2023 14 §, 17 §")
    # The fields are one cell although they hold the separator: the writer quoted it.
    assert statute[10] == ", ".join(sorted(env.broker.policy.rule("F5").fields["attendance_report"]))
    assert f'"{statute[10]}"' in data.decode("utf-8-sig")
    assert any(r[8] == traffic.consent_id for r in disclosed)
    assert b"\r\n" in data and traffic.hetu.encode() not in data
    # In Finnish (Excel's Finnish regional settings split on semicolons), and everything translated.
    finnish = workspace.client.get(
        f"/dpo/persons/{traffic.person}/report.csv", headers={"Accept-Language": "fi"}
    ).get_data()
    fi_rows = list(csv.reader(io.StringIO(finnish.decode("utf-8-sig"), newline=""), delimiter=";"))
    # One row more: the English report is in the log now.
    assert len(fi_rows) == len(rows) + 1 and fi_rows[0][0] == "Aika"
    assert entries(env, "dpo:report")[-1]["detail"]["form"] == "csv"


def test_a_formula_in_a_csv_cell_is_written_as_text() -> None:
    data = documents.write_csv(["a", "b"], [["=HYPERLINK(1)", "-2"], ["plain", "x;y"]], language="fi")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert rows[1] == ["'=HYPERLINK(1)", "'-2"] and rows[2] == ["plain", "x;y"]


def _pdf_text(data: bytes) -> str:
    """The page content of a PDF whose streams are Flate-compressed (what fpdf2 writes), decompressed."""
    out = []
    # Each stream is decompressed from its start to the end of its zlib data (a decompressobj stops there): finding
    # its end by the `endstream` keyword instead would cut off a last byte of compressed data that happens to be
    # a carriage return (the EOL before `endstream` may be CRLF), about once in 256 reports.
    for start in re.finditer(rb"stream\r?\n", data):
        try:
            out.append(zlib.decompressobj().decompress(data[start.end() :]).decode("latin-1"))
        except zlib.error:
            continue
    return "\n".join(out)


def test_the_report_downloads_as_pdf(env: Env, traffic: Traffic, workspace: Workspace) -> None:
    answer = workspace.get(f"/dpo/persons/{traffic.person}/report.pdf")
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    data = answer.get_data()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    if documents.unicode_font() is not None:
        assert b"/FontFile2" in data  # DejaVu Sans, embedded
    assert entries(env, "dpo:report")[-1]["detail"]["form"] == "pdf"
    # With the core font (no DejaVu on the machine), the text is in the page streams as Latin-1.
    report = dpo.person_report(env.broker, OFFICER, traffic.person, special_reason=False, form="pdf")
    with env.app.test_request_context("/dpo/", headers=EN):
        core = documents.report_pdf(report, fonts=None)
    assert b"/FontFile2" not in core and b"/Helvetica" in core
    text = _pdf_text(core)
    for words in ("Log report", traffic.person, "703/2023 14 \xa7, 17 \xa7", "Varha, Liedon terveysasema"):
        assert words in text, words


def test_the_core_font_keeps_finnish_and_swedish_letters_and_transliterates_the_rest() -> None:
    assert documents.latin1("Kisälli – Åbo “ok” … Œ ž") == 'Kisälli - Åbo "ok" ... ? z'


# --- The anomaly rules, each on its own --------------------------------------------------------------------------

MONDAY = date(2026, 3, 2)  # winter time, UTC+2
SATURDAY = date(2026, 3, 7)
JUNE_MONDAY = date(2026, 6, 1)  # summer time, UTC+3


def use(
    entry_id: int,
    at: datetime,
    *,
    event: str = "disclosure:permit",
    org: str = "kisalli",
    actor: str = "k-1",
    person: str = "per_a",
    basis_kind: str | None = "statute",
    grounds: tuple[str, ...] = (),
) -> LogFacts:
    return LogFacts(
        entry_id=entry_id,
        logged_at=at.astimezone(UTC),
        event=event,
        organisation=org,
        actor_id=actor,
        person_id=person,
        effect="deny" if event == "disclosure:deny" else "permit",
        basis_kind=None if event == "disclosure:deny" else basis_kind,
        exception_grounds=grounds,
    )


def test_out_of_hours_flags_nights_and_weekends_in_finnish_time() -> None:
    flagged = rules.out_of_hours(
        [
            use(1, local(MONDAY, 6, 59)),
            use(2, local(MONDAY, 7, 0)),
            use(3, local(MONDAY, 18, 59)),
            use(4, local(MONDAY, 19, 0)),
            use(5, local(SATURDAY, 12, 0)),
            use(6, local(JUNE_MONDAY, 7, 30)),  # 04:30 UTC: office hours in Helsinki's summer time
            use(7, local(MONDAY, 3, 0), event="disclosure:deny"),  # a refusal discloses nothing
            use(8, local(MONDAY, 23, 0), event="notice:send"),
        ]
    )
    assert [f.entry_id for f in flagged] == [1, 4, 8, 5]  # in time order
    assert flagged[3].detail == {"local_time": "2026-03-07 12:00", "weekend": True}
    assert rules.out_of_hours([use(9, local(MONDAY, 12, 0))]) == []


def _day_of_requests(count: int, *, actor: str = "k-1", org: str = "kisalli") -> list[LogFacts]:
    return [use(100 + i, local(MONDAY, 9) + timedelta(minutes=i), actor=actor, org=org) for i in range(count)]


def test_a_volume_spike_is_above_three_times_the_professionals_own_mean_and_at_least_twenty() -> None:
    no_history: dict[tuple[str, str, date], int] = {}
    assert rules.volume_spikes(_day_of_requests(19), no_history) == []
    [spike] = rules.volume_spikes(_day_of_requests(25), no_history)
    assert spike.entry_id == 119 and spike.detail == {"day": "2026-03-02", "count": 20, "baseline_mean": 0.0}
    busy = {("kisalli", "k-1", MONDAY): 300}  # 10 a day over 30 days
    assert rules.volume_spikes(_day_of_requests(30), busy) == []
    [spike] = rules.volume_spikes(_day_of_requests(31), busy)
    assert spike.detail["count"] == 31 and spike.detail["baseline_mean"] == 10.0
    # Another professional's history is not this one's.
    assert len(rules.volume_spikes(_day_of_requests(20, actor="k-2"), busy)) == 1
    assert rules.volume_candidates(_day_of_requests(20)) == {("kisalli", "k-1", MONDAY)}
    assert rules.volume_candidates(_day_of_requests(19)) == set()


def test_persons_without_a_service_relationship_are_flagged_at_the_fifth_in_a_day() -> None:
    start = local(MONDAY, 10)
    five = [use(i, start + timedelta(minutes=i), person=f"per_{i}") for i in range(5)]
    [finding] = rules.without_relationship(five, {})
    assert finding.entry_id == 4 and finding.detail == {"day": "2026-03-02", "persons": 5}
    # One of them served by the organisation, and one asked for twice: four distinct persons, nothing.
    served = {("per_0", "kisalli"): [(start - timedelta(days=10), None)]}
    repeated = [*five[:4], use(9, start + timedelta(hours=1), person="per_1"), five[4]]
    assert rules.without_relationship(repeated, served) == []
    # A relationship that had ended before the disclosure does not count; one started later neither.
    ended = {
        ("per_0", "kisalli"): [(start - timedelta(days=10), start - timedelta(days=1))],
        ("per_1", "kisalli"): [(start + timedelta(hours=2), None)],
    }
    assert len(rules.without_relationship(five, ended)) == 1
    # Spread over two days: four and one.
    spread = [*five[:4], use(4, local(MONDAY + timedelta(days=1), 10), person="per_4")]
    assert rules.without_relationship(spread, {}) == []


def test_repeated_denials_are_five_refusals_of_one_professional_within_an_hour() -> None:
    start = local(MONDAY, 10)
    burst = [use(i, start + timedelta(minutes=12 * i), event="disclosure:deny") for i in range(5)]  # 48 minutes
    [finding] = rules.repeated_denials(burst)
    assert finding.entry_id == 4 and finding.detail["denials"] == 5
    slow = [use(i, start + timedelta(minutes=20 * i), event="disclosure:deny") for i in range(5)]  # 80 minutes
    assert rules.repeated_denials(slow) == []
    two_people = [
        use(i, start + timedelta(minutes=i), event="disclosure:deny", actor="k-1" if i % 2 else "k-2") for i in range(8)
    ]
    assert rules.repeated_denials(two_people) == []
    ten = [use(i, start + timedelta(minutes=i), event="disclosure:deny") for i in range(10)]
    assert [f.entry_id for f in rules.repeated_denials(ten)] == [4, 9]


def test_every_disclosure_on_a_statutory_exception_is_an_item() -> None:
    at = local(MONDAY, 10)
    found = rules.statutory_exceptions(
        [
            use(1, at, basis_kind="exception", grounds=("care_need_health_or_safety_at_risk",)),
            use(2, at, basis_kind="consent"),
            use(3, at, basis_kind="statute", grounds=("lacks_capacity_no_representative",)),  # a second source's
            use(4, at, event="disclosure:deny"),
        ]
    )
    assert [(f.entry_id, f.detail["grounds"]) for f in found] == [
        (1, ["care_need_health_or_safety_at_risk"]),
        (3, ["lacks_capacity_no_representative"]),
    ]
    entry = {
        "basis": {"kind": "statute", "exception_ground": None},
        "detail": {"bases": [{"kind": "exception", "exception_ground": "lacks_capacity_no_representative"}]},
    }
    assert rules.exception_grounds(entry) == ("lacks_capacity_no_representative",)
    assert rules.exception_grounds({"basis": {"kind": "consent"}}) == ()


def test_the_rules_read_only_up_to_now_and_the_window_is_whole_finnish_days() -> None:
    now = local(MONDAY, 12)
    since, until = rules.window(now, 30)
    assert since == local(MONDAY - timedelta(days=29), 0) and until == now
    later = [use(1, local(MONDAY, 23))]
    assert rules.evaluate(later, now=now, baselines={}, relationships={}) == []
    assert [f.rule for f in rules.evaluate(later, now=local(MONDAY, 23, 30), baselines={}, relationships={})] == [
        "out_of_hours"
    ]
    with pytest.raises(ValueError):
        rules.window(now, 0)


# --- The anomaly queue and its reviews --------------------------------------------------------------------------


def recent(weekday: int, *, at_least_days_ago: int, now: datetime) -> date:
    """The latest Finnish date with this weekday (Monday 0) at least `at_least_days_ago` days before `now`."""
    day = rules.local_day(now) - timedelta(days=at_least_days_ago)
    while day.weekday() != weekday:
        day -= timedelta(days=1)
    return day


@dataclass
class Unusual:
    person: str
    entries: dict[str, int]


@pytest.fixture
def unusual(env: Env) -> Unusual:
    """One use of each kind the rules lift, each by its own professional, within the last 30 days."""
    now = env.clock.now()
    weekday = recent(1, at_least_days_ago=2, now=now)  # a Tuesday
    saturday = recent(5, at_least_days_ago=1, now=now)
    found: dict[str, int] = {}
    move_to(env, local(weekday, 9))
    person = env.person()
    env.serve(person, "kisalli", "varha-social-work", "varha-health")
    deposit(env, "kisalli", person, "attendance_report")
    # Twenty requests in a morning by one social worker with no history.
    move_to(env, local(weekday, 10))
    token = staff_token(env, "varha-social-work", "sw-volume")
    for _ in range(20):
        assert ask(env, token, person, "attendance_report", "follow_up").status_code == 200
        env.clock.advance(seconds=5)
    found["volume_spike"] = last_entry(env, "disclosure:permit").id
    # Kela's benefit status of five persons whom social work does not serve (F1 needs no relationship).
    move_to(env, local(weekday, 11))
    strangers = [env.person() for _ in range(5)]
    token = staff_token(env, "varha-social-work", "sw-browse")
    for stranger in strangers:
        answer = ask(env, token, stranger, "benefit_status", "activation_planning")
        assert answer.status_code == 200, answer.get_json()
        env.clock.advance(seconds=5)
    found["no_relationship"] = last_entry(env, "disclosure:permit").id
    # Five refusals within minutes.
    move_to(env, local(weekday, 13))
    token = staff_token(env, "varha-health", "hc-denied")
    for _ in range(5):
        assert ask(env, token, person, "work_assessment", "work_capacity_assessment").status_code == 403
        env.clock.advance(seconds=30)
    found["repeated_denials"] = last_entry(env, "disclosure:deny").id
    # Twenty persons the health centre has no basis for, asked about within minutes, each request naming another
    # professional (a probe with the partner's key can name any `act.sub`): no per-professional rule sees it.
    move_to(env, local(weekday, 15))
    probed = [env.person() for _ in range(20)]
    for i, stranger in enumerate(probed):
        token = staff_token(env, "varha-health", f"hc-probe-{i}")
        assert ask(env, token, stranger, "work_assessment", "work_capacity_assessment").status_code == 403
        env.clock.advance(seconds=10)
    found["enumeration"] = last_entry(env, "disclosure:deny").id
    # A statutory exception.
    move_to(env, local(weekday, 14))
    token = staff_token(env, "varha-health", "hc-exception")
    answer = ask(env, token, person, "work_assessment", "work_capacity_assessment", EXCEPTION)
    assert answer.status_code == 200
    found["statutory_exception"] = int(answer.get_json()["audit_entry_id"])
    # A Saturday night.
    move_to(env, local(saturday, 3))
    token = staff_token(env, "varha-social-work", "sw-night")
    answer = ask(env, token, person, "attendance_report", "follow_up")
    found["out_of_hours"] = int(answer.get_json()["audit_entry_id"])
    # A withdrawal more than 14 days ago that the health centre, which received data under the consent, has not
    # answered (docs/withdrawal.md): the item is the withdrawal's entry.
    move_to(env, local(recent(2, at_least_days_ago=16, now=now), 10))
    withdrawn = env.person()
    env.serve(withdrawn, "kisalli", "varha-health")
    deposit(env, "kisalli", withdrawn, "work_assessment")
    consent_id = consent_to_health(env, withdrawn)
    token = staff_token(env, "varha-health", "hc-attest")
    assert ask(env, token, withdrawn, "work_assessment", "work_capacity_assessment").status_code == 200
    assert env.post("kisalli", f"/consents/{consent_id}/withdraw", {}).status_code == 200
    found["attestation_overdue"] = last_entry(env, "consent:withdraw").id
    back_to_now(env)
    return Unusual(person, found)


def test_the_queue_lists_one_item_per_rule_oldest_first(env: Env, unusual: Unusual) -> None:
    queue = dpo.anomaly_queue(env.broker, OFFICER)
    assert {(item["rule"], item["entry_id"]) for item in queue["items"]} == {
        (rule, entry_id) for rule, entry_id in unusual.entries.items()
    }
    assert queue["total"] == len(rules.RULES) and all(count == 1 for count in queue["counts"].values())
    times = [item["logged_at"] for item in queue["items"]]
    assert times == sorted(times)
    # A day's queue does not reach back to the work of earlier days; an unanswered withdrawal stays until answered.
    assert [item["rule"] for item in dpo.anomaly_queue(env.broker, OFFICER, days=1)["items"]] == [
        rules.ATTESTATION_OVERDUE
    ]
    assert entries(env, "audit:query")[-1]["detail"]["filters"] == {"anomalies": "open", "days": 1}


def test_reviewing_an_item_stores_the_note_logs_the_review_and_moves_it_to_reviewed(
    env: Env, unusual: Unusual, workspace: Workspace
) -> None:
    entry_id = unusual.entries["statutory_exception"]
    path = f"/dpo/anomalies/{entry_id}/statutory_exception"
    queue = workspace.get("/dpo/anomalies")
    assert queue.status_code == 200 and f'href="{path}"' in queue.get_data(as_text=True)
    form = workspace.get(path)
    assert form.status_code == 200 and "care_need_health_or_safety_at_risk" in text_of(form)
    token = csrf_of(form)
    empty = workspace.post(path, {"note": "   ", "outcome": "justified"}, token=token)
    assert empty.status_code == 400 and "Write a note" in text_of(empty)
    long = workspace.post(path, {"note": "x" * 2001, "outcome": "justified"}, token=token)
    assert long.status_code == 400 and "at most 2000 characters" in text_of(long)
    no_outcome = workspace.post(path, {"note": "Checked.", "outcome": "maybe"}, token=token)
    assert no_outcome.status_code == 400 and "Choose the outcome" in text_of(no_outcome)
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalars(select(DpoReviewRow)).first() is None
    note = "Called the physician: the client was in acute danger. Justified under 703/2023 56 §."
    saved = workspace.post(path, {"note": note, "outcome": "justified"}, token=token)
    assert location(saved) == "/dpo/anomalies"
    with env.broker.uow(write=False) as uow:
        [review] = uow.session.scalars(select(DpoReviewRow)).all()
    assert (review.entry_id, review.rule, review.outcome, review.note) == (
        entry_id,
        "statutory_exception",
        "justified",
        note,
    )
    # The reviewer is the identity provider's stable subject for the DPO, kept at login — not a display name.
    with env.broker.uow(write=False) as uow:
        subjects = {
            (row.data.get("login") or {}).get("subject") for row in uow.session.scalars(select(PortalSessionRow))
        }
    assert review.reviewer in subjects and review.reviewer != OFFICER.name
    [logged] = entries(env, "dpo:review")
    assert logged["detail"] == {
        "surface": "dpo",
        "entry_id": entry_id,
        "rule": "statutory_exception",
        "outcome": "justified",
    }
    assert logged["payload_sha256"] == hashlib.sha256(note.encode()).hexdigest()
    assert logged["person_id"] == unusual.person and note not in json.dumps(logged)
    open_items = workspace.get("/dpo/anomalies")
    assert f'href="{path}"' not in open_items.get_data(as_text=True)
    assert "The review has been saved and logged." in text_of(open_items)
    reviewed = workspace.get("/dpo/anomalies?tab=reviewed")
    assert note in text_of(reviewed) and "Justified" in text_of(reviewed)
    # Once only; and only what a rule flags.
    again = workspace.post(path, {"note": "Again.", "outcome": "reported"}, token=token)
    assert again.status_code == 409
    assert "Justified" in text_of(workspace.get(path))
    not_flagged = unusual.entries["volume_spike"]
    refused = workspace.post(f"/dpo/anomalies/{not_flagged}/statutory_exception", {"note": "x", "outcome": "justified"})
    assert refused.status_code == 404
    assert workspace.get(f"/dpo/anomalies/{entry_id}/no_such_rule").status_code == 404


def test_a_review_of_an_item_not_in_the_queue_is_refused_by_the_use_case(env: Env, unusual: Unusual) -> None:
    with pytest.raises(NotFoundError):
        dpo.review_anomaly(
            env.broker, OFFICER, unusual.entries["volume_spike"], "out_of_hours", note="x", outcome="justified"
        )
    with pytest.raises(InvalidRequestError):
        dpo.review_anomaly(
            env.broker, OFFICER, unusual.entries["volume_spike"], "volume_spike", note="", outcome="justified"
        )


# --- The register of processing activities -------------------------------------------------------------------------


def test_the_register_is_generated_from_the_policy_files(env: Env, workspace: Workspace) -> None:
    register = dpo_register(env)
    assert {flow["rule"] for flow in register["flows"]} == {rule.id for rule in env.broker.policy.rules}
    assert {c["id"] for c in register["categories"]} == set(env.broker.policy.categories)
    assert register["retention"] is not None  # policies/retention.yaml
    page = workspace.get("/dpo/register")
    assert page.status_code == 200
    text = text_of(page)
    for words in (
        "Record of processing activities",
        "Työllistämispalvelut Kisälli, Lieto",
        "703/2023 53 § 3 mom.",
        "GDPR 6(1)(e), 9(2)(h)",
        "380/2023 122 §",
        "12 years from the event",
        "AES-256-GCM",
        "Minors among them",
        "None: the broker discloses only to the registered Finnish organisations.",
    ):
        assert words in text, words
    answer = workspace.get("/dpo/register.csv")
    rows = list(csv.reader(io.StringIO(answer.get_data().decode("utf-8-sig"), newline="")))
    assert rows[0][0] == "Flow" and len(rows) == 1 + len(env.broker.policy.rules)
    f7 = next(r for r in rows if r[1] == "F7")
    assert f7[8] == "Consent, or a statutory exception" and f7[9] == "GDPR 6(1)(e), 9(2)(h)"
    assert "380/2023 122 §" in f7[11]
    assert next(r for r in rows if r[1] == "F12b")[2] == "forbid"


def dpo_register(env: Env) -> dict[str, Any]:
    from broker.services.processing_register import processing_register

    return processing_register(env.broker)


# --- Integrity ---------------------------------------------------------------------------------------------------


def test_the_integrity_page_shows_the_checkpoint_and_verify_now_stores_the_result(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    before = text_of(workspace.get("/dpo/integrity"))
    assert "No checkpoint has been signed yet." in before and "has not been verified yet" in before
    Sequencer(env.broker).run_once()
    status = dpo.integrity_status(env.broker)
    checkpoint = status["checkpoint"]
    assert checkpoint is not None and status["pending"] == 0
    page = text_of(workspace.get("/dpo/integrity"))
    assert checkpoint["root_hex"] in page and checkpoint["root_base64"] in page
    assert checkpoint["note"].splitlines()[0] in page
    verified = workspace.post("/dpo/integrity/verify")
    assert location(verified) == "/dpo/integrity"
    shown = text_of(workspace.get("/dpo/integrity"))
    assert "In order" in shown and "The log was verified" in shown
    with env.broker.uow(write=False) as uow:
        [row] = uow.session.scalars(select(AuditVerificationRow)).all()
    assert row.ok and row.size == checkpoint["size"] and row.exported_size == checkpoint["size"]


def test_a_failed_verification_is_stored_with_the_first_bad_entry_and_shown(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    Sequencer(env.broker).run_once()
    with env.broker.uow() as uow:
        second = select(AuditLeafRow.entry_id).where(AuditLeafRow.idx == 1).scalar_subquery()
        uow.session.execute(
            update(AuditEntryRow).where(AuditEntryRow.id == second).values(entry=b'{"v":1,"forged":true}')
        )
        uow.commit()
    failed = dpo.record_verification(env.broker)
    assert failed["ok"] is False and failed["failure_index"] == 1 and failed["failure_kind"]
    with env.broker.uow(write=False) as uow:
        [row] = uow.session.scalars(select(AuditVerificationRow)).all()
    assert not row.ok and row.failure_index == 1 and row.failure_kind == failed["failure_kind"] and row.message
    page = text_of(workspace.get("/dpo/integrity"))
    assert "Failed" in page and failed["failure_kind"] in page


# --- Activity -----------------------------------------------------------------------------------------------------


def test_the_activity_page_draws_disclosures_and_refusals_per_day_and_organisation(
    env: Env, traffic: Traffic, workspace: Workspace
) -> None:
    found = dpo.activity(env.broker, days=30)
    by_day = {d["day"]: (d["permits"], d["denials"]) for d in found["days"]}
    assert len(by_day) == 30
    assert by_day[rules.local_day(traffic.times["deny"])] == (1, 1)  # the refusal and the consent an hour later
    assert by_day[rules.local_day(traffic.times["exception"])] == (1, 0)
    orgs = {o["id"]: (o["permits"], o["denials"]) for o in found["organisations"]}
    assert orgs == {"varha-health": (2, 1), "varha-social-work": (1, 0)}  # the three-year-old one is out
    page = workspace.get("/dpo/activity")
    body = page.get_data(as_text=True)
    assert body.count('role="img"') == 2 and "<title" in body and "<desc" in body
    assert "Varha, Liedon terveysasema: 2 disclosed, 1 refused" in html.unescape(body)
    assert "<table" in body and "<script" not in body


def test_the_charts_scale_to_the_largest_stack() -> None:
    chart = charts.stacked_columns(["a", "b"], [(3, 1), (0, 0)], ["a", "b"], width=100, height=100)
    assert chart.maximum == 5
    [first, second] = chart.groups
    assert [s.series for s in first.segments] == [0, 1] and second.segments == ()
    bottom, top = first.segments
    assert bottom.y + bottom.height == pytest.approx(chart.plot_bottom)
    assert top.y + top.height == pytest.approx(bottom.y)
    assert charts.nice_maximum(0) == 1 and charts.nice_maximum(7) == 10 and charts.nice_maximum(21) == 50
