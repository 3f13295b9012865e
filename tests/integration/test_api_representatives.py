"""Registering a representative over the partner API: `POST /api/v1/persons/{person_id}/representatives`."""

from __future__ import annotations

import itertools
import json
from datetime import date, timedelta

from sqlalchemy import select

from broker.adapters.orm import AuditEntryRow, RepresentationRow
from broker.domain.hetu import make_hetu
from broker.services import person_portal as portal
from tests.support import Env

_born = itertools.count()


def hetu(born: date | None = None) -> str:
    return make_hetu(born or date(1970, 1, 1) + timedelta(days=next(_born)), 960)


def served(env: Env, code: str | None = None) -> str:
    """A person whom both registering organisations serve (only they may register a mandate for the person)."""
    person = env.person(hetu=code or hetu())
    env.serve(person, "varha-social-work", "kisalli")
    return person


def minor(env: Env) -> str:
    return served(env, hetu(date(2014, 8, 9) + timedelta(days=next(_born))))


def test_a_custodian_is_registered_for_a_minor_and_found_at_login(env: Env) -> None:
    child, code = minor(env), hetu()
    response = env.post(
        "varha-social-work", f"/persons/{child}/representatives", {"hetu": code, "mandate": "custodian"}
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == {
        "representation_id",
        "person_id",
        "representative_id",
        "mandate",
        "valid_from",
        "valid_until",
        "registered_by",
    }
    assert (body["person_id"], body["mandate"], body["registered_by"]) == (child, "custodian", "varha-social-work")
    assert body["valid_until"] is None and code not in response.get_data(as_text=True)
    # The representative is the person with that identity code (created on first sight).
    assert env.person(hetu=code) == body["representative_id"]
    assert portal.person_for_login(env.broker, code) == body["representative_id"]
    assert [r["person_id"] for r in portal.representations_of(env.broker, body["representative_id"])] == [child]
    with env.broker.uow(write=False) as uow:
        entries = [json.loads(e) for e in uow.session.scalars(select(AuditEntryRow.entry).order_by(AuditEntryRow.id))]
    [registered] = [e for e in entries if e["event"] == "representation:register"]
    assert registered["person_id"] == child and registered["organisation"] == "varha-social-work"
    assert registered["detail"]["representative_id"] == body["representative_id"]
    assert all(code not in json.dumps(e) for e in entries)


def test_an_adult_mandate_with_an_end_date(env: Env) -> None:
    person = served(env)
    until = (env.clock.now() + timedelta(days=365)).isoformat()
    response = env.post(
        "varha-social-work",
        f"/persons/{person}/representatives",
        {"hetu": hetu(), "mandate": "continuing_poa_personal", "valid_until": until},
    )
    assert response.status_code == 201
    assert response.get_json()["valid_until"].startswith("2027-01-15T09:00:00")


def test_registering_the_same_mandate_again_supersedes_the_earlier_registration(env: Env) -> None:
    person, code = served(env), hetu()
    body = {"hetu": code, "mandate": "guardian_personal"}
    first = env.post("varha-social-work", f"/persons/{person}/representatives", body).get_json()
    second = env.post("kisalli", f"/persons/{person}/representatives", body).get_json()
    assert first["representative_id"] == second["representative_id"]
    with env.broker.uow(write=False) as uow:
        rows = {r.id: r for r in uow.session.scalars(select(RepresentationRow))}
    assert rows[first["representation_id"]].valid_until is not None
    assert rows[second["representation_id"]].valid_until is None
    assert len(portal.representations_of(env.broker, second["representative_id"])) == 1


def test_a_custodian_for_an_adult_and_an_adult_mandate_for_a_minor_are_refused(env: Env) -> None:
    grown, child = served(env), minor(env)
    for person_id, mandate in ((grown, "custodian"), (child, "guardian_personal"), (child, "continuing_poa_personal")):
        response = env.post(
            "varha-social-work", f"/persons/{person_id}/representatives", {"hetu": hetu(), "mandate": mandate}
        )
        assert response.status_code == 400, mandate
        assert response.get_json()["field"] == "mandate"
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalars(select(RepresentationRow)).all() == []


def test_a_mandate_the_broker_does_not_know_is_refused(env: Env) -> None:
    person = served(env)
    for mandate in ("relative", "Custodian", ""):
        response = env.post("kisalli", f"/persons/{person}/representatives", {"hetu": hetu(), "mandate": mandate})
        assert response.status_code == 400 and response.get_json()["field"] == "mandate"


def test_a_bad_identity_code_is_refused_without_echoing_it(env: Env) -> None:
    person = served(env)
    good = hetu()
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    response = env.post("kisalli", f"/persons/{person}/representatives", {"hetu": bad, "mandate": "guardian_personal"})
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_hetu" and response.get_json()["field"] == "hetu"
    assert bad not in response.get_data(as_text=True)


def test_other_bad_registrations(env: Env) -> None:
    code = hetu()
    person = served(env, code)
    path = f"/persons/{person}/representatives"
    own = env.post("kisalli", path, {"hetu": code, "mandate": "guardian_personal"})
    assert own.status_code == 400 and own.get_json()["field"] == "hetu"
    past = (env.clock.now() - timedelta(days=1)).isoformat()
    ended = env.post("kisalli", path, {"hetu": hetu(), "mandate": "guardian_personal", "valid_until": past})
    assert ended.status_code == 400 and ended.get_json()["field"] == "valid_until"
    unknown_field = env.post("kisalli", path, {"hetu": hetu(), "mandate": "guardian_personal", "name": "x"})
    assert unknown_field.status_code == 400 and unknown_field.get_json()["field"] == "name"
    nobody = env.post("kisalli", "/persons/per_nobody/representatives", {"hetu": hetu(), "mandate": "custodian"})
    assert nobody.status_code == 404 and nobody.get_json()["code"] == "unknown_person"
    assert env.post(None, path, {"hetu": hetu(), "mandate": "guardian_personal"}).status_code == 401


def test_only_an_organisation_serving_the_person_may_register_a_mandate(env: Env) -> None:
    person = env.person(hetu=hetu())
    response = env.post("kela", f"/persons/{person}/representatives", {"hetu": hetu(), "mandate": "guardian_personal"})
    assert response.status_code == 409 and response.get_json()["code"] == "no_relationship"
