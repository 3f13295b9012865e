"""Delivering events to webhook endpoints (broker/services/webhooks.py, `deliver_due`), on SQLite and PostgreSQL, to a
real HTTP receiver on loopback (tests/integration/receiver.py) that verifies every token with the broker's JWKS and
de-duplicates on `jti` as docs/webhooks.md asks receivers to.

The clock is pinned: a failed attempt is retried once the clock is moved past its backoff, so the schedule is
exercised without waiting for it."""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from broker.adapters.orm import OutboxEventRow, WebhookDeliveryRow
from broker.demo import caller
from broker.domain.clock import utc
from broker.services import webhooks
from broker.services.events import EVENT_TYPES, emit, event_uri
from broker.services.webhooks import BACKOFF_BASE, BACKOFF_CAP, GIVE_UP_AFTER, LEASE, MAX_ATTEMPTS, Sender
from tests.integration.receiver import Receiver
from tests.support import Env

# The data each event type carries (docs/webhooks.md): ids and states only.
EXAMPLE_DATA: dict[str, dict[str, Any]] = {
    "consent_request.answered": {"consent_request_id": "req_1", "answer": "granted", "consent_id": "con_1"},
    "consent_request.expired": {"consent_request_id": "req_2", "expired_at": "2026-01-15T09:00:00Z"},
    "consent.granted": {
        "consent_id": "con_1",
        "version": 1,
        "requester": "kisalli",
        "recipients": ["kela"],
        "categories": ["work_assessment"],
        "purposes": ["benefit_decision"],
        "valid_until": None,
    },
    "consent.withdrawn": {
        "consent_id": "con_1",
        "version": 2,
        "withdrawn_at": "2026-01-15T09:00:00Z",
        "attestation": {"required": False},
    },
    "consent.expired": {"consent_id": "con_3", "version": 1, "expired_at": "2026-01-15T09:00:00Z"},
    "notice.delivered": {"notice_id": "ntc_1", "kind": "interruption_notice", "sender": "kisalli"},
    "relationship.ended": {
        "relationship_id": "rel_1",
        "organisation": "kisalli",
        "ended_at": "2026-01-15T09:00:00Z",
        "consents_ended": ["con_4"],
    },
}
assert set(EXAMPLE_DATA) == set(EVENT_TYPES)


@pytest.fixture
def receiver(env: Env) -> Iterator[Receiver]:
    with Receiver(env.broker.keys.public_jwks(), env.issuer, audiences={"kela"}) as running:
        yield running


def register(env: Env, url: str, org: str = "kela", events: list[str] | None = None) -> str:
    endpoint = webhooks.register_endpoint(env.broker, caller(env.broker, org), url, events or list(EVENT_TYPES))
    webhook_id: str = endpoint["webhook_id"]
    return webhook_id


def emit_one(env: Env, event_type: str = "consent.withdrawn", org: str = "kela", person_id: str = "per_1") -> str:
    with env.broker.uow() as uow:
        ids = emit(
            uow,
            type=event_type,
            organisations=[org],
            person_id=person_id,
            data=EXAMPLE_DATA[event_type],
            now=env.clock.now(),
        )
        uow.commit()
    return ids[org]


def deliveries(env: Env) -> dict[str, WebhookDeliveryRow]:
    """Every delivery by its event id."""
    with env.broker.uow(write=False) as uow:
        return {row.event_id: row for row in uow.session.scalars(select(WebhookDeliveryRow))}


def aware(value: datetime | None) -> datetime:
    assert value is not None
    return utc(value)


def test_every_event_type_is_delivered_once_and_verifies(env: Env, receiver: Receiver) -> None:
    register(env, receiver.url)
    ids = {event_type: emit_one(env, event_type, person_id=f"per_{n}") for n, event_type in enumerate(EVENT_TYPES)}

    report = webhooks.deliver_due(env.broker)

    assert report.count("delivered") == len(EVENT_TYPES) and len(report.outcomes) == len(EVENT_TYPES)
    assert [r.error for r in receiver.requests] == [None] * len(EVENT_TYPES)
    assert set(receiver.accepted) == set(ids.values()) and not receiver.duplicates
    now = int(env.clock.now().timestamp())
    for n, (event_type, event_id) in enumerate(ids.items()):
        claims = receiver.accepted[event_id]
        # RFC 8417 §2.2: issuer, the one audience, a fresh iat, the event id as jti, the time of the event, and
        # exactly one event, named by its URI and carrying its data with the opaque person id.
        assert claims == {
            "iss": env.issuer,
            "aud": "kela",
            "iat": now,
            "jti": event_id,
            "toe": now,
            "events": {event_uri(env.issuer, event_type): {**EXAMPLE_DATA[event_type], "person_id": f"per_{n}"}},
        }
    for request in receiver.requests:
        assert request.headers["content-type"] == "application/secevent+jwt"  # RFC 8935 §2
        assert request.headers["accept"] == "application/json"
        assert request.headers["user-agent"].startswith("ConsentBroker-Webhooks/")
    stored = deliveries(env)
    assert {(d.status, d.attempts, d.last_status, d.last_error) for d in stored.values()} == {
        ("delivered", 1, 202, None)
    }
    assert {aware(d.delivered_at) for d in stored.values()} == {env.clock.now()}
    # Nothing is due any more.
    assert webhooks.deliver_due(env.broker).outcomes == []


