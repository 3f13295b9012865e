"""The `Idempotency-Key` request header on the partner API's writes (draft-ietf-httpapi-idempotency-key-header-07).

`idempotent_for(blp)` gives the decorator; it goes between `require_scope` (it needs the caller) and flask-smorest's
`arguments` / `response` decorators (what it stores is the final response). A request without the header runs
exactly as before: one environ look-up, nothing else. With the header:

- the key is parsed (§2.1: an sf-string, RFC 9651 §3.3.3) — a malformed one is 400 `invalid_idempotency_key`;
- broker/services/idempotency.py looks it up for this partner and either answers the stored response, marked
  `Idempotency-Replayed: true`, or runs the view inside its transaction and stores the response with the write;
- a refusal the use case raises (a `BrokerError` below 500) is rendered by the application's own error handler,
  stored and committed like a success; a 5xx or any other exception stores nothing and rolls everything back;
- a body that fails the schema (flask-smorest's 400) never reached a use case: nothing is stored, the key stays
  unused, and the corrected request may use it.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, current_app, g, request
from flask_smorest import Blueprint

from broker.domain.errors import BrokerError, InvalidIdempotencyKeyError
from broker.domain.model import Caller
from broker.http.api import current_broker
from broker.services import idempotency
from schemas.api import ProblemSchema

log = logging.getLogger("broker.http")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotency-Replayed"
MAX_KEY_LENGTH = 255  # the column's width; a UUID (the draft's §2.2 recommendation) is 36
_ENVIRON = "HTTP_IDEMPOTENCY_KEY"

# RFC 9651 §3.3.3 sf-string, and the bare items and parameters of §3.1.2 and §3.3 that may follow it. The draft
# defines no parameters; RFC 9651 §2.2 asks fields not to make an unknown parameter an error, so they are parsed
# and ignored.
_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"'
_BARE_ITEM = (
    r"(?:-?\d{1,12}\.\d{1,3}|-?\d{1,15}"  # decimal, integer
    rf"|{_STRING}"
    r"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*"  # token
    r"|:[A-Za-z0-9+/=]*:"  # byte sequence
    r"|\?[01]"  # boolean
    r"|@-?\d{1,15}"  # date (RFC 9651 §3.3.7)
    r'|%"(?:[\x20\x21\x23\x24\x26-\x5b\x5d-\x7e]|%[0-9a-f]{2})*")'  # display string (RFC 9651 §3.3.8)
)
_QUOTED = re.compile(rf"({_STRING})(?:;\x20*[a-z*][a-z0-9_\-.*]*(?:={_BARE_ITEM})?)*")
_ESCAPE = re.compile(r'\\(["\\])')
# Leniency (docs/api.md): many clients send a UUID unquoted. A value of visible ASCII without `"`, `\`, `,` and
# `;` — which a quoted key or a list of keys would show — is taken as the key itself, the same key as its quoted
# form. Anything else is refused.
_UNQUOTED = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")

View = TypeVar("View", bound=Callable[..., Any])


def parse_idempotency_key(value: str) -> str:
    """The key named by an `Idempotency-Key` field value; InvalidIdempotencyKeyError (400) if there is none. The
    message never repeats the value."""
    value = value.strip(" \t")  # RFC 9651 §4.2: surrounding spaces are not part of the item
    if len(value) > 4 * MAX_KEY_LENGTH:  # before any matching: bounded work on hostile input
        raise _invalid(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters")
    quoted = _QUOTED.fullmatch(value)
    if quoted is not None:
        key = _ESCAPE.sub(r"\1", quoted.group(1)[1:-1])
    elif _UNQUOTED.fullmatch(value):
        key = value
    else:
        raise _invalid(
            'Idempotency-Key must be one quoted string such as "8e03978e-40d5-43e8-bc93-6894a57f9324" '
            "(an RFC 9651 sf-string; draft-ietf-httpapi-idempotency-key-header §2.1), and a request carries one"
        )
    if not key:
        raise _invalid("Idempotency-Key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise _invalid(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters")
    return key


def _invalid(detail: str) -> InvalidIdempotencyKeyError:
    return InvalidIdempotencyKeyError(detail, field=HEADER)


_PARAMETER_DOC = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe (draft-ietf-httpapi-idempotency-key-header): a unique key per operation, e.g. a UUID, "
        "as a quoted string. A retry with the same key and the same request gets the first response back, marked "
        f"`{REPLAYED}: true`, and changes nothing; the same key with another request is 422, and while the first "
        "request is still running, 409. Keys are per partner and kept for 24 hours by default."
    ),
    "schema": {"type": "string", "format": "sf-string", "maxLength": 2 + 2 * MAX_KEY_LENGTH},
    "example": '"8e03978e-40d5-43e8-bc93-6894a57f9324"',
}


def idempotent_for(blp: Blueprint) -> Callable[[View], View]:
    """The decorator for `blp`'s write operations; see the module's docstring. It documents the header and the
    409 and 422 answers in the OpenAPI document through `blp`'s own decorators, but adds no call of theirs to the
    request path."""

    def decorate(view: View) -> View:
        documented = blp.doc(parameters=[_PARAMETER_DOC])(view)
        documented = blp.alt_response(
            409,
            schema=ProblemSchema,
            description="a request with this Idempotency-Key is still being processed",
            content_type="application/problem+json",
        )(documented)
        documented = blp.alt_response(
            422,
            schema=ProblemSchema,
            description="this Idempotency-Key was first used with another request",
            content_type="application/problem+json",
        )(documented)
        if any(p.get("in") not in ("json", "path") for p in _arguments(view)):
            # blp.doc's `parameters` would replace the operation's own (flask-smorest merges lists by replacing).
            raise ValueError(f"{view.__qualname__}: @idempotent documents only operations without query arguments")

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            raw = request.environ.get(_ENVIRON)
            if raw is None:
                return view(*args, **kwargs)
            return _idempotent_call(view, raw, args, kwargs)

        wrapper._apidoc = documented._apidoc  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _arguments(view: Any) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = getattr(view, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    return parameters


def _idempotent_call(view: Callable[..., Any], raw: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Response:
    key = parse_idempotency_key(raw)
    broker = current_broker()
    caller: Caller = g.caller
    fingerprint = idempotency.request_fingerprint(
        broker, caller, request.method, request.path, request.query_string, request.get_data(cache=True)
    )
    with idempotency.idempotent_write(broker, caller.partner_id, key, fingerprint) as attempt:
        stored = attempt.replay
        if stored is not None:
            log.info("idempotent request replayed", extra={"partner": caller.partner_id, "status": stored.status})
            replayed = current_app.response_class(stored.body, status=stored.status, headers=list(stored.headers))
            replayed.headers[REPLAYED] = "true"
            return replayed
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BrokerError as error:
            if error.status >= 500:
                raise
            # The application's own handler renders it, so what is stored is what would have been sent.
            response = current_app.make_response(current_app.handle_user_exception(error))
        if response.status_code >= 500:
            return response  # leaving the block without storing rolls the write back with the key
        headers = tuple((name, value) for name, value in response.headers if name.lower() != "content-length")
        attempt.store(idempotency.StoredResponse(response.status_code, headers, response.get_data()))
        return response
