"""Resource protection: from an `Authorization: DPoP …` (or `Bearer …`) header to the `Caller` a use case acts for.

Framework-light: `authenticate_request` takes the header's value and the request's DPoP proofs, and returns a
`Caller` or raises a `ResourceAccessError` (RFC 6750 §3.1, RFC 9449 §7 semantics). The Flask decorator that
renders those errors lives in endpoints.py.

DPoP (RFC 9449 §7): a token bound to a key (`access_tokens.jkt`) is accepted only under the `DPoP` scheme, with
a proof for this request signed by that key (`ath` = the token's hash), used once. A bound token sent as `Bearer`
is refused (§7.2). When the broker requires DPoP, the `Bearer` scheme is refused altogether; otherwise a token
issued without a proof works as a bearer token, and only so.

The token is checked in the database on every request (DESIGN.md "API contract"): one query by the token
hash (the primary key) joined to the partner and its organisation, so that a revoked token, a deactivated
partner or a withdrawn scope grant takes effect at once. Nothing about a partner is cached for that reason.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from broker.adapters.database import PooledConnection, Prepared
from broker.adapters.orm import AccessTokenRow, OrganisationRow, PartnerRow
from broker.domain.clock import utc
from broker.domain.model import Caller
from broker.oauth.dpop import DPOP_SIGNING_ALGORITHMS, DpopProof, DpopRequest, verify_proof
from broker.oauth.errors import (
    DpopNonceError,
    DpopProofError,
    InsufficientScopeError,
    InvalidTokenError,
    MissingTokenError,
    ResourceDpopNonceError,
    ResourceDpopProofError,
)
from broker.oauth.tokens import PROOF_REPLAYED, TOKEN_PATTERN, consume_proof_jti, dpop_nonces, hash_token

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
        _TOKENS.c.jkt,
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


_DPOP = "dpop"
_BEARER = "bearer"


def access_token(authorization_header: str | None, *, require_dpop: bool) -> tuple[str, str]:
    """The scheme ("dpop" or "bearer") and token of an `Authorization: DPoP <token>` (RFC 9449 §7.1) or
    `Authorization: Bearer <token>` (RFC 6750 §2.1) header."""
    algs = DPOP_SIGNING_ALGORITHMS
    usage = "'Authorization: DPoP <token>' and a 'DPoP' proof (RFC 9449)"
    if not require_dpop:
        usage += ", or 'Authorization: Bearer <token>' for a token issued without DPoP"
    if not authorization_header:
        raise MissingTokenError(
            f"This resource needs an access token: {usage}.", dpop_algs=algs, bearer=not require_dpop
        )
    scheme, _, credentials = authorization_header.partition(" ")
    # The scheme name is case-insensitive (RFC 9110 §11.1). Another scheme counts as no credentials at all.
    scheme = scheme.lower()
    if scheme not in (_DPOP, _BEARER):
        raise MissingTokenError(f"This resource accepts {usage}.", dpop_algs=algs, bearer=not require_dpop)
    challenge = algs if scheme == _DPOP or require_dpop else ()
    token = credentials.strip(" ")
    if not TOKEN_PATTERN.fullmatch(token):
        raise InvalidTokenError("The access token is malformed.", dpop_algs=challenge)
    if scheme == _BEARER and require_dpop:
        raise InvalidTokenError(
            "This broker accepts only DPoP-bound access tokens: send 'Authorization: DPoP <token>' with a "
            "'DPoP' proof (RFC 9449 §7.1).",
            dpop_algs=algs,
        )
    return scheme, token


def authenticate_request(
    broker: Broker,
    authorization_header: str | None,
    required_scope: str | tuple[str, ...],
    *,
    dpop: DpopRequest | None = None,
    session: Session | None = None,
) -> Caller:
    """Authenticate a request to a protected resource and return who is calling.

    `dpop` holds the request's `DPoP` headers, method and public URL (RFC 9449 §4.3); a DPoP-bound token needs
    it. The proof is verified before the token is looked up; its `jti` is used (an INSERT in a short
    transaction of its own) only once the token, its binding and its scope have passed.

    Reads in `session` when one is given (the caller's transaction), otherwise on a connection of its own: a
    single statement that needs no ORM session or transaction (and, on SQLite, never waits for the write lock).
    Raises `MissingTokenError` / `InvalidTokenError` / `ResourceDpopProofError` (401) or
    `InsufficientScopeError` (403)."""
    caller, proof = check_request(broker, authorization_header, required_scope, dpop=dpop, session=session)
    if proof is not None:
        use_proof(broker, proof)
    return caller


def check_request(
    broker: Broker,
    authorization_header: str | None,
    required_scope: str | tuple[str, ...],
    *,
    dpop: DpopRequest | None = None,
    session: Session | None = None,
) -> tuple[Caller, DpopProof | None]:
    """`authenticate_request` without using the proof's `jti`: the caller must use it once before answering —
    in the request's first write transaction (`proof_jti_writer` with `broker.adapters.uow.first_write`), or on
    its own with `use_proof`. The request's answer must not leave the broker before that has succeeded."""
    settings = broker.settings
    scheme, token = access_token(authorization_header, require_dpop=settings.require_dpop)
    now = broker.clock.now()
    proof = _verify_proof(broker, dpop, token, now) if scheme == _DPOP else None
    if session is not None:
        caller = _caller_for(session, token, proof, required_scope, now)
    else:
        with broker.db.one_prepared() as connection:  # one Prepared statement needs no Connection around it
            caller = _caller_for(connection, token, proof, required_scope, now)
    return caller, proof


def proof_jti_writer(proof: DpopProof) -> Callable[[Session], None]:
    """The insert that uses `proof` once, for a transaction of the request's (raises `ResourceDpopProofError` on a
    replay; on PostgreSQL a concurrent insert of the same `jti` waits for the other transaction, then fails)."""

    def write(session: Session) -> None:
        try:
            consume_proof_jti(session, proof)
        except DpopProofError as error:
            raise ResourceDpopProofError(error.description, dpop_algs=DPOP_SIGNING_ALGORITHMS) from error

    return write


def proof_replayed() -> ResourceDpopProofError:
    """The refusal of a request whose proof's `jti` was used already (what `proof_jti_writer`'s insert raises)."""
    return ResourceDpopProofError(PROOF_REPLAYED, dpop_algs=DPOP_SIGNING_ALGORITHMS)


def use_proof(broker: Broker, proof: DpopProof) -> None:
    """Use `proof`'s `jti` once, in a transaction of its own (raises `ResourceDpopProofError` on a replay)."""
    with broker.uow() as uow:
        proof_jti_writer(proof)(uow.session)
        uow.commit()


def _verify_proof(broker: Broker, dpop: DpopRequest | None, token: str, now: datetime) -> DpopProof:
    settings = broker.settings
    algs = DPOP_SIGNING_ALGORITHMS
    try:
        return verify_proof(
            dpop.proofs if dpop is not None else (),
            method=dpop.method if dpop is not None else "",
            url=dpop.url if dpop is not None else "",
            now=now,
            max_age=settings.dpop_max_age,
            skew=settings.dpop_iat_skew,
            access_token=token,
            nonces=dpop_nonces(broker),
        )
    except DpopNonceError as error:
        raise ResourceDpopNonceError(error.description, nonce=error.nonce, dpop_algs=algs) from error
    except DpopProofError as error:
        raise ResourceDpopProofError(error.description, dpop_algs=algs) from error


def _caller_for(
    session: Session | Connection | PooledConnection,
    token: str,
    proof: DpopProof | None,
    required_scope: str | tuple[str, ...],
    now: datetime,
) -> Caller:
    found = _TOKEN_QUERY.first(session, {"token_hash": hash_token(token)})
    # The challenge names DPoP for a request made with a proof or a token bound to a key.
    algs = DPOP_SIGNING_ALGORITHMS if proof is not None or (found is not None and found.jkt) else ()
    if found is None:
        raise InvalidTokenError("The access token is unknown.", dpop_algs=algs)
    if found.revoked_at is not None:
        raise InvalidTokenError("The access token has been revoked.", dpop_algs=algs)
    if utc(found.expires_at) <= now:
        raise InvalidTokenError("The access token has expired.", dpop_algs=algs)
    if not found.active:
        raise InvalidTokenError("The client of this access token is no longer active.", dpop_algs=algs)
    if proof is None and found.jkt is not None:
        # RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is refused.
        raise InvalidTokenError(
            "This access token is bound to a DPoP key: send it as 'Authorization: DPoP <token>' with a 'DPoP' proof.",
            dpop_algs=algs,
        )
    if proof is not None:
        if found.jkt is None:
            raise InvalidTokenError(
                "This access token was issued without DPoP: it is not bound to a key and works only as a Bearer token.",
                dpop_algs=algs,
            )
        if not hmac.compare_digest(found.jkt, proof.jkt):
            raise ResourceDpopProofError(
                "The DPoP proof is signed with another key than the one this access token is bound to.",
                dpop_algs=algs,
            )
    # The token's scopes, less any the partner has lost since the token was issued.
    scopes = frozenset(found.scope.split(" ")) & frozenset(found.scopes)
    # A tuple names alternatives: a resource that partners and DPO systems both read, each seeing its own part.
    wanted = (required_scope,) if isinstance(required_scope, str) else required_scope
    if scopes.isdisjoint(wanted):
        raise InsufficientScopeError(
            f"This resource needs scope {' or '.join(repr(s) for s in wanted)}; the access token does not carry it.",
            scope=" ".join(wanted),
            dpop_algs=algs,
        )
    return Caller(
        partner_id=found.client_id,
        organisation_id=found.organisation_id,
        org_type=found.org_type,
        actor_id=found.actor_id,
        actor_role=found.actor_role,
        scopes=scopes,
    )
