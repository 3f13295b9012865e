"""Partner events end to end, every part a real process: the demo broker under gunicorn, `broker worker` beside it,
and a partner system's receiver on loopback that checks each pushed event with the partner client
(`BrokerClient.verify_event`: signature by the broker's published key, type, issuer, audience) and handles each
event id once (`EventDeduplicator`), answering 202 as RFC 8935 §2.2 says.

The health centre registers its endpoint → Kisälli records a consent naming it → `consent.granted` arrives → the
health centre receives the work assessment under the consent → Kisälli records the person's withdrawal →
`consent.withdrawn` arrives asking the health centre to attest → it answers `deleted` → the attestation is
answered, and the deliveries are listed as delivered. Then the worker is killed outright and a new one started:
what was delivered is not delivered again."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from broker.client import BrokerClient, Event, EventDeduplicator, InvalidEventError
from broker.domain.hetu import make_hetu
from schemas.records.examples import EXAMPLES
from tests.e2e.conftest import ROOT, Served, consent_to_health
from tests.support import BROKER_CLI

WORK = ("work_assessment", "work_capacity_assessment")


@dataclass
class PartnerReceiver:
    """The health centre's side: what a partner's own receiver does with the client."""

    client: BrokerClient
    events: list[Event] = field(default_factory=list)
    posts: int = 0
    refused: list[str] = field(default_factory=list)
    seen: EventDeduplicator = field(default_factory=EventDeduplicator)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: bytes) -> int:
        with self.lock:
            self.posts += 1
        try:
            event = self.client.verify_event(body)
        except InvalidEventError as error:
            self.refused.append(str(error))
            return 400
        if self.seen.first_time(event):
            with self.lock:
                self.events.append(event)
        return 202

    def wait_for(self, what: Callable[[Event], bool], timeout: float = 30) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [event for event in self.events if what(event)]
            if found:
                assert len(found) == 1
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no such event arrived; received {[(e.type, e.data) for e in self.events]}")


@pytest.fixture(scope="module")
def receiver(health: BrokerClient) -> Iterator[tuple[PartnerReceiver, str]]:
    partner = PartnerReceiver(health)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = partner.handle(body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield partner, f"http://127.0.0.1:{server.server_address[1]}/broker-events"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def start_worker(served: Served) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BROKER_CLI, "worker", "--interval", "0.1"],
        env=served.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture(scope="module")
def worker(served: Served) -> Iterator[list[subprocess.Popen[str]]]:
    """The running workers (a test may kill one and start another); all stopped at the end."""
    workers = [start_worker(served)]
    try:
        yield workers
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_a_partner_hears_of_a_consent_and_its_withdrawal_and_attests(
    served: Served,
    health: BrokerClient,
    kisalli: BrokerClient,
    receiver: tuple[PartnerReceiver, str],
    worker: list[subprocess.Popen[str]],
) -> None:
    partner, url = receiver
    webhook = health.create_webhook(url, ["consent.granted", "consent.withdrawn"])
    assert webhook["active"] is True

    person_id = kisalli.resolve_person(make_hetu(date(1990, 2, 3), 985))
    for client in (kisalli, health):
        client.start_relationship(person_id)
    kisalli.deposit_record(person_id, WORK[0], EXAMPLES[WORK[0]])
    consent = consent_to_health(kisalli, person_id, *WORK)
    consent_id = consent["consent_id"]

    granted = partner.wait_for(lambda e: e.type == "consent.granted" and e.data["consent_id"] == consent_id)
    assert (granted.organisation, granted.person_id) == ("varha-health", person_id)
    assert granted.data["recipients"] == ["varha-health"]

    disclosed = health.disclose(person_id, *WORK)
    assert disclosed["basis"]["consent_id"] == consent_id

    kisalli.withdraw_consent(consent_id, reason="The person withdrew at the meeting.")
    withdrawn = partner.wait_for(lambda e: e.type == "consent.withdrawn" and e.data["consent_id"] == consent_id)
    attestation = withdrawn.data["attestation"]
    assert attestation["required"] is True

    [asked] = [a for a in health.list_attestations() if a["consent_id"] == consent_id]
    assert asked["status"] == "pending"
    answered = health.attest(consent_id, "deleted")
    assert answered["outcome"] == "deleted"
    assert [a["consent_id"] for a in health.list_attestations()].count(consent_id) == 0  # no longer open

    deliveries = health.webhook_deliveries(webhook["webhook_id"])["deliveries"]
    assert {d["event_id"] for d in deliveries} >= {granted.id, withdrawn.id}
    assert {d["status"] for d in deliveries if d["event_id"] in {granted.id, withdrawn.id}} == {"delivered"}
    assert partner.refused == []

    # A worker killed outright, and a new one: what was delivered stays delivered, and nothing arrives twice.
    os.kill(worker[0].pid, signal.SIGKILL)
    worker[0].wait(timeout=10)
    worker.append(start_worker(served))
    posts = partner.posts
    again = consent_to_health(kisalli, person_id, *WORK)
    partner.wait_for(lambda e: e.type == "consent.granted" and e.data["consent_id"] == again["consent_id"])
    assert partner.posts == posts + 1
    assert sorted(e.id for e in partner.events) == sorted({e.id for e in partner.events})