def retry_until_delivered(env: Env, rounds: int = 20) -> list[webhooks.DeliveryReport]:
    """Run the worker's rounds, moving the clock past the longest backoff the last failures can have drawn."""
    reports = []
    for _ in range(rounds):
        report = webhooks.deliver_due(env.broker)
        reports.append(report)
        if all(d.status != "pending" for d in deliveries(env).values()):
            return reports
        attempts = max(d.attempts for d in deliveries(env).values() if d.status == "pending")
        env.clock.advance(seconds=min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempts - 1)).total_seconds() + 1)
    raise AssertionError("not delivered")


def test_a_receiver_that_fails_for_a_while_gets_each_event_once_after_it_recovers(env: Env, receiver: Receiver) -> None:
    register(env, receiver.url)
    ids = [emit_one(env) for _ in range(3)]
    receiver.fail_next(4, 500, body=b'{"err": "internal", "description": "database down"}')
    receiver.close_next(2)  # then the connection is closed without an answer
    receiver.fail_next(1, 502)

    reports = retry_until_delivered(env)

    # From the receiver's point of view: every event accepted exactly once, after 7 failed requests.
    assert sorted(receiver.accepted) == sorted(ids) and not receiver.duplicates
    assert len(receiver.requests) == 3 + 7
    assert [r.answered for r in receiver.requests].count(None) == 2
    stored = deliveries(env)
    assert {d.status for d in stored.values()} == {"delivered"}
    assert sum(d.attempts for d in stored.values()) == 10
    outcomes = [o for r in reports for o in r.outcomes]
    errors = sorted({o.error for o in outcomes if o.error})
    assert errors == [
        "HTTP 500: internal (database down)",
        "HTTP 502",
        "the connection closed without an answer",
    ]
    assert [o.result for o in outcomes].count("retry") == 7


def test_retry_after_is_honoured_on_503_and_429(env: Env, receiver: Receiver) -> None:
    register(env, receiver.url)
    emit_one(env)
    receiver.fail_next(1, 503, headers={"Retry-After": "900"})  # delay-seconds
    assert webhooks.deliver_due(env.broker).count("retry") == 1
    [delivery] = deliveries(env).values()
    assert aware(delivery.next_attempt_at) >= env.clock.now() + timedelta(seconds=900)  # not before it

    env.clock.advance(seconds=899)
    assert webhooks.deliver_due(env.broker).outcomes == []
    env.clock.advance(seconds=2)
    at = env.clock.now() + timedelta(hours=2)
    receiver.fail_next(1, 429, headers={"Retry-After": at.strftime("%a, %d %b %Y %H:%M:%S GMT")})  # an HTTP-date
    assert webhooks.deliver_due(env.broker).count("retry") == 1
    [delivery] = deliveries(env).values()
    assert aware(delivery.next_attempt_at) >= at

    env.clock.at = at - timedelta(seconds=1)
    assert webhooks.deliver_due(env.broker).outcomes == []
    env.clock.at = at + BACKOFF_BASE * 2  # past whatever the jitter drew above the floor
    assert webhooks.deliver_due(env.broker).count("delivered") == 1
    assert len(receiver.accepted) == 1 and len(receiver.requests) == 3


