"""Problem documents (RFC 9457) and token-endpoint errors (RFC 6749 §5.2) as the partner client's exceptions
(broker/client/errors.py): the class follows the stable code first, then the status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from broker.client import errors as e


def problem(status: int, code: str, **extra: Any) -> bytes:
    body = {"type": "about:blank", "title": "Title", "status": status, "code": code, "detail": f"{code} detail"}
    return json.dumps(body | extra).encode()


def headers(**values: str) -> CaseInsensitiveDict[str]:
    return CaseInsensitiveDict({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "no_legal_basis", e.NoLegalBasisError),
        (403, "consent_no_longer_active", e.ConsentNoLongerActiveError),
        (403, "insufficient_scope", e.InsufficientScopeError),
        (403, "forbidden", e.ForbiddenError),
        (400, "invalid_request", e.InvalidRequestError),
        (400, "invalid_hetu", e.InvalidRequestError),
        (400, "unknown_category", e.InvalidRequestError),
        (400, "invalid_idempotency_key", e.InvalidRequestError),
        (401, "invalid_token", e.UnauthorizedError),
        (401, "invalid_dpop_proof", e.UnauthorizedError),
        (404, "unknown_person", e.NotFoundError),
        (404, "unknown_consent", e.NotFoundError),
        (409, "consent_not_active", e.ConflictError),
        (409, "no_relationship", e.ConflictError),
        (409, "idempotency_key_in_use", e.IdempotencyKeyInUseError),
        (409, "already_attested", e.ConflictError),
        (422, "idempotency_key_reused", e.IdempotencyKeyReusedError),
        (429, "too_many_requests", e.RateLimitedError),
        (500, "internal_error", e.ServerError),
        (503, "database_unavailable", e.ServerError),
        (503, "audit_unavailable", e.ServerError),
        (413, "payload_too_large", e.BrokerError),
    ],
)
def test_each_code_becomes_its_exception(status: int, code: str, cls: type[e.BrokerError]) -> None:
    error = e.error_from_response(status, problem(status, code), headers())
    assert type(error) is cls
    assert (error.status, error.code, error.title, error.detail) == (status, code, "Title", f"{code} detail")
    assert isinstance(error, e.BrokerError) and str(error) == f"{status} {code}: {code} detail"


def test_a_refused_disclosure_keeps_its_decision_and_id() -> None:
    decision = {"effect": "deny", "reasons": [{"rule": "F7", "applies": False, "code": "no_consent"}]}
    error = e.error_from_response(
        403, problem(403, "no_legal_basis", disclosure_id="dis_1", decision=decision, request_id="r-1"), headers()
    )
    assert isinstance(error, e.NoLegalBasisError)
    assert error.decision == decision and error.disclosure_id == "dis_1" and error.request_id == "r-1"
    assert error.problem["code"] == "no_legal_basis"


def test_an_invalid_request_names_its_field_and_the_messages() -> None:
    body = problem(400, "invalid_request", field="purpose", errors={"purpose": ["Missing data for required field."]})
    error = e.error_from_response(400, body, headers())
    assert isinstance(error, e.InvalidRequestError)
    assert error.field == "purpose" and error.problem["errors"] == {"purpose": ["Missing data for required field."]}


def test_a_token_endpoint_error_uses_its_oauth_code_and_description() -> None:
    body = json.dumps({"error": "invalid_client", "error_description": "The assertion's 'aud' must be …"}).encode()
    error = e.error_from_response(401, body, headers())
    assert isinstance(error, e.UnauthorizedError)
    assert (error.code, error.detail) == ("invalid_client", "The assertion's 'aud' must be …")
    scope = e.error_from_response(400, json.dumps({"error": "invalid_scope"}).encode(), headers())
    assert isinstance(scope, e.InvalidRequestError) and scope.code == "invalid_scope" and scope.detail is None


def test_an_answer_without_a_problem_document_is_named_by_its_status_or_challenge() -> None:
    gateway = e.error_from_response(502, b"<html>Bad Gateway</html>", headers(), reason="Bad Gateway")
    assert isinstance(gateway, e.ServerError)
    assert (gateway.code, gateway.title, gateway.detail, gateway.problem) == (
        "bad_gateway",
        "Bad Gateway",
        "<html>Bad Gateway</html>",
        {},
    )
    challenge = headers(WWW_Authenticate='DPoP error="invalid_token", error_description="expired", algs="Ed25519"')
    unauthorized = e.error_from_response(401, b"", challenge)
    assert isinstance(unauthorized, e.UnauthorizedError) and unauthorized.code == "invalid_token"
    teapot = e.error_from_response(418, b"", headers())
    assert type(teapot) is e.BrokerError and teapot.code == "http_error"


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    limited = e.error_from_response(429, problem(429, "too_many_requests"), headers(Retry_After="7"))
    assert isinstance(limited, e.RateLimitedError) and limited.retry_after == 7.0
    now = 1_767_225_600.0  # Thu, 01 Jan 2026 00:00:00 GMT
    assert e.retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert e.retry_after_seconds("Wed, 31 Dec 2025 23:59:00 GMT", now=now) == 0.0
    assert e.retry_after_seconds("soon", now=now) is None
    assert e.retry_after_seconds(None, now=now) is None
    assert e.retry_after_seconds("-5", now=now) is None


def test_an_invalid_event_answers_with_its_rfc_8935_error() -> None:
    error = e.InvalidEventError("invalid_audience", "the SET is addressed to 'kela', not 'kisalli'")
    assert error.status == 400
    assert error.response_body() == {"err": "invalid_audience", "description": error.detail}
