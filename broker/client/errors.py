"""What the broker refused, as exceptions a partner's code can catch by kind.

The broker answers every API error with an RFC 9457 problem document carrying a stable `code` (docs/api.md,
"Errors"), and its token endpoint with the RFC 6749 §5.2 `{"error", "error_description"}` object. Both become a
`BrokerError` whose class is chosen by the code first (`no_legal_basis` → `NoLegalBasisError`), then by the HTTP
status (any other 404 → `NotFoundError`), so that a code the broker adds later still lands in the right family.
The problem document itself stays in `problem`, extension members included (a refused disclosure's `decision`).
"""

from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

__all__ = [
    "BrokerError",
    "ConflictError",
    "ConnectionFailedError",
    "ConsentNoLongerActiveError",
    "ForbiddenError",
    "IdempotencyKeyInUseError",
    "IdempotencyKeyReusedError",
    "InsufficientScopeError",
    "InvalidEventError",
    "InvalidRequestError",
    "NoLegalBasisError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitedError",
    "ServerError",
    "UnauthorizedError",
    "error_from_response",
    "retry_after_seconds",
]

# The status's code when an answer carries no problem document (a proxy's HTML 502, say): the broker's own
# fallbacks (broker/http/errors.py), so that one code names one condition whoever answered.
_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    431: "header_fields_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}
#: How much of a body that is not a problem document is kept as the error's detail.
_SNIPPET = 300
# RFC 6750 §3 / RFC 9449 §7.1: the `error` attribute of a `WWW-Authenticate` challenge.
_CHALLENGE_ERROR = re.compile(r'\berror="([^"]*)"')


class BrokerError(Exception):
    """The broker refused a request, or could not be reached. `status` is the HTTP status (None when no answer
    came), `code` the problem's stable code, `problem` the whole problem document (an empty dict when there was
    none)."""

    default_code: ClassVar[str] = "broker_error"

    def __init__(
        self,
        status: int | None,
        code: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        problem: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code or self.default_code
        self.title = title or self.code
        self.detail = detail
        self.problem: dict[str, Any] = problem or {}
        #: Seconds the broker asked the client to wait (`Retry-After`, RFC 9110 §10.2.3), when it said.
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.detail or self.title}"

    @property
    def field(self) -> str | None:
        """The request field the broker named as wrong (`Idempotency-Key` for a header), if it named one."""
        field = self.problem.get("field")
        return field if isinstance(field, str) else None

    @property
    def request_id(self) -> str | None:
        """The broker's id for the request: quote it when reporting a problem."""
        request_id = self.problem.get("request_id")
        return request_id if isinstance(request_id, str) else None


class ConnectionFailedError(BrokerError):
    """No answer: the connection failed or timed out, on every attempt the retry policy allowed."""

    default_code = "connection_failed"


class ProtocolError(BrokerError):
    """The broker answered something this client cannot use: metadata for another issuer, a token that is not
    DPoP-bound, a success that is not JSON."""

    default_code = "protocol_error"


class InvalidRequestError(BrokerError):
    """400: bad input; `field` names what was wrong, `problem["errors"]` holds the messages per field."""

    default_code = "invalid_request"


class UnauthorizedError(BrokerError):
    """401: no valid access token or DPoP proof, or (at the token endpoint) client authentication failed."""

    default_code = "unauthorized"


class ForbiddenError(BrokerError):
    default_code = "forbidden"


class NoLegalBasisError(ForbiddenError):
    """403 `no_legal_basis`: no statute or consent permits it. The refusal is in the audit log too."""

    default_code = "no_legal_basis"

    @property
    def decision(self) -> dict[str, Any] | None:
        """The policy's decision with its reasons (which rule applied, which condition failed)."""
        decision = self.problem.get("decision")
        return decision if isinstance(decision, dict) else None

    @property
    def disclosure_id(self) -> str | None:
        """The refused disclosure's id in the audit log (disclosures only)."""
        disclosure_id = self.problem.get("disclosure_id")
        return disclosure_id if isinstance(disclosure_id, str) else None