def test_a_delivery_is_given_up_after_the_last_attempt(
    env: Env, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every wait the mean of its jitter, so that the attempts run out before the three days do in every run.
    monkeypatch.setattr(webhooks, "next_step", functools.partial(webhooks.next_step, draw=lambda: 0.5))
    register(env, receiver.url)
    event_id = emit_one(env)
    occurred = env.clock.now()
    receiver.fail_next(MAX_ATTEMPTS + 1, 500)
    for _ in range(MAX_ATTEMPTS):
        webhooks.deliver_due(env.broker)
        # Straight to the next try.
        pending = deliveries(env)[event_id]
        if pending.next_attempt_at is not None:
            env.clock.at = aware(pending.next_attempt_at)
    assert env.clock.now() - occurred < GIVE_UP_AFTER
    delivery = deliveries(env)[event_id]
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("failed", MAX_ATTEMPTS, 500)
    assert delivery.next_attempt_at is None and delivery.last_error == "HTTP 500"
    assert webhooks.deliver_due(env.broker).outcomes == []
    assert len(receiver.requests) == MAX_ATTEMPTS and not receiver.accepted


def test_a_delivery_is_given_up_three_days_after_its_event_with_a_last_try_then(env: Env, receiver: Receiver) -> None:
    register(env, receiver.url)
    event_id = emit_one(env)
    occurred = env.clock.now()
    receiver.fail_next(2, 503, headers={"Retry-After": str(int(BACKOFF_CAP.total_seconds()))})
    webhooks.deliver_due(env.broker)
    env.clock.advance(days=2, hours=23)  # the worker was away; the next try is due
    assert webhooks.deliver_due(env.broker).count("retry") == 1
    delivery = deliveries(env)[event_id]
    # Retry-After asked for six hours, but the event gives up at three days: the last try is then.
    assert aware(delivery.next_attempt_at) == occurred + GIVE_UP_AFTER
    env.clock.at = occurred + GIVE_UP_AFTER
    assert webhooks.deliver_due(env.broker).count("delivered") == 1  # it is made, and succeeds


def test_a_redirect_is_not_followed(env: Env, receiver: Receiver) -> None:
    with Receiver(env.broker.keys.public_jwks(), env.issuer) as elsewhere:
        register(env, receiver.url)
        event_id = emit_one(env)
        receiver.fail_next(1, 307, headers={"Location": elsewhere.url})
        [outcome] = webhooks.deliver_due(env.broker).outcomes
        assert outcome.result == "retry" and outcome.status == 307
        assert outcome.error == "HTTP 307: redirects are not followed; register the URL that answers"
        assert elsewhere.requests == []
        assert deliveries(env)[event_id].last_status == 307


def test_a_disabled_endpoint_gets_nothing_new(env: Env, receiver: Receiver) -> None:
    webhook_id = register(env, receiver.url)
    pending = emit_one(env)
    webhooks.disable_endpoint(env.broker, caller(env.broker, "kela"), webhook_id)
    later = emit_one(env)

    assert webhooks.deliver_due(env.broker).outcomes == []
    assert receiver.requests == []
    stored = deliveries(env)
    assert later not in stored  # no delivery was made for it at all
    assert (stored[pending].status, stored[pending].last_error) == ("failed", "endpoint disabled")


def test_each_organisation_gets_only_its_own_events(env: Env, receiver: Receiver) -> None:
    with Receiver(env.broker.keys.public_jwks(), env.issuer, audiences={"kisalli"}) as kisalli:
        register(env, receiver.url, "kela")
        register(env, kisalli.url, "kisalli", ["consent.granted"])
        for_kela = emit_one(env, "consent.withdrawn", "kela")
        emit_one(env, "consent.withdrawn", "kisalli")  # kisalli did not subscribe to this type
        for_kisalli = emit_one(env, "consent.granted", "kisalli")

        webhooks.deliver_due(env.broker)

        assert list(receiver.accepted) == [for_kela]
        assert list(kisalli.accepted) == [for_kisalli]
        assert kisalli.accepted[for_kisalli]["aud"] == "kisalli"


def test_a_lease_that_ran_out_is_taken_again_and_the_late_outcome_is_dropped(env: Env, receiver: Receiver) -> None:
    """A worker stuck in a send past its lease: another takes the delivery (attempt 2) and sends it again. The
    receiver sees the same jti twice and keeps it once; the first worker's late answer changes nothing."""
    register(env, receiver.url)
    event_id = emit_one(env)
    release = receiver.hold_next()
    start = env.clock.now()
    first: list[webhooks.DeliveryReport] = []
    stuck = threading.Thread(target=lambda: first.append(webhooks.deliver_due(env.broker, now=start)))
    stuck.start()
    assert receiver.arrived.wait(10)
    assert webhooks.deliver_due(env.broker, now=start + LEASE / 2).outcomes == []  # still leased

    [second] = webhooks.deliver_due(env.broker, now=start + LEASE + timedelta(seconds=1)).outcomes
    release.set()
    stuck.join(10)

    assert (second.result, second.attempt) == ("delivered", 2)
    assert [(o.result, o.attempt) for o in first[0].outcomes] == [("lost", 1)]
    assert receiver.jtis() == [event_id, event_id]
    assert list(receiver.accepted) == [event_id] and receiver.duplicates[event_id] == 1
    delivery = deliveries(env)[event_id]
    assert (delivery.status, delivery.attempts) == ("delivered", 2)


@pytest.mark.slow
def test_two_workers_at_once_never_send_a_delivery_twice(env: Env, receiver: Receiver) -> None:
    """Two workers (threads, each with its own connections) leasing from the same due deliveries at the same time:
    each delivery is sent exactly once. On PostgreSQL the second worker skips the rows the first has locked; on
    SQLite the leasing transactions take turns."""
    register(env, receiver.url)
    ids = {emit_one(env) for _ in range(40)}
    start = threading.Barrier(2)
    reports: list[webhooks.DeliveryReport] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait(10)
            while True:
                report = webhooks.deliver_due(env.broker, limit=3, concurrency=2)
                reports.append(report)
                if not report.outcomes:
                    return
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sorted(receiver.jtis()) == sorted(ids)  # each sent once: no jti twice
    assert not receiver.duplicates
    outcomes = [o for r in reports for o in r.outcomes]
    assert len(outcomes) == len(ids) and {o.result for o in outcomes} == {"delivered"}
    assert {d.attempts for d in deliveries(env).values()} == {1}


def test_deliveries_go_only_to_public_addresses_outside_demo_and_test(env: Env, receiver: Receiver) -> None:
    """The address check at connect time (SSRF): loopback is refused when not allowed, by address and by name, and
    the receiver sees nothing."""
    sender = Sender(user_agent="test", allow_loopback=False)
    try:
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
            attempt = sender.post(url, "x.y.z")
            assert (attempt.delivered, attempt.status) == (False, None)
            assert attempt.error == "refused: the host resolves to an address that is not public"
    finally:
        sender.close()
    assert receiver.requests == []


def test_an_event_the_receiver_refuses_is_retried_and_its_reason_kept(env: Env, receiver: Receiver) -> None:
    """A receiver that expects another audience answers 400 with RFC 8935 §2.3's error; the reason is kept short."""
    register(env, receiver.url)
    receiver.audiences = {"someone-else"}
    event_id = emit_one(env)
    [outcome] = webhooks.deliver_due(env.broker).outcomes
    assert outcome.result == "retry"
    assert deliveries(env)[event_id].last_error == "HTTP 400: invalid_request (wrong audience)"
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(OutboxEventRow.id)) == event_id


