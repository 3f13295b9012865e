"""Resource protection: from an `Authorization: Bearer …` header to the `Caller` a use case acts for.

Framework-light: `authenticate_request` takes the header's value and returns a `Caller` or raises a
`ResourceAccessError` (RFC 6750 §3.1 semantics). The Flask decorator that renders those errors lives in
endpoints.py.

The token is checked in the database on every request (DESIGN.md "API contract"): one query by the token
hash (the primary key) joined to the partner and its organisation, so that a revoked token, a deactivated
partner or a withdrawn scope grant takes effect at once. Nothing about a partner is cached for that reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from broker.adapters.database import Prepared
from broker.adapters.orm import AccessTokenRow, OrganisationRow, PartnerRow
from broker.domain.clock import utc
from broker.domain.model import Caller
from broker.oauth.errors import InsufficientScopeError, InvalidTokenError, MissingTokenError
from broker.oauth.tokens import TOKEN_PATTERN, hash_token

_TOKENS = AccessTokenRow.__table__
_PARTNERS = PartnerRow.__table__
_ORGANISATIONS = OrganisationRow.__table__
# One indexed query (the token hash is the primary key), prebuilt as a Core statement: built and compiled once,
# no ORM objects per request.
_TOKEN_QUERY = Prepared(
    select(
        _TOKENS.c.client_id,
        _TOKENS.c.scope,
        _TOKENS.c.actor_id,
        _TOKENS.c.actor_role,
        _TOKENS.c.expires_at,
        _TOKENS.c.revoked_at,
        _PARTNERS.c.organisation_id,
        _PARTNERS.c.active,
        _PARTNERS.c.scopes,
        _ORGANISATIONS.c.org_type,
    )
    .join(_PARTNERS, _PARTNERS.c.client_id == _TOKENS.c.client_id)
    .join(_ORGANISATIONS, _ORGANISATIONS.c.id == _PARTNERS.c.organisation_id)
    .where(_TOKENS.c.token_hash == bindparam("token_hash"))
)

if TYPE_CHECKING:
    from datetime import datetime

    from broker.services import Broker


def bearer_token(authorization_header: str | None) -> str:
    """The token of an RFC 6750 §2.1 `Authorization: Bearer <token>` header."""
    if not authorization_header:
        raise MissingTokenError("This resource needs an access token: 'Authorization: Bearer <token>'.")
    scheme, _, credentials = authorization_header.partition(" ")
    # The scheme name is case-insensitive (RFC 9110 §11.1). Another scheme counts as no credentials at all.
    if scheme.lower() != "bearer":
        raise MissingTokenError("This resource accepts only Bearer access tokens (RFC 6750).")
    token = credentials.strip(" ")
    if not TOKEN_PATTERN.fullmatch(token):
        raise InvalidTokenError("The access token is malformed.")
    return token


def authenticate_request(
    broker: Broker,
    authorization_header: str | None,
    required_scope: str,
    *,
    session: Session | None = None,
) -> Caller:
    """Authenticate a request to a protected resource and return who is calling.

    Reads in `session` when one is given (the caller's transaction), otherwise on a connection of its own: a
    single read that needs no ORM session (and, on SQLite, never waits for the write lock).
    Raises `MissingTokenError` / `InvalidTokenError` (401) or `InsufficientScopeError` (403)."""
    token = bearer_token(authorization_header)
    now = broker.clock.now()
    if session is not None:
        return _caller_for(session, token, required_scope, now)
    with broker.db.engine.connect() as connection:
        return _caller_for(connection, token, required_scope, now)


def _caller_for(session: Session | Connection, token: str, required_scope: str, now: datetime) -> Caller:
    found = _TOKEN_QUERY.first(session, {"token_hash": hash_token(token)})
    if found is None:
        raise InvalidTokenError("The access token is unknown.")
    if found.revoked_at is not None:
        raise InvalidTokenError("The access token has been revoked.")
    if utc(found.expires_at) <= now:
        raise InvalidTokenError("The access token has expired.")
    if not found.active:
        raise InvalidTokenError("The client of this access token is no longer active.")
    # The token's scopes, less any the partner has lost since the token was issued.
    scopes = frozenset(found.scope.split(" ")) & frozenset(found.scopes)
    if required_scope not in scopes:
        raise InsufficientScopeError(
            f"This resource needs scope {required_scope!r}; the access token does not carry it.",
            scope=required_scope,
        )
    return Caller(
        partner_id=found.client_id,
        organisation_id=found.organisation_id,
        org_type=found.org_type,
        actor_id=found.actor_id,
        actor_role=found.actor_role,
        scopes=scopes,
    )
