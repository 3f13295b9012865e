"""Idempotency-Key on the partner API's writes (draft-ietf-httpapi-idempotency-key-header-07; broker/services/
idempotency.py, broker/http/api/idempotency.py): a retried request gets the first response back and never does the
work twice — above all, never discloses twice.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.test import TestResponse

from broker.adapters.orm import (
    AuditEntryRow,
    ConsentRow,
    DisclosureRow,
    IdempotencyKeyRow,
    NoticeRow,
    OrganisationRow,
    RecordRow,
)
from broker.cli import main
from broker.domain.errors import NotFoundError
from broker.services import idempotency
from broker.services.keys import rotate_keys
from schemas.records.examples import EXAMPLES
from tests.support import Env

HEADER = "Idempotency-Key"
REPLAYED = "Idempotency-Replayed"
ASK = {"category": "work_assessment", "purpose": "work_capacity_assessment"}


def new_key() -> str:
    return f'"{uuid.uuid4()}"'


def count(env: Env, row_type: Any, *where: Any) -> int:
    with env.broker.uow(write=False) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(row_type).where(*where)) or 0)


def events(env: Env) -> list[str]:
    with env.broker.uow(write=False) as uow:
        return list(uow.session.scalars(select(AuditEntryRow.event).order_by(AuditEntryRow.id)))


def person_with_a_record_and_a_consent(env: Env) -> str:
    """A person served by Kisälli and the health centre, one work assessment deposited by Kisälli, and the person's
    consent to disclose it to the health centre (the F7 flow of policies/rules)."""
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    deposited = env.post(
        "kisalli",
        "/records",
        {"person_id": person_id, "category": "work_assessment", "content": EXAMPLES["work_assessment"]},
    )
    assert deposited.status_code == 201, deposited.get_json()
    consented = give_consent(env, person_id)
    assert consented.status_code == 201, consented.get_json()
    return person_id


def consent_body(person_id: str) -> dict[str, Any]:
    return {
        "person_id": person_id,
        "recipients": ["varha-health"],
        "categories": ["work_assessment"],
        "purposes": ["work_capacity_assessment"],
        "method": "in_person",
        "witness": "Pekka Salo",
    }


def give_consent(env: Env, person_id: str) -> TestResponse:
    return env.post("kisalli", "/consents", consent_body(person_id))


def disclose(env: Env, person_id: str, key: str | None) -> TestResponse:
    """The health centre asks for the person's work assessments, with `key` as its Idempotency-Key (if any)."""
    headers = {HEADER: key} if key is not None else {}
    return env.post("varha-health", "/disclosures", {"person_id": person_id, **ASK}, headers=headers)


def later(env: Env, **elapsed: float) -> None:
    env.clock.advance(**elapsed)
    env._tokens.clear()  # the cached access tokens have expired meanwhile


def assert_same_response(first: TestResponse, retry: TestResponse) -> None:
    assert retry.status_code == first.status_code
    assert retry.get_data() == first.get_data()
    assert retry.content_type == first.content_type
    assert first.headers.get(REPLAYED) is None
    assert retry.headers[REPLAYED] == "true"


# -- a retry is answered with the first response ------------------------------------------------------------------


