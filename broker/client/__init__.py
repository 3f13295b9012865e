"""The partner client: what a partner system's developer needs to call the broker and receive its events.

    from broker.client import BrokerClient, NoLegalBasisError

    client = BrokerClient("https://broker.example", "kisalli", "kisalli.jwk", acting=("staff-17", "individual_coach"))
    try:
        disclosure = client.disclose(person_id, "work_assessment", "work_capacity_assessment")
    except NoLegalBasisError as refusal:
        print(refusal.decision)

Self-contained: it needs `requests` and `joserfc` (with `cryptography`), never Flask, SQLAlchemy or the broker's
server code, so that a partner can install and import it alone. docs/api.md shows it in use.

- `client.py` — `BrokerClient`: tokens (`private_key_jwt`, DPoP-bound), retries with `Idempotency-Key`, the API;
- `auth.py` — client assertions and DPoP proofs (RFC 7523, RFC 9449);
- `errors.py` — problem documents (RFC 9457) as exceptions;
- `events.py` — verifying pushed Security Event Tokens (RFC 8417, RFC 8935);
- `cli.py` — `broker client …`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.client.auth import SigningKey, load_signing_key
    from broker.client.client import AccessToken, ApiResponse, BrokerClient, RetryPolicy
    from broker.client.errors import (
        BrokerError,
        ConflictError,
        ConnectionFailedError,
        ConsentNoLongerActiveError,
        ForbiddenError,
        IdempotencyKeyInUseError,
        IdempotencyKeyReusedError,
        InsufficientScopeError,
        InvalidEventError,
        InvalidRequestError,
        NoLegalBasisError,
        NotFoundError,
        ProtocolError,
        RateLimitedError,
        ServerError,
        UnauthorizedError,
    )
    from broker.client.events import Event, EventDeduplicator, EventVerifier, verify_security_event

# The names below are loaded on first use (PEP 562): the `broker` command registers `broker client …` from
# broker/client/cli.py on every start, and importing requests and joserfc there would double that start's time.
_MODULES = {
    "SigningKey": "auth",
    "load_signing_key": "auth",
    "AccessToken": "client",
    "ApiResponse": "client",
    "BrokerClient": "client",
    "RetryPolicy": "client",
    "Event": "events",
    "EventDeduplicator": "events",
    "EventVerifier": "events",
    "verify_security_event": "events",
}

__all__ = [
    "AccessToken",
    "ApiResponse",
    "BrokerClient",
    "BrokerError",
    "ConflictError",
    "ConnectionFailedError",
    "ConsentNoLongerActiveError",
    "Event",
    "EventDeduplicator",
    "EventVerifier",
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
    "RetryPolicy",
    "ServerError",
    "SigningKey",
    "UnauthorizedError",
    "load_signing_key",
    "verify_security_event",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name) or ("errors" if name in __all__ else None)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