def _certificate_authority(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate authority of the test's own (its certificate file) and a server context with a certificate it
    issued for the name "localhost" only."""
    now = datetime.now(UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca_cert = issue("webhook test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = issue("localhost", server_key, ca_name, ca_key, ca=False)
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = folder / "server.pem"
    chain.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + server_cert.public_bytes(serialization.Encoding.PEM)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_file, context


def test_https_connects_to_the_checked_address_and_still_verifies_the_host_name(env: Env, tmp_path: Path) -> None:
    """The connection goes to the address the check resolved, yet TLS verifies the certificate against the URL's host
    name: a certificate for "localhost" is accepted at https://localhost/… and refused at https://127.0.0.1/…."""
    ca_file, context = _certificate_authority(tmp_path)
    with Receiver(env.broker.keys.public_jwks(), env.issuer, tls=context, host="localhost") as receiver:
        sender = Sender(user_agent="test", allow_loopback=True, ca_file=str(ca_file))
        system_cas = Sender(user_agent="test", allow_loopback=True)
        try:
            _, token = webhooks.sign_test_event(env.broker, "kela", "whk_1", env.clock.now())
            by_name = sender.post(receiver.url, token)
            by_address = sender.post(receiver.url.replace("localhost", "127.0.0.1"), token)
            untrusted = system_cas.post(receiver.url, token)
        finally:
            sender.close()
            system_cas.close()
        assert (by_name.delivered, by_name.status, by_name.error) == (True, 202, None)
        refused = "TLS failed: the certificate is not valid for the host, or the handshake failed"
        assert (by_address.delivered, by_address.error) == (False, refused)
        assert (untrusted.delivered, untrusted.error) == (False, refused)
        assert len(receiver.accepted) == 1