def test_a_retried_disclosure_gets_the_first_response_and_discloses_once(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    key = new_key()
    first = disclose(env, person_id, key)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["records"], "the consent should open the flow"
    before = events(env)

    retry = disclose(env, person_id, key)

    assert_same_response(first, retry)
    assert events(env) == before, "a replay writes no audit entry"
    assert before.count("disclosure:permit") == 1
    assert count(env, DisclosureRow) == 1
    assert count(env, IdempotencyKeyRow) == 1


def test_after_the_withdrawal_a_retry_does_not_send_the_content_again(env: Env) -> None:
    """DESIGN.md invariant 3: once the consent is withdrawn, nothing under it leaves the broker, a replay included.
    The first disclosure stays as it was: in the log and in the disclosures table."""
    person_id = person_with_a_record_and_a_consent(env)
    key = new_key()
    first = disclose(env, person_id, key)
    assert first.status_code == 200, first.get_json()
    consent_id = first.get_json()["basis"]["consent_id"]
    withdrawn = env.post("kisalli", f"/consents/{consent_id}/withdraw", {"reason": "the person asked"})
    assert withdrawn.status_code == 200, withdrawn.get_json()
    before = events(env)

    retry = disclose(env, person_id, key)

    assert retry.status_code == 403, retry.get_json()
    problem = retry.get_json()
    assert problem["code"] == "consent_no_longer_active"
    assert consent_id in problem["detail"]
    assert "records" not in problem
    assert first.get_json()["records"][0]["content"] and '"content"' not in retry.get_data(as_text=True)
    assert events(env) == before, "a refused replay is no new decision"
    assert count(env, DisclosureRow) == 1


def write_request(env: Env, operation: str, person_id: str) -> tuple[str, dict[str, Any], Any]:
    """The path and body of one write, and the table it adds a row to (None: it changes a row, or adds to several)."""
    if operation == "deposit":
        body = {"person_id": person_id, "category": "work_assessment", "content": EXAMPLES["work_assessment"]}
        return "/records", body, RecordRow
    if operation == "notice":
        body = {
            "person_id": person_id,
            "kind": "interruption_notice",
            "recipient": "varha-social-work",
            "content": EXAMPLES["interruption_notice"],
        }
        return "/notices", body, NoticeRow
    if operation == "consent":
        return "/consents", consent_body(person_id), ConsentRow
    if operation == "consent request":
        body = {
            "person_id": person_id,
            "recipients": ["kisalli"],
            "categories": ["service_need_assessment"],
            "purposes": ["multisector_planning"],
            "valid_days": 180,
            "reason": "to plan your work activity",
        }
        return "/consent-requests", body, None
    assert operation == "withdrawal"
    consent = env.post("kisalli", "/consents", consent_body(person_id))
    assert consent.status_code == 201, consent.get_json()
    return f"/consents/{consent.get_json()['consent_id']}/withdraw", {"reason": "the person asked"}, None


@pytest.mark.parametrize("operation", ["deposit", "notice", "consent", "consent request", "withdrawal"])
def test_every_write_retried_with_its_key_is_done_once(env: Env, operation: str) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    path, body, table = write_request(env, operation, person_id)
    key = new_key()
    first = env.post("kisalli", path, body, headers={HEADER: key})
    assert first.status_code in (200, 201), first.get_json()
    logged = events(env)

    retry = env.post("kisalli", path, body, headers={HEADER: key})

    # Done again, a deposit, a notice or a consent would be there twice, and a withdrawal would be refused (the
    # consent is no longer active): the retry gets the first answer, and nothing more is logged or stored.
    assert_same_response(first, retry)
    assert events(env) == logged
    if table is not None:
        assert count(env, table) == 1


def test_a_denied_disclosure_is_replayed_not_decided_again(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    key = new_key()
    denied = disclose(env, person_id, key)
    assert denied.status_code == 403 and denied.get_json()["code"] == "no_legal_basis"
    assert give_consent(env, person_id).status_code == 201

    retry = disclose(env, person_id, key)

    # The refusal and its `disclosure:deny` entry were committed with the stored response; the retry is the same
    # answer, even though a consent now opens the flow — that takes a new request, with a new key.
    assert_same_response(denied, retry)
    assert events(env).count("disclosure:deny") == 1
    assert disclose(env, person_id, new_key()).status_code == 200


def test_a_request_without_the_key_is_handled_as_before(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    person_id = person_with_a_record_and_a_consent(env)

    def unexpected(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request without Idempotency-Key reached the idempotency path")

    monkeypatch.setattr(idempotency, "idempotent_write", unexpected)
    monkeypatch.setattr(idempotency, "request_fingerprint", unexpected)
    first, second = disclose(env, person_id, None), disclose(env, person_id, None)
    assert first.status_code == second.status_code == 200
    assert REPLAYED not in second.headers
    assert count(env, DisclosureRow) == 2
    assert count(env, IdempotencyKeyRow) == 0


def test_an_unquoted_key_names_the_same_key_as_its_quoted_form(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    key = str(uuid.uuid4())
    first = disclose(env, person_id, key)
    assert first.status_code == 200
    assert_same_response(first, disclose(env, person_id, f'"{key}"'))
    assert count(env, DisclosureRow) == 1


# -- a key used for another request, by another partner, or malformed ----------------------------------------------


def test_the_same_key_with_another_request_is_422_and_writes_nothing(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    key = new_key()
    assert disclose(env, person_id, key).status_code == 200
    other_person = env.person()
    env.token("varha-health", role="nurse")
    logged = events(env)

    another_body = env.post("varha-health", "/disclosures", {"person_id": other_person, **ASK}, headers={HEADER: key})
    another_path = env.post("varha-health", "/decisions", {"person_id": person_id, **ASK}, headers={HEADER: key})
    # Another professional of the same partner (here: another role) may not obtain an answer decided for a first
    # one's role (DESIGN.md invariant 1).
    another_actor = env.post(
        "varha-health",
        "/disclosures",
        {"person_id": person_id, **ASK},
        role="nurse",
        headers={HEADER: key},
    )

    for response in (another_body, another_path, another_actor):
        assert response.status_code == 422, response.get_json()
        assert response.content_type == "application/problem+json"
        problem = response.get_json()
        assert problem["code"] == "idempotency_key_reused" and problem["field"] == HEADER
        assert REPLAYED not in response.headers
    assert events(env) == logged
    assert count(env, DisclosureRow) == 1


def test_keys_are_per_partner(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    env.serve(person_id, "varha-social-work")
    key = new_key()
    assert disclose(env, person_id, key).status_code == 200

    # The same key from another partner is another key: its own request is decided and answered for it.
    other = env.post(
        "kisalli",
        "/records",
        {"person_id": person_id, "category": "work_assessment", "content": EXAMPLES["work_assessment"]},
        headers={HEADER: key},
    )

    assert other.status_code == 201 and REPLAYED not in other.headers
    assert count(env, IdempotencyKeyRow) == 2
    assert count(env, IdempotencyKeyRow, IdempotencyKeyRow.client_id == "kisalli") == 1


@pytest.mark.parametrize(
    "value",
    ['""', '"one", "two"', '"' + "k" * 256 + '"'],
    ids=["empty", "two keys", "too long"],  # the parser's cases: tests/unit/test_idempotency_key.py
)
def test_a_malformed_key_is_400_and_nothing_is_done(env: Env, value: str) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    logged = events(env)

    response = disclose(env, person_id, value)

    assert response.status_code == 400, response.get_json()
    problem = response.get_json()
    assert problem["code"] == "invalid_idempotency_key" and problem["field"] == HEADER
    assert events(env) == logged
    assert count(env, DisclosureRow) == 0
    assert count(env, IdempotencyKeyRow) == 0


def test_a_body_the_schema_refuses_stores_nothing_and_leaves_the_key_unused(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    key = new_key()
    refused = env.post("varha-health", "/disclosures", {"person_id": person_id, "category": 7}, headers={HEADER: key})
    assert refused.status_code == 400 and refused.get_json()["code"] == "invalid_request"
    assert count(env, IdempotencyKeyRow) == 0

    corrected = disclose(env, person_id, key)

    assert corrected.status_code == 200 and REPLAYED not in corrected.headers


# -- failures and crashes: the response and the write commit together, or neither ----------------------------------


def test_a_failure_in_the_use_case_stores_no_key_and_writes_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    logged = events(env)

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("log unavailable")

    monkeypatch.setattr("broker.services.disclosures.append_pending", broken)
    monkeypatch.setattr("broker.services.disclosures.record_disclosure", broken)  # PostgreSQL's append
    key = new_key()
    failed = disclose(env, person_id, key)
    assert failed.status_code == 500
    assert "records" not in failed.get_data(as_text=True)
    assert events(env) == logged
    assert count(env, DisclosureRow) == 0
    assert count(env, IdempotencyKeyRow) == 0

    monkeypatch.undo()
    retry = disclose(env, person_id, key)

    assert retry.status_code == 200 and REPLAYED not in retry.headers
    assert count(env, DisclosureRow) == 1


def test_a_response_that_cannot_be_stored_takes_its_disclosure_with_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last step — sealing and inserting the response — fails after the use case has done all its work: the
    # disclosure must not survive without its stored response, or the retry would disclose a second time.
    person_id = person_with_a_record_and_a_consent(env)
    logged = events(env)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no room left")

    monkeypatch.setattr(idempotency, "seal", broken)
    key = new_key()
    assert disclose(env, person_id, key).status_code == 500
    assert events(env) == logged
    assert count(env, DisclosureRow) == 0
    assert count(env, IdempotencyKeyRow) == 0

    monkeypatch.undo()
    assert disclose(env, person_id, key).status_code == 200
    assert count(env, DisclosureRow) == 1


def test_a_use_case_inside_the_key_s_transaction_keeps_what_it_committed_and_nothing_else(env: Env) -> None:
    # The joined unit of work is a savepoint: work a use case leaves uncommitted (it raised) is undone even though
    # the owner of the transaction then commits; work it committed is kept.
    broker = env.broker
    now = broker.clock.now()
    with idempotency.idempotent_write(broker, "kisalli", "savepoints", "0" * 64) as attempt:
        assert attempt.replay is None
        with pytest.raises(NotFoundError), broker.uow() as uow:
            uow.session.add(OrganisationRow(id="org-undone", name="undone", org_type="kela", created_at=now))
            uow.session.flush()
            raise NotFoundError("refused after a write")
        # A failed statement (here a duplicate key) is undone with its savepoint; the transaction goes on.
        with pytest.raises(IntegrityError), broker.uow() as uow:
            uow.session.add(OrganisationRow(id="kisalli", name="again", org_type="kela", created_at=now))
            uow.session.flush()
        with broker.uow() as uow:
            uow.session.add(OrganisationRow(id="org-kept", name="kept", org_type="kela", created_at=now))
            uow.commit()
            uow.session.add(OrganisationRow(id="org-after", name="after", org_type="kela", created_at=now))
        attempt.store(idempotency.StoredResponse(404, (("Content-Type", "application/problem+json"),), b"{}"))

    assert count(env, OrganisationRow, OrganisationRow.id.in_(["org-undone", "org-kept", "org-after"])) == 1
    assert count(env, OrganisationRow, OrganisationRow.id == "org-kept") == 1
    assert count(env, OrganisationRow, OrganisationRow.name == "again") == 0
    assert count(env, IdempotencyKeyRow) == 1


def test_the_stored_response_is_sealed_and_the_request_is_kept_only_as_a_keyed_hash(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    first = disclose(env, person_id, new_key())
    content = first.get_json()["records"][0]["content"]
    with env.broker.uow(write=False) as uow:
        row = uow.session.scalars(select(IdempotencyKeyRow)).one()
        stored = (row.ciphertext, row.request_hash, repr(row.headers))
    secrets_in_clear = [v for v in content.values() if isinstance(v, str) and len(v) > 3]
    assert secrets_in_clear
    for value in secrets_in_clear:
        assert value.encode() not in stored[0]
    assert person_id.encode() not in stored[0]
    assert len(stored[1]) == 64 and person_id not in stored[2]


# -- concurrency ----------------------------------------------------------------------------------------------------


def test_concurrent_requests_with_one_key_disclose_once(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    env.token("varha-health")  # issued before the threads start
    key = new_key()
    racers = 6
    start = threading.Barrier(racers)

    def race() -> TestResponse:
        start.wait()
        return disclose(env, person_id, key)

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(lambda _: race(), range(racers)))

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, statuses
    answered = [r for r in responses if r.status_code == 200]
    originals = [r for r in answered if REPLAYED not in r.headers]
    assert len(originals) == 1, statuses
    assert all(r.get_data() == originals[0].get_data() for r in answered)
    for busy in (r for r in responses if r.status_code == 409):
        assert busy.get_json()["code"] == "idempotency_key_in_use"
    assert count(env, DisclosureRow) == 1
    assert events(env).count("disclosure:permit") == 1
    # Whoever was told 409 gets the first answer on its retry.
    assert_same_response(originals[0], disclose(env, person_id, key))


def test_a_request_whose_key_is_held_by_a_running_one_is_409(env: Env) -> None:
    broker = env.broker
    if broker.db.engine.dialect.name != "postgresql":
        pytest.skip("on SQLite the write lock makes the second request wait for the first instead")
    person_id = person_with_a_record_and_a_consent(env)
    key = str(uuid.uuid4())
    with idempotency.idempotent_write(broker, "varha-health", key, "0" * 64) as attempt:
        assert attempt.replay is None
        # A thread of its own: the ambient unit of work of this one is not its.
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(disclose, env, person_id, key).result()
        # The holder gives up without storing (a 5xx): the key is free again.
    assert busy.status_code == 409 and busy.get_json()["code"] == "idempotency_key_in_use"
    assert count(env, DisclosureRow) == 0
    assert disclose(env, person_id, key).status_code == 200


# -- time: keys expire and are purged --------------------------------------------------------------------------------


def test_an_expired_key_is_free_again_and_purged_by_the_periodic_job(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    stale, live = new_key(), new_key()
    assert disclose(env, person_id, stale).status_code == 200
    ttl = env.broker.settings.idempotency_key_ttl
    later(env, seconds=ttl - 1)
    assert disclose(env, person_id, stale).headers[REPLAYED] == "true"
    assert disclose(env, person_id, live).status_code == 200
    later(env, seconds=1)

    # At its expiry the key is free: the request is decided anew, not replayed.
    again = disclose(env, person_id, stale)
    assert again.status_code == 200 and REPLAYED not in again.headers
    assert count(env, DisclosureRow) == 3

    later(env, seconds=ttl - 1)
    assert idempotency.purge_expired_keys(env.broker) == 1  # `live`; `stale`'s second response lives a second more
    assert count(env, IdempotencyKeyRow) == 1

    later(env, days=1)
    settings = env.broker.settings
    monkeypatch.setenv("BROKER_MODE", "test")
    monkeypatch.setenv("BROKER_INSTANCE_PATH", str(settings.instance_path))
    monkeypatch.setenv("BROKER_DATABASE_URL", settings.database_url)
    # The command reads the real clock, which is long past the test clock's expiries.
    assert main(["jobs", "run"]) == 0
    assert "forgot 1 stored responses of expired Idempotency-Keys" in capsys.readouterr().out
    assert count(env, IdempotencyKeyRow) == 0


def test_purging_works_in_batches_and_keeps_live_keys(env: Env) -> None:
    broker = env.broker
    for n in range(5):
        with idempotency.idempotent_write(broker, "kisalli", f"old-{n}", "0" * 64) as attempt:
            attempt.store(idempotency.StoredResponse(201, (), b"{}"))
    later(env, seconds=broker.settings.idempotency_key_ttl)
    with idempotency.idempotent_write(broker, "kisalli", "new", "0" * 64) as attempt:
        attempt.store(idempotency.StoredResponse(201, (), b"{}"))
    later(env, seconds=1)

    assert idempotency.purge_expired_keys(broker, batch_size=2) == 5

    with broker.uow(write=False) as uow:
        assert list(uow.session.scalars(select(IdempotencyKeyRow.key))) == ["new"]


def test_stored_responses_are_rewrapped_when_keys_rotate(env: Env) -> None:
    person_id = person_with_a_record_and_a_consent(env)
    key = new_key()
    first = disclose(env, person_id, key)
    result = rotate_keys(env.broker.settings)
    assert result.idempotent_responses == 1
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalars(select(IdempotencyKeyRow.kek_id)).one() == result.kek_id
    assert_same_response(first, disclose(env, person_id, key))


# -- the contract -----------------------------------------------------------------------------------------------------


# POSTs that change nothing in the broker, so that a retry is harmless as it is, and that take no Idempotency-Key: the
# webhook test call, which must not hold a transaction open across its request to the receiver (docs/webhooks.md).
CHANGES_NOTHING = {"/api/v1/webhooks/{webhook_id}/test"}


def test_the_openapi_document_declares_the_header_and_its_answers_on_every_write(env: Env) -> None:
    document = env.client.get("/api/v1/openapi.json").get_json()
    writes = 0
    for path, operations in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            if method == "parameters":
                continue
            declared = [p for p in operation.get("parameters", []) if p.get("name") == HEADER]
            if method != "post" or path in CHANGES_NOTHING:
                assert declared == [], f"{method} {path}"
                continue
            writes += 1
            assert len(declared) == 1 and declared[0]["in"] == "header" and not declared[0]["required"], path
            for status in ("409", "422"):
                assert "application/problem+json" in operation["responses"][status]["content"], (path, status)
    assert writes == 14