class ConsentNoLongerActiveError(ForbiddenError):
    """403 `consent_no_longer_active`: a retried disclosure whose consent has since been withdrawn or expired."""

    default_code = "consent_no_longer_active"


class InsufficientScopeError(ForbiddenError):
    default_code = "insufficient_scope"


class NotFoundError(BrokerError):
    """404: not there, or not visible to the calling organisation (`unknown_person`, `unknown_consent`, …)."""

    default_code = "not_found"


class ConflictError(BrokerError):
    """409: the object's state does not allow it (`consent_not_active`, `no_relationship`, …)."""

    default_code = "conflict"


class IdempotencyKeyInUseError(ConflictError):
    """409: a request with this Idempotency-Key is still being processed; the client retries it."""

    default_code = "idempotency_key_in_use"


class IdempotencyKeyReusedError(BrokerError):
    """422: the Idempotency-Key was first used with another request (a client bug: each call has its own)."""

    default_code = "idempotency_key_reused"


class RateLimitedError(BrokerError):
    """429: over a rate limit; `retry_after` says when to try again."""

    default_code = "too_many_requests"


class ServerError(BrokerError):
    """5xx: the broker (or a proxy in front of it) could not answer; nothing was done."""

    default_code = "internal_error"


class InvalidEventError(BrokerError):
    """A pushed Security Event Token that must not be trusted. `code` is one of RFC 8935 §2.4's error codes
    (`invalid_request`, `invalid_key`, `invalid_issuer`, `invalid_audience`, `authentication_failed`) and `status`
    400: what the receiving endpoint answers the broker (`error.response_body()`, RFC 8935 §2.3)."""

    default_code = "invalid_request"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(400, code, "Invalid security event token", detail)

    def response_body(self) -> dict[str, str]:
        """The JSON body of the receiver's 400 answer (RFC 8935 §2.3)."""
        return {"err": self.code, "description": self.detail or self.title}


_BY_CODE: dict[str, type[BrokerError]] = {
    cls.default_code: cls
    for cls in (
        NoLegalBasisError,
        ConsentNoLongerActiveError,
        InsufficientScopeError,
        IdempotencyKeyInUseError,
        IdempotencyKeyReusedError,
        RateLimitedError,
    )
}
_BY_STATUS: dict[int, type[BrokerError]] = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
    429: RateLimitedError,
}


def error_from_response(
    status: int, body: bytes, headers: Any, *, now: float | None = None, reason: str | None = None
) -> BrokerError:
    """The exception for an error answer: its status, body and headers (a case-insensitive mapping)."""
    document = _json_object(body)
    retry_after = retry_after_seconds(headers.get("Retry-After"), now=now)
    if document is not None and isinstance(document.get("code"), str):  # RFC 9457, with the broker's `code`
        code = document["code"]
        title = _text(document.get("title"))
        detail = _text(document.get("detail"))
    elif document is not None and isinstance(document.get("error"), str):  # RFC 6749 §5.2, the token endpoint
        code = document["error"]
        title = code
        detail = _text(document.get("error_description"))
    else:
        challenge = _CHALLENGE_ERROR.search(headers.get("WWW-Authenticate") or "")
        code = challenge.group(1) if challenge else _STATUS_CODES.get(status, "http_error")
        title = reason or code
        text = body[:_SNIPPET].decode("utf-8", "replace").strip()
        detail = text or None
        document = None
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else BrokerError)
    return cls(status, code, title, detail, document, retry_after=retry_after)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` (RFC 9110 §10.2.3) in seconds from now: delay-seconds, or an HTTP-date compared with `now`
    (Unix seconds). None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    if now is None:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # RFC 9110 §5.6.7: an HTTP-date is in GMT
        return None
    return max(0.0, moment.timestamp() - now)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
