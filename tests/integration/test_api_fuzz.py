"""Every operation of the partner API, fuzzed from its own OpenAPI document (schemathesis), in process over WSGI and
with real credentials: no request, valid or not, gets a server error, and every answer matches what the document
says of it — its status is one the operation documents, and its body fits the documented schema.

Each generated request is authenticated as a partner system authenticates: the access token of a real client
assertion (RFC 7523), bound to the partner's key, and a fresh DPoP proof (RFC 9449 §4.2) signed for the request's
exact method and URL — so the requests reach the views and their validation, not only the token check. The audit
log's operations are called as the DPO's system (scope `audit:read`), every other operation as Kisälli's.

The world is a person Kisälli serves, with a record, a consent, Kisälli's request for the record (a disclosure in
the log) and a notice in Kisälli's inbox; half of the ids, codes and words the fuzzer sends are those real ones
(schemathesis's dictionaries), so that requests also reach objects that exist and answers that succeed, and the
rest are invented. Generation is deterministic (a fixed seed, Hypothesis's `derandomize`) and bounded per operation,
so CI runs the same cases each time, in well under a minute per backend; `BROKER_SOAK=1` (`make soak`) runs many
more. What the fuzz has found is kept at the end as fixed cases, which CI repeats whatever the generator draws.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import schemathesis
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from werkzeug.urls import iri_to_uri

from broker.demo import DPO_PARTNER, ORGANISATIONS
from broker.devidp import PORTAL_CLIENT_ID, portal_redirect_uri
from broker.services.notices import NOTICE_KINDS
from broker.services.sequencer import Sequencer
from schemas.records.examples import EXAMPLES
from tests.integration.module_env import BACKENDS, open_module_env
from tests.support import Env, new_hetu

SOAK = os.environ.get("BROKER_SOAK") == "1"
#: Generated requests per operation and generation mode (valid, invalid) in the fuzzing phase; schemathesis's
#: examples and coverage phases (boundary values, missing and extra members) come on top.
MAX_EXAMPLES = 500 if SOAK else 20
#: CI generates the same cases every run (Hypothesis's `derandomize`); the soak draws new ones from the seed `make
#: soak` prints, which reproduces them.
SEED = int(os.environ.get("BROKER_SOAK_SEED", "20260115")) if SOAK else 20260115
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
#: How often a bound parameter takes one of the world's real values instead of a generated one.
REAL = 0.5


@dataclass(frozen=True)
class FuzzWorld:
    env: Env
    person: str
    hetu: str
    consent: str
    disclosure: str
    notice: str
    tree_size: int


def _created(env: Env, org: str, path: str, body: dict[str, Any], key: str) -> str:
    response = env.post(org, path, body)
    assert response.status_code in (200, 201), response.get_json()
    value: str = response.get_json()[key]
    return value


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzWorld]:
    with open_module_env(tmp_path_factory.mktemp("fuzz"), request.param) as env:
        hetu = new_hetu()
        person = env.person("kisalli", hetu)
        env.serve(person, "kisalli", "varha-social-work", "varha-health")
        record = {"person_id": person, "category": "health_check_summary", "content": EXAMPLES["health_check_summary"]}
        _created(env, "varha-health", "/records", record, "record_id")
        terms = {"person_id": person, "categories": ["health_check_summary"], "purposes": ["service_delivery"]}
        consent = _created(
            env, "kisalli", "/consents", {**terms, "recipients": ["kisalli"], "method": "paper"}, "consent_id"
        )
        # A consent naming Kisälli, withdrawn by the health centre: the broker's notice of it is in Kisälli's inbox.
        told = {**terms, "recipients": ["kisalli", "varha-health"], "method": "paper"}
        withdrawn = _created(env, "varha-health", "/consents", told, "consent_id")
        _created(env, "varha-health", f"/consents/{withdrawn}/withdraw", {}, "consent_id")
        [notice] = env.get("kisalli", "/inbox").get_json()
        # Permitted or refused, the request is in the log: its id is in the answer or in the problem.
        ask = {"person_id": person, "category": "health_check_summary", "purpose": "service_delivery"}
        asked = env.post("kisalli", "/disclosures", ask)
        assert asked.status_code in (200, 403), asked.get_json()
        disclosure = asked.get_json()["disclosure_id"]
        Sequencer(env.broker).run_once()
        checkpoint = env.get(DPO_PARTNER, "/audit/checkpoint").get_json()
        yield FuzzWorld(env, person, hetu, consent, disclosure, notice["notice_id"], checkpoint["tree_size"])


def _config(world: FuzzWorld) -> schemathesis.Config:
    policy = world.env.broker.policy
    dictionaries = {
        "persons": [world.person],
        "consents": [world.consent],
        "notices": [world.notice],
        # The FHIR ids of the consent and of the disclosure (R4 datatypes.html#id has no "_"), for their reads.
        "fhir_consents": [world.consent.replace("_", "-")],
        "fhir_audit_events": [world.disclosure.replace("_", "-")],
        "hetus": [world.hetu, new_hetu()],
        "organisations": [org for org, *_ in ORGANISATIONS],
        "categories": sorted(policy.categories),
        "purposes": sorted(policy.purposes),
        "notice_kinds": sorted(NOTICE_KINDS),
        "positions": list(range(world.tree_size)),
        "sizes": list(range(1, world.tree_size + 1)),
    }
    bindings = {
        "persons": ["path.person_id", "query.person_id", "query.patient", "body.person_id"],
        "consents": ["path.consent_id"],
        "notices": ["path.notice_id"],
        "hetus": ["body.hetu"],
        "organisations": ["body.recipient", "body.recipients[*]", "query.organisation"],
        "categories": ["body.category", "body.categories[*]", "query.category"],
        "purposes": ["body.purpose", "body.purposes[*]", "query.purpose"],
        "notice_kinds": ["body.kind"],
        "positions": ["path.index", "query.index"],
        "sizes": ["query.tree_size", "query.first", "query.second"],
    }
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": not SOAK, "database": "none"},
            "dictionaries": {name: {"values": values} for name, values in dictionaries.items()},
            "parameters": {
                key: {"dictionary": name, "probability": REAL} for name, keys in bindings.items() for key in keys
            },
            # The FHIR reads name their id alike (`resource_id`); each gets its own resource's.
            "operations": [
                {
                    "include-path": f"/api/v1/fhir/{resource}/{{resource_id}}",
                    "parameters": {"path.resource_id": {"dictionary": name, "probability": REAL}},
                }
                for resource, name in (("Consent", "fhir_consents"), ("AuditEvent", "fhir_audit_events"))
            ],
        }
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_world: FuzzWorld) -> Any:
    env = fuzz_world.env
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", env.app, config=_config(fuzz_world))

    class PartnerAuth:
        """A real token and a fresh DPoP proof for each generated request (never cached: a proof is for one
        request, RFC 9449 §11.1)."""

        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            return DPO_PARTNER if case.operation.path.startswith("/api/v1/audit/") else "kisalli"

        def set(self, case: schemathesis.Case, org: str, context: schemathesis.AuthContext) -> None:
            # The URL as it goes on the wire (Werkzeug's test client percent-encodes a path it is given as an IRI):
            # a client signs the URL it sends.
            path = iri_to_uri(case.operation.schema.get_full_path(case.formatted_path))
            case.headers = {**(case.headers or {}), **env.auth_headers(org, case.method, path)}

    schema.auth(refresh_interval=None)(PartnerAuth)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's loader from a fixture reads and rewrites `node._nodeid` to name each operation's subtest;
    pytest 9 keeps the id elsewhere and has no such attribute. Giving the node one lets the loader run (the
    subtests are named by their operation either way); nothing else reads it."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
def test_no_server_error_and_every_answer_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


# -- what the fuzz found, kept as fixed cases ---------------------------------------------------------------------

NUL = "\x00"
# U+0000 anywhere in the input was a 500 on PostgreSQL, whose text cannot hold it (found by the soak): in a path id,
# a query value, a body value at any depth or a member name, a DPoP proof's or a client assertion's claim.
NUL_REQUESTS = {
    "path id": ("kisalli", "POST", "/api/v1/persons/per_a%00b/relationships", None, 404),
    "path id of a GET": ("kisalli", "GET", "/api/v1/consents/con_%00/receipt", None, 404),
    "query value": ("kisalli", "GET", "/api/v1/consents?person_id=per_%00", None, 400),
    "audit query value": (DPO_PARTNER, "GET", "/api/v1/audit/entries?event=consent%00grant", None, 400),
    "body value": (
        "kisalli",
        "POST",
        "/api/v1/disclosures",
        {"person_id": f"per_{NUL}", "category": "health_check_summary", "purpose": "service_delivery"},
        400,
    ),
    "list item": (
        "kisalli",
        "POST",
        "/api/v1/consents",
        {
            "person_id": "per_x",
            "recipients": [f"kisalli{NUL}"],
            "categories": ["x"],
            "purposes": ["y"],
            "method": "paper",
        },
        400,
    ),
    "record content": (
        "kisalli",
        "POST",
        "/api/v1/records",
        {"person_id": "per_x", "category": "attendance_report", "content": {"next_step": f"later{NUL}"}},
        400,
    ),
    "member name": ("kisalli", "POST", "/api/v1/persons/resolve", {"hetu": "010190-900A", f"x{NUL}": 1}, 400),
}


@pytest.mark.parametrize("name", list(NUL_REQUESTS))
def test_a_nul_character_in_a_request_is_refused_and_named(fuzz_world: FuzzWorld, name: str) -> None:
    org, method, path, body, status = NUL_REQUESTS[name]
    response = fuzz_world.env.call(org, method, path, body)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json" and "U+0000" in response.get_json()["detail"]


def test_a_nul_character_in_a_dpop_proof_or_a_client_assertion_is_refused(fuzz_world: FuzzWorld) -> None:
    env = fuzz_world.env
    token = env.token("kisalli")
    proof = env.signer("kisalli").proof("GET", env.issuer + "/api/v1/inbox", token, jti=f"a{NUL}b")
    refused = env.client.get("/api/v1/inbox", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert refused.status_code == 401 and refused.get_json()["code"] == "invalid_dpop_proof"
    for claims in ({"jti": f"x{NUL}y"}, {"act": {"sub": f"staff{NUL}", "role": "individual_coach"}}):
        answer = env.token_response("kisalli", env.assertion("kisalli", **claims))
        assert answer.status_code == 401 and answer.get_json()["error"] == "invalid_client", answer.get_json()
        assert "U+0000" in answer.get_json()["error_description"]


def test_a_nul_character_in_the_development_providers_nonce_is_refused(fuzz_world: FuzzWorld) -> None:
    settings = fuzz_world.env.broker.settings
    params = {
        "response_type": "code",
        "client_id": PORTAL_CLIENT_ID,
        "redirect_uri": portal_redirect_uri(settings),
        "scope": "openid",
        "state": "s",
        "nonce": f"n{NUL}",
        "code_challenge": create_s256_code_challenge("v" * 43),
        "code_challenge_method": "S256",
    }
    answer = fuzz_world.env.client.get(f"/dev-idp/authorize?{urlencode(params)}")
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["error"] == ["invalid_request"]
