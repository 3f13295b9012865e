"""The broker's errors. Each carries a stable snake_case `code` that the API returns in its problem documents
(RFC 9457) and an HTTP status. Messages never contain an identity code or record content."""

from __future__ import annotations

from typing import Any, ClassVar


class BrokerError(Exception):
    code: ClassVar[str] = "broker_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request failed"

    def __init__(self, detail: str, *, field: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra or {}


class InvalidRequestError(BrokerError):
    code = "invalid_request"
    status = 400
    title = "Invalid request"


class InvalidHetuError(InvalidRequestError):
    code = "invalid_hetu"
    title = "Invalid personal identity code"


class UnknownPersonError(BrokerError):
    code = "unknown_person"
    status = 404
    title = "Unknown person"


class NotFoundError(BrokerError):
    code = "not_found"
    status = 404
    title = "Not found"


class ConsentNotActiveError(BrokerError):
    code = "consent_not_active"
    status = 409
    title = "Consent is not active"


class ConflictError(BrokerError):
    code = "conflict"
    status = 409
    title = "Conflict"


class NoLegalBasisError(BrokerError):
    code = "no_legal_basis"
    status = 403
    title = "No legal basis for this disclosure"


class ForbiddenError(BrokerError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class UnknownCategoryError(InvalidRequestError):
    code = "unknown_category"


class UnknownPurposeError(InvalidRequestError):
    code = "unknown_purpose"


class UnknownOrganisationError(InvalidRequestError):
    code = "unknown_organisation"


# The Idempotency-Key header (draft-ietf-httpapi-idempotency-key-header-07 §2.7, broker/services/idempotency.py).


class InvalidIdempotencyKeyError(InvalidRequestError):
    code = "invalid_idempotency_key"
    title = "Invalid Idempotency-Key"


class IdempotencyKeyReusedError(BrokerError):
    """The key was first used with another request (method, path, body or acting professional)."""

    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency-Key already used for another request"


class IdempotencyKeyInUseError(BrokerError):
    """A request with the same key is still being processed."""

    code = "idempotency_key_in_use"
    status = 409
    title = "A request with this Idempotency-Key is in progress"


class ReplayAfterWithdrawalError(BrokerError):
    """A retried disclosure whose first answer was permitted under a consent that has since been withdrawn or has
    expired: the content is not sent again (DESIGN.md invariant 3). The disclosure itself stays in the log."""

    code = "consent_no_longer_active"
    status = 403
    title = "The consent behind this disclosure is no longer active"


class DatabaseUnavailableError(BrokerError):
    """The database cannot be used just now: unreachable, shutting down, out of resources, or slower than a
    request's time limits (broker/adapters/database.py, `unavailability`). The answer is 503 with `Retry-After`;
    the request may be sent again. A write whose commit was under way when the database went away may or may not
    have been saved — an Idempotency-Key makes the retry safe."""

    code = "database_unavailable"
    status = 503
    title = "Service unavailable"


class ConfigurationError(Exception):
    """The application refuses to start with bad configuration."""
