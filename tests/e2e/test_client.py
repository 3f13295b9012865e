"""The partner client (broker/client) against a served broker: the demo instance under gunicorn, reached over real
HTTP with `private_key_jwt`, DPoP-bound tokens and a fresh proof on every request — and `broker client …`.

resolve → relationships → in-person consent → deposit → the health centre's disclosure (permitted, and retried with
the same Idempotency-Key: the same disclosure) → the receipt → withdrawal → `NoLegalBasisError` → the CLI. Then
what issue #8 adds, where the served broker has it: a webhook's signed test event, verified by the client."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.adapters.signing import verify_jws
from broker.client import BrokerClient, NoLegalBasisError, NotFoundError
from broker.domain.hetu import make_hetu
from schemas.records.examples import EXAMPLES
from tests.e2e.conftest import ROOT, Served, consent_to_health

WORK = ("work_assessment", "work_capacity_assessment")


@pytest.fixture(scope="module")
def consented(kisalli: BrokerClient, health: BrokerClient) -> dict[str, str]:
    """A new person whom Kisälli and the health centre serve, a consent to disclose the work assessment to the
    health centre, and the assessment deposited."""
    person_id = kisalli.resolve_person(make_hetu(date(1992, 4, 5), 981))
    for client in (kisalli, health):
        assert client.start_relationship(person_id)["active"] is True
    consent = consent_to_health(kisalli, person_id, *WORK)
    record = kisalli.deposit_record(person_id, WORK[0], EXAMPLES[WORK[0]])
    assert record["person_id"] == person_id and record["category"] == WORK[0]
    return {"person_id": person_id, "consent_id": consent["consent_id"]}


def test_a_token_is_dpop_bound_to_the_clients_key(served: Served, kisalli: BrokerClient) -> None:
    token = kisalli.token()
    assert token.token_type == "DPoP" and token.value.startswith("cbat_") and token.expires_in == 300
    assert set(token.scope.split()) >= {"persons", "consents", "records", "disclosures", "notices"}
    assert kisalli.issuer == served.demo["issuer"]


def test_the_same_person_resolves_to_the_same_id(kisalli: BrokerClient, consented: dict[str, str]) -> None:
    assert kisalli.resolve_person(make_hetu(date(1992, 4, 5), 981)) == consented["person_id"]


def test_a_consented_disclosure_is_permitted_and_its_retry_is_the_same_disclosure(
    health: BrokerClient, consented: dict[str, str]
) -> None:
    person_id = consented["person_id"]
    body = {"person_id": person_id, "category": WORK[0], "purpose": WORK[1]}
    first = health.request("POST", "/api/v1/disclosures", json=body)
    assert first.status == 200 and not first.replayed
    disclosure = first.body
    assert disclosure["basis"]["consent_id"] == consented["consent_id"]
    [record] = disclosure["records"]
    assert record["content"] and set(record["content"]) <= set(EXAMPLES[WORK[0]])

    # A retry after a lost answer: the same key, the same body — the first answer, nothing done again.
    retry = health.request("POST", "/api/v1/disclosures", json=body, idempotency_key=first.idempotency_key)
    assert retry.replayed and retry.body == disclosure
    again = health.disclose(person_id, *WORK, idempotency_key=first.idempotency_key)
    assert again["disclosure_id"] == disclosure["disclosure_id"]
    # A new call is a new disclosure.
    assert health.disclose(person_id, *WORK)["disclosure_id"] != disclosure["disclosure_id"]


def test_the_consent_is_listed_and_its_receipt_verifies_with_the_published_keys(
    kisalli: BrokerClient, consented: dict[str, str]
) -> None:
    listed = kisalli.list_consents(consented["person_id"])
    assert [c["consent_id"] for c in listed] == [consented["consent_id"]]
    receipt = kisalli.consent_receipt(consented["consent_id"])
    claims = verify_jws(receipt["receipt"], kisalli.jwks(), typ="consent-receipt+jws")
    assert claims["consent"]["consent_id"] == consented["consent_id"] and claims["iss"] == kisalli.issuer


def test_a_refused_disclosure_raises_no_legal_basis_with_the_decision(
    kisalli: BrokerClient, health: BrokerClient, consented: dict[str, str]
) -> None:
    person_id = kisalli.resolve_person(make_hetu(date(1992, 4, 5), 982))  # no consent for this one
    kisalli.start_relationship(person_id)
    health.start_relationship(person_id)
    with pytest.raises(NoLegalBasisError) as caught:
        health.disclose(person_id, *WORK)
    refusal = caught.value
    assert (refusal.status, refusal.code) == (403, "no_legal_basis")
    assert refusal.decision is not None and refusal.decision["effect"] == "deny"
    assert refusal.disclosure_id and refusal.request_id


def test_an_unknown_consent_is_not_found(kisalli: BrokerClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        kisalli.consent_receipt("con_does_not_exist")
    assert caught.value.code == "unknown_consent"


def test_a_revoked_token_is_replaced_without_the_caller_noticing(served: Served, kisalli: BrokerClient) -> None:
    before = kisalli.token()
    kisalli.revoke_token()  # RFC 7009: the client forgets it, the next call obtains a new one
    assert isinstance(kisalli.inbox(), list)
    current = kisalli.token()
    assert current.value != before.value

    # Revoked behind the client's back (as an operator would): the broker answers 401 invalid_token and the client
    # obtains a new token once, then the call goes through.
    db = sqlite3.connect(served.instance / "broker.db", timeout=30)
    with db:
        revoked = db.execute(
            "UPDATE access_tokens SET revoked_at = issued_at WHERE client_id = 'kisalli' AND revoked_at IS NULL"
        ).rowcount
    db.close()
    assert revoked >= 1
    assert isinstance(kisalli.inbox(), list)
    assert kisalli.token().value not in (before.value, current.value)


def test_the_cli_discloses_and_reports_a_refusal_by_its_code(
    served: Served, kisalli: BrokerClient, consented: dict[str, str]
) -> None:
    def disclose(person_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "broker.cli",
                "client",
                "disclose",
                "--demo-instance",
                str(served.instance),
                "--partner",
                "varha-health",
                "--person",
                person_id,
                "--category",
                WORK[0],
                "--purpose",
                WORK[1],
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    permitted = disclose(consented["person_id"])
    assert permitted.returncode == 0, permitted.stderr
    assert json.loads(permitted.stdout)["basis"]["consent_id"] == consented["consent_id"]

    stranger = kisalli.resolve_person(make_hetu(date(1992, 4, 5), 983))
    refused = disclose(stranger)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("no_legal_basis: ")
    assert json.loads(refused.stderr.split("\n", 1)[1])["code"] == "no_legal_basis"


def test_the_client_program_of_the_api_guide_runs_verbatim(
    served: Served, kisalli: BrokerClient, consented: dict[str, str], tmp_path: Path
) -> None:
    guide = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    [program] = [
        block
        for block in re.findall(r"```python\n(.*?)```", guide, re.S)
        if "from broker.client import" in block and "def main(" in block
    ]
    script = tmp_path / "disclose_with_client.py"
    script.write_text(program, encoding="utf-8")

    def run(person_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), "varha-health", person_id, *WORK],
            cwd=served.instance.parent,  # the guide runs it where `instance/` is
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    permitted = run(consented["person_id"])
    assert permitted.returncode == 0, permitted.stdout + permitted.stderr
    assert json.loads(permitted.stdout)["basis"]["consent_id"] == consented["consent_id"]
    refused = run(kisalli.resolve_person(make_hetu(date(1992, 4, 5), 984)))
    assert refused.returncode == 1 and refused.stdout.startswith("no_legal_basis {")


def test_a_withdrawal_ends_the_disclosures_under_it(
    kisalli: BrokerClient, health: BrokerClient, consented: dict[str, str]
) -> None:
    withdrawn = kisalli.withdraw_consent(consented["consent_id"], reason="the person asked in person")
    assert withdrawn["status"] == "withdrawn"
    with pytest.raises(NoLegalBasisError):
        health.disclose(consented["person_id"], *WORK)


# --- issue #8: webhooks ---


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.headers.get("Content-Type"), body))  # type: ignore[attr-defined]
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_webhooks_signed_test_event_is_verified_by_the_client(
    kisalli: BrokerClient, receiver: ThreadingHTTPServer
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/broker-events"
    webhook = kisalli.create_webhook(url, ["consent.withdrawn"])
    try:
        tested = kisalli.test_webhook(webhook["webhook_id"])
        assert tested["delivered"] is True, tested
        [(content_type, body)] = receiver.received  # type: ignore[attr-defined]
        assert content_type == "application/secevent+jwt"
        event = kisalli.verify_event(body)
        assert (event.id, event.type, event.organisation) == (tested["event_id"], "webhook.test", "kisalli")
    finally:
        kisalli.delete_webhook(webhook["webhook_id"])
    assert kisalli.get_webhook(webhook["webhook_id"])["active"] is False


def test_fhir_searches_reads_and_capabilities_through_the_client(
    kisalli: BrokerClient, health: BrokerClient, consented: dict[str, str]
) -> None:
    capabilities = kisalli.fhir_capabilities()
    assert (capabilities["resourceType"], capabilities["fhirVersion"]) == ("CapabilityStatement", "4.0.1")
    bundle = kisalli.fhir_consents(consented["person_id"])
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["entry"]
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"].endswith(f"/fhir/Consent/{resource['id']}")
        assert kisalli.fhir_read("Consent", resource["id"]) == resource
    events = health.fhir_audit_events(consented["person_id"])
    assert events["entry"], "the health centre's disclosures above are its AuditEvents"
    first = events["entry"][0]["resource"]
    assert health.fhir_read("AuditEvent", first["id"]) == first
    with pytest.raises(NotFoundError):
        kisalli.fhir_read("Consent", "con-does-not-exist")
    with pytest.raises(ValueError, match="Patient"):
        kisalli.fhir_read("Patient", consented["person_id"])
