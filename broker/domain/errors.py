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


class ConfigurationError(Exception):
    """The application refuses to start with bad configuration."""
