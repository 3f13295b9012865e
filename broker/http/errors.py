"""One error shape for the whole HTTP surface: RFC 9457 `application/problem+json` with a stable `code`.

No handler ever shows a stack trace; an unexpected error is logged with the request id and answered with a
plain 500 problem (OWASP ASVS 5.0 V16.5.1, a generic message; V16.5.4, a last-resort handler).

A database that cannot be used just now is not unexpected: wherever its error is raised, `BrokerFlask` answers it
503 `database_unavailable` with `Retry-After` — a problem document, or on the portal's and the DPO workspace's
pages a translated page (docs/security.md, "Database unavailable").
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, json, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from broker.adapters.database import transaction_conflict, unavailability
from broker.domain.errors import BrokerError, DatabaseUnavailableError
from broker.logs import stack

log = logging.getLogger("broker.http")

PROBLEM = "application/problem+json"

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    431: "header_fields_too_large",
    500: "internal_error",
    503: "unavailable",
}


def problem(status: int, code: str, title: str, detail: str | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    return response


def _validation_messages(error: HTTPException) -> dict[str, Any] | None:
    """webargs (used by flask-smorest) puts marshmallow's messages in `error.data['messages']`, keyed by the
    request location ('json', 'query', …)."""
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if not messages:
        return None
    merged: dict[str, Any] = {}
    for location_messages in messages.values():
        if isinstance(location_messages, dict):
            merged.update(location_messages)
        else:
            merged.setdefault("_schema", []).extend(location_messages)
    return merged


def _first_field(messages: dict[str, Any]) -> tuple[str, str]:
    name = sorted(messages)[0]
    value = messages[name]
    while isinstance(value, dict):
        inner = sorted(value, key=str)[0]
        name = f"{name}.{inner}"
        value = value[inner]
    text = value[0] if isinstance(value, list) and value else str(value)
    return name, str(text)


# RFC 9110 §10.2.3: when to try again. Five seconds: a database restart or a failover takes about that long, and
# clients that all retry at once are spread out by their own jitter, not by this.
RETRY_AFTER = "5"
DATABASE_UNAVAILABLE_DETAIL = "the broker cannot use its database just now; send the request again later"
# The pages of these surfaces answer an unusable database with a page for a person, not a problem document.
_PAGE_PREFIXES = ("/portal", "/dpo")


class BrokerFlask(Flask):
    """Flask, with one difference: an error that means the database cannot be used just now
    (broker/adapters/database.py, `unavailability`) is raised again as DatabaseUnavailableError, so that every
    surface answers it with its own 503 handler — wherever it was raised. Views and before-request hooks reach
    `handle_user_exception`; the portal's session store, which Flask opens before the URL is matched and saves
    after the after-request hooks, reaches `handle_exception`, which would otherwise answer the last-resort 500."""

    def handle_user_exception(self, e: Exception) -> Any:
        return super().handle_user_exception(as_database_unavailable(e))

    def handle_exception(self, e: Exception) -> Response:
        unavailable = as_database_unavailable(e)
        if not isinstance(unavailable, DatabaseUnavailableError):
            return super().handle_exception(e)
        return self.finalize_request(super().handle_user_exception(unavailable), from_error_handler=True)


def as_database_unavailable(error: Exception) -> Exception:
    """`error` as DatabaseUnavailableError (raised from it) if it means the database cannot be used just now, else
    `error` itself. An answer chosen on purpose — a BrokerError or an HTTP error — is left alone even when it was
    raised while a database error was being handled."""
    if isinstance(error, BrokerError | HTTPException) or unavailability(error) is None:
        return error
    unavailable = DatabaseUnavailableError(DATABASE_UNAVAILABLE_DETAIL)
    unavailable.__cause__ = error
    return unavailable


def database_unavailable_response(error: DatabaseUnavailableError) -> Response:
    """503 with Retry-After: a problem document, or a page on the portal's and the DPO workspace's paths. Logged at
    WARNING with the reason (`postgres_57P01`, `sqlite_CANTOPEN`, `connection_failed`, …), never the message."""
    log.warning(
        "database unavailable",
        extra={
            "request_id": g.get("request_id"),
            "reason": unavailability(error) or "unavailable",
            "endpoint": request.endpoint,
        },
    )
    path = request.path
    if "portal" in current_app.extensions and any(path == p or path.startswith(p + "/") for p in _PAGE_PREFIXES):
        response = _unavailable_page()
    else:
        response = problem(503, error.code, error.title, error.detail or DATABASE_UNAVAILABLE_DETAIL)
    response.headers["Retry-After"] = RETRY_AFTER
    return response


def _unavailable_page() -> Response:
    """A page that needs nothing the database holds: no session, no login, no form (a form would need a CSRF token,
    which lives in the session). Its language is the person's (cookie or Accept-Language)."""
    from broker.http.portal.i18n import current_language

    language = current_language()
    # "Try again" opens the same page again; after a form (a POST) the front page of the surface it came from.
    if request.method == "GET":
        retry = request.full_path.rstrip("?")
    else:
        retry = url_for("dpo.index" if request.path.startswith("/dpo") else "portal.overview")
    page = render_template("portal/unavailable.html", lang=language, retry=retry)
    response = Response(page, status=503, mimetype="text/html")
    # The portal's policy (broker/http/portal/security.py) without forms: the page's own stylesheet, nothing else.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    response.headers["Content-Language"] = language
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(DatabaseUnavailableError, database_unavailable_response)

    @app.errorhandler(BrokerError)
    def _broker_error(error: BrokerError) -> Response:
        extra = dict(error.extra)
        code = extra.pop("code", error.code)
        response = problem(error.status, code, error.title, error.detail, field=error.field, **extra)
        if error.status == 503:  # RFC 9110 §10.2.3: when to try again
            response.headers["Retry-After"] = RETRY_AFTER
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        messages = _validation_messages(error)
        if messages is not None:
            schema_messages = messages.get("_schema")
            if isinstance(schema_messages, list) and any("Invalid JSON" in str(m) for m in schema_messages):
                return problem(400, "invalid_json", "Malformed JSON", "the request body is not valid JSON")
            name, text = _first_field(messages)
            detail = text if name == "_schema" else f"{name}: {text}"
            return problem(400, "invalid_request", "Invalid request", detail, field=name, errors=messages)
        if status == 413:
            return problem(
                413,
                "payload_too_large",
                "Payload too large",
                # The request's own cap: less than MAX_CONTENT_LENGTH on some endpoints (broker/http/limits.py).
                f"the request body exceeds {request.max_content_length} bytes",
            )
        response = problem(status, _HTTP_CODES.get(status, "http_error"), error.name, error.description)
        for name, value in error.get_headers() if status == 405 else []:
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        conflict = transaction_conflict(error)
        if conflict is not None:
            # A serialization failure or deadlock (SQLSTATE class 40) rolled the whole transaction back: nothing was
            # written, and the same request sent again will most likely go through. 503 with Retry-After (RFC 9110
            # §15.6.4, §10.2.3) rather than 500, so that clients retry it.
            log.warning(
                "transaction conflict",
                extra={"request_id": getattr(g, "request_id", None), "reason": conflict, "endpoint": request.endpoint},
            )
            response = problem(
                503,
                "transaction_conflict",
                "Service unavailable",
                "the request conflicted with a concurrent one and was rolled back; send it again",
            )
            response.headers["Retry-After"] = "1"
            return response
        # Logged by type and stack frames, without `exc_info`: the exception's message may echo an input (an
        # identity code, record content), and every handler — not only broker/logs.py's — would print it.
        log.error(
            "unhandled error",
            extra={
                "request_id": getattr(g, "request_id", None),
                "error": type(error).__qualname__,
                "stack": stack(error.__traceback__),
            },
        )
        # Nothing of the exception reaches the client: a fixed title and detail, and the request id to quote.
        return problem(500, "internal_error", "Internal error", "the broker could not complete the request")
