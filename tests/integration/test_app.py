"""The application around the API: health and readiness, the OpenAPI document and its browsable docs, discovery,
and one error shape (RFC 9457 problem documents with a stable `code`) for everything that goes wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from broker.adapters.database import Database
from broker.adapters.orm import Base, PolicyVersionRow
from broker.app import create_app
from broker.config import Settings
from broker.domain.model import SCOPES
from schemas.records.examples import EXAMPLES
from tests.support import Env

PROBLEM = "application/problem+json"

# DESIGN.md, "API contract (v1)": every path of the table except /api/v1/audit/…, with the path parameters
# written as `{}` (the table calls them `{id}`, the document names them).
DESIGN_PATHS = {
    "/api/v1/persons/resolve": {"post"},
    "/api/v1/persons/{}/relationships": {"post"},
    "/api/v1/persons/{}/relationships/end": {"post"},
    "/api/v1/consent-requests": {"post"},
    "/api/v1/consents": {"get", "post"},
    "/api/v1/consents/{}/withdraw": {"post"},
    "/api/v1/consents/{}/receipt": {"get"},
    "/api/v1/records": {"post"},
    "/api/v1/disclosures": {"post"},
    "/api/v1/decisions": {"post"},
    "/api/v1/notices": {"post"},
    "/api/v1/inbox": {"get"},
    "/api/v1/inbox/{}/ack": {"post"},
}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def app_for(tmp_path: Path, database_url: str) -> Flask:
    settings = Settings(
        instance_path=tmp_path / "instance", database_url=database_url, issuer="http://broker.test", mode="test"
    )
    app = create_app(settings)
    app.testing = True
    return app


@pytest.fixture
def unreachable_app(tmp_path: Path) -> Iterator[Flask]:
    """A broker whose database (PostgreSQL on a port nothing listens on) cannot be reached."""
    app = app_for(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/none")
    yield app
    app.extensions["broker"].db.dispose()


def assert_problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    problem: dict[str, Any] = response.get_json(force=True)
    assert problem["status"] == status and problem["title"] and problem["type"] == "about:blank"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", problem["code"])
    if code is not None:
        assert problem["code"] == code
    return problem


def openapi_paths(spec: dict[str, Any]) -> dict[str, set[str]]:
    return {re.sub(r"\{[^}]+\}", "{}", path): set(ops) & HTTP_METHODS for path, ops in spec["paths"].items()}


def test_healthz_answers_without_a_token(env: Env) -> None:
    response = env.client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_answers_ready_when_the_database_is_reachable(env: Env) -> None:
    response = env.client.get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ready"}


def test_readyz_answers_503_with_retry_after_when_the_database_is_unreachable(unreachable_app: Flask) -> None:
    client = unreachable_app.test_client()
    response = client.get("/readyz")
    problem = assert_problem(response, 503, "database_unavailable")
    assert response.headers["Retry-After"].isdigit()
    assert "127.0.0.1" not in str(problem) and "psycopg" not in str(problem)
    # Liveness does not depend on the database: the process is alive, just not ready.
    assert client.get("/healthz").status_code == 200


def test_a_broker_started_before_its_database_becomes_ready_when_the_database_appears(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder / 'broker.db'}"
    app = app_for(tmp_path, url)
    client = app.test_client()
    try:
        assert_problem(client.get("/readyz"), 503, "database_unavailable")
        folder.mkdir()
        db = Database(url)
        Base.metadata.create_all(db.engine)
        assert client.get("/readyz").status_code == 200
        with db.sessions() as session:
            versions = session.scalars(select(PolicyVersionRow.version)).all()
        assert versions == [app.extensions["broker"].policy.version]
        db.dispose()
    finally:
        app.extensions["broker"].db.dispose()


def test_the_openapi_document_is_3_1_and_lists_every_operation_of_the_contract(env: Env) -> None:
    response = env.client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.content_type == "application/json"
    spec = response.get_json()
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] == "Consent Broker" and spec["info"]["version"] == "v1"
    paths = openapi_paths(spec)
    for path, methods in DESIGN_PATHS.items():
        assert path in paths, path
        assert methods <= paths[path], path


def test_every_operation_needs_the_partner_token_and_documents_its_problems(env: Env) -> None:
    spec = env.client.get("/api/v1/openapi.json").get_json()
    assert spec["security"] == [{"partner": []}]
    scheme = spec["components"]["securitySchemes"]["partner"]
    assert scheme["flows"]["clientCredentials"]["tokenUrl"] == env.issuer + "/oauth/token"
    assert set(scheme["flows"]["clientCredentials"]["scopes"]) <= set(SCOPES)
    public = set()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            if operation.get("security") == []:  # needs no token: never answers 401
                public.add((method, path))
                assert "401" not in operation["responses"], (method, path)
                continue
            assert "401" in operation["responses"], (method, path)
            assert PROBLEM in operation["responses"]["401"]["content"], (method, path)
    # The one public operation: FHIR's capability statement, which says how to authenticate (R4 http.html).
    assert public == {("get", "/api/v1/fhir/metadata")}


def test_the_docs_page_lists_every_operation(env: Env) -> None:
    response = env.client.get("/api/v1/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    spec = env.client.get("/api/v1/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method in set(operations) & HTTP_METHODS:
            assert re.search(rf">{method.upper()}</span>\s*<code>{re.escape(path)}</code>", page), (method, path)
    assert "<script" not in page
    assert "script-src" not in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["/no-such-page", "/api/v1/no-such-thing", "/api/v2/persons/resolve"])
def test_an_unknown_route_is_a_404_problem(env: Env, path: str) -> None:
    assert_problem(env.client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v1/notices", {"POST"}),
        ("DELETE", "/api/v1/consents", {"GET", "POST"}),
        ("POST", "/healthz", {"GET"}),
        ("GET", "/oauth/token", {"POST"}),
    ],
)
def test_a_wrong_method_is_a_405_problem_naming_the_allowed_ones(
    env: Env, method: str, path: str, allowed: set[str]
) -> None:
    response = env.client.open(path, method=method)
    assert_problem(response, 405, "method_not_allowed")
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_every_kind_of_api_error_is_a_problem_document_with_a_code(env: Env) -> None:
    person_id = env.person()
    persons_only = env.auth_headers("kisalli", "GET", "/api/v1/inbox", scope="persons")
    cases: list[tuple[Any, int, str]] = [
        (env.client.get("/api/v1/inbox"), 401, "invalid_token"),
        (env.client.get("/api/v1/inbox", headers={"Authorization": "Bearer nope"}), 401, "invalid_token"),
        (env.client.get("/api/v1/inbox", headers=persons_only), 403, "insufficient_scope"),
        (
            env.call("kisalli", "POST", "/api/v1/persons/resolve", data="{", content_type="application/json"),
            400,
            "invalid_json",
        ),
        (env.post("kisalli", "/persons/resolve", {"hetu": "x", "extra": 1}), 400, "invalid_request"),
        (env.post("kisalli", "/persons/resolve", {"hetu": "010594G9021"}), 400, "invalid_hetu"),
        (env.get("kisalli", "/consents?person_id=per_0123456789abcdef&page=2"), 400, "invalid_request"),
        (env.post("kisalli", "/persons/per_0123456789abcdef/relationships"), 404, "unknown_person"),
        (env.post("kisalli", "/records", {"person_id": person_id, "category": "x", "content": {}}), 400, None),
        (
            env.post("kela", "/disclosures", {"person_id": person_id, "category": "work_assessment", "purpose": "x"}),
            400,
            "unknown_purpose",
        ),
        (
            env.post(
                "kela",
                "/disclosures",
                {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"},
            ),
            403,
            "no_legal_basis",
        ),
        (env.post("kisalli", "/inbox/not_0123456789abcdef/ack"), 404, "not_found"),
        (
            env.call(
                "kisalli",
                "POST",
                "/api/v1/records",
                data=b'{"content": "' + b"x" * (env.app.config["MAX_CONTENT_LENGTH"] + 1) + b'"}',
                content_type="application/json",
            ),
            413,
            "payload_too_large",
        ),
    ]
    for response, status, code in cases:
        problem = assert_problem(response, status, code)
        assert problem.get("request_id") == response.headers["X-Request-Id"]
    assert EXAMPLES["work_assessment"]["client_view"] not in str([c[0].get_data(as_text=True) for c in cases])


def test_responses_carry_a_request_id_and_are_not_cached(env: Env) -> None:
    given = env.client.get("/healthz", headers={"X-Request-Id": "trace-0123456789"})
    assert given.headers["X-Request-Id"] == "trace-0123456789"
    invented = env.client.get("/healthz", headers={"X-Request-Id": "bad id <x>"})
    assert re.fullmatch(r"[0-9a-f]{16}", invented.headers["X-Request-Id"])
    assert given.headers["Cache-Control"] == "no-store"
    assert given.headers["X-Content-Type-Options"] == "nosniff"


def test_the_authorization_server_metadata_names_this_issuer(env: Env) -> None:
    response = env.client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200 and response.content_type.startswith("application/json")
    metadata = response.get_json()
    assert metadata["issuer"] == env.issuer
    assert metadata["token_endpoint"] == f"{env.issuer}/oauth/token"
    assert metadata["jwks_uri"] == f"{env.issuer}/.well-known/jwks.json"
    assert metadata["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]


def test_the_jwks_holds_the_brokers_public_signing_keys_only(env: Env) -> None:
    response = env.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.get_json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and "d" not in k for k in keys)
    assert response.get_json() == env.broker.keys.public_jwks()
