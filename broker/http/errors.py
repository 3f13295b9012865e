"""One error shape for the whole HTTP surface: RFC 9457 `application/problem+json` with a stable `code`.

No handler ever shows a stack trace; an unexpected error is logged with the request id and answered with a
plain 500 problem (OWASP ASVS 5.0 V16.5.1, a generic message; V16.5.4, a last-resort handler).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, json
from werkzeug.exceptions import HTTPException

from broker.domain.errors import BrokerError
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
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
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


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(BrokerError)
    def _broker_error(error: BrokerError) -> Response:
        extra = dict(error.extra)
        code = extra.pop("code", error.code)
        response = problem(error.status, code, error.title, error.detail, field=error.field, **extra)
        if error.status == 503:  # RFC 9110 §10.2.3: when to try again
            response.headers["Retry-After"] = "5"
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
                f"the request body exceeds {app.config.get('MAX_CONTENT_LENGTH')} bytes",
            )
        response = problem(status, _HTTP_CODES.get(status, "http_error"), error.name, error.description)
        for name, value in error.get_headers() if status == 405 else []:
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
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
