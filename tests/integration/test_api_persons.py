"""Persons and relationships over the API, including what bad input gets back."""

from __future__ import annotations

from sqlalchemy import select

from broker.adapters.orm import AuditEntryRow, PersonRow
from tests.support import Env, new_hetu


def test_resolving_the_same_identity_code_gives_the_same_person(env: Env) -> None:
    hetu = new_hetu()
    first = env.post("kisalli", "/persons/resolve", {"hetu": hetu})
    second = env.post("varha-health", "/persons/resolve", {"hetu": hetu.lower()})
    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()
    assert set(first.get_json()) == {"person_id"}


def test_identity_code_is_stored_only_sealed_and_never_logged(env: Env) -> None:
    hetu = new_hetu()
    person_id = env.person(hetu=hetu)
    with env.broker.uow(write=False) as uow:
        person = uow.session.get(PersonRow, person_id)
        assert person is not None
        assert hetu.encode() not in person.hetu_ciphertext
        assert hetu not in person.hetu_index
        entries = uow.session.scalars(select(AuditEntryRow.entry)).all()
    assert entries and all(hetu.encode() not in entry for entry in entries)


def test_identity_code_with_a_bad_check_character_is_refused_without_echoing_it(env: Env) -> None:
    hetu = new_hetu()
    bad = hetu[:-1] + ("A" if hetu[-1] != "A" else "B")
    response = env.post("kisalli", "/persons/resolve", {"hetu": bad})
    assert response.status_code == 400
    problem = response.get_json()
    assert response.content_type == "application/problem+json"
    assert problem["code"] == "invalid_hetu" and problem["field"] == "hetu"
    assert bad not in response.get_data(as_text=True)


def test_identity_code_with_an_unknown_century_sign_is_refused(env: Env) -> None:
    response = env.post("kisalli", "/persons/resolve", {"hetu": "170590G9230"})
    assert response.status_code == 400
    assert "century sign" in response.get_json()["detail"]


def test_unknown_and_missing_fields_are_named(env: Env) -> None:
    unknown = env.post("kisalli", "/persons/resolve", {"hetu": new_hetu(), "name": "x"})
    missing = env.post("kisalli", "/persons/resolve", {})
    assert unknown.status_code == missing.status_code == 400
    assert unknown.get_json()["field"] == "name"
    assert missing.get_json()["field"] == "hetu"


def test_malformed_json_and_wrong_types_are_client_errors(env: Env) -> None:
    malformed = env.call(
        "kisalli", "POST", "/api/v1/persons/resolve", data="{not json", content_type="application/json"
    )
    wrong_type = env.post("kisalli", "/persons/resolve", {"hetu": 170590})
    assert malformed.status_code == 400 and malformed.get_json()["code"] == "invalid_json"
    assert wrong_type.status_code == 400 and wrong_type.get_json()["field"] == "hetu"


def test_a_body_over_one_mebibyte_is_refused_before_parsing(env: Env) -> None:
    response = env.call(
        "kisalli", "POST", "/api/v1/persons/resolve", data="x" * (1024 * 1024 + 1), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"


def test_requests_without_a_token_are_unauthorised(env: Env) -> None:
    response = env.post(None, "/persons/resolve", {"hetu": new_hetu()})
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("DPoP")  # DPoP-bound tokens only (RFC 9449 §7.1)


def test_a_token_without_the_scope_is_forbidden(env: Env) -> None:
    headers = env.auth_headers("kisalli", "POST", "/api/v1/persons/resolve", scope="records")
    response = env.client.post("/api/v1/persons/resolve", json={"hetu": new_hetu()}, headers=headers)
    assert response.status_code == 403
    assert response.get_json()["code"] == "insufficient_scope"


def test_relationship_starts_once_and_ends(env: Env) -> None:
    person_id = env.person()
    started = env.post("kisalli", f"/persons/{person_id}/relationships")
    again = env.post("kisalli", f"/persons/{person_id}/relationships")
    assert started.status_code == again.status_code == 200
    assert started.get_json()["created"] is True and again.get_json()["created"] is False
    assert started.get_json()["relationship_id"] == again.get_json()["relationship_id"]
    ended = env.post("kisalli", f"/persons/{person_id}/relationships/end")
    assert ended.status_code == 200 and ended.get_json()["active"] is False
    twice = env.post("kisalli", f"/persons/{person_id}/relationships/end")
    assert twice.status_code == 409 and twice.get_json()["code"] == "no_relationship"


def test_relationship_with_an_unknown_person_is_not_found(env: Env) -> None:
    response = env.post("kisalli", "/persons/per_00000000000000000000000000000000/relationships")
    assert response.status_code == 404
    assert response.get_json()["code"] == "unknown_person"


def test_api_responses_are_not_cached(env: Env) -> None:
    response = env.post("kisalli", "/persons/resolve", {"hetu": new_hetu()})
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_concurrent_first_sightings_of_one_person_create_one_person(env: Env) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from broker.demo import caller
    from broker.services.persons import resolve_person

    hetu, start = new_hetu(), Barrier(8)

    def resolve() -> str:
        start.wait()
        return resolve_person(env.broker, caller(env.broker, "kisalli"), hetu)

    with ThreadPoolExecutor(8) as pool:
        ids = {f.result() for f in [pool.submit(resolve) for _ in range(8)]}
    assert len(ids) == 1
    with env.broker.uow(write=False) as uow:
        assert len(uow.session.scalars(select(PersonRow.id)).all()) == 1
