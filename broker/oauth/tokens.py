"""Issuing and revoking access tokens: the use cases behind `/oauth/token` and `/oauth/revoke`.

Each request is one unit of work: the partner is read, the assertion's `jti` consumed, the token stored and
the `on_token_issued` hook run in the same transaction, committed once at the end. Nothing here commits
half-way (Authlib's SQLAlchemy helpers would), and nothing here knows about Flask.

Access tokens are opaque reference tokens (revocable, unlike RFC 9068 JWTs): `cbat_` + 256 random bits. Only
their SHA-256 is stored; the token itself exists in the response and nowhere else.

A token request with a valid DPoP proof (RFC 9449 §5) gets a token bound to the proof's key: its RFC 7638
thumbprint is stored in `access_tokens.jkt` (the `cnf.jkt` of §6.1, kept on the server because the token is
opaque) and the token type is `DPoP`. When the broker requires DPoP (`Settings.require_dpop`, the default), a
token request without a proof is refused. Each proof's `jti` is used once, by an atomic insert.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from broker.adapters.database import Prepared
from broker.adapters.orm import AccessTokenRow, AssertionJtiRow, DpopProofJtiRow, OrganisationRow, PartnerRow
from broker.adapters.uow import UnitOfWork
from broker.domain.model import DPO_ROLE, DPO_SCOPES, SCOPES, Caller
from broker.oauth.assertion import ASSERTION_TYPE, VerifiedAssertion, read_assertion, verify_assertion
from broker.oauth.dpop import DpopNonces, DpopProof, DpopRequest, verify_proof
from broker.oauth.errors import (
    DpopNonceError,
    DpopProofError,
    InvalidClientError,
    InvalidDpopProofError,
    InvalidRequestError,
    InvalidScopeError,
    UnsupportedGrantTypeError,
    UseDpopNonceError,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from broker.services import Broker

GRANT_TYPE = "client_credentials"
TOKEN_PREFIX = "cbat_"  # noqa: S105  # nosec B105  # the recognisable prefix, not a secret
TOKEN_TYPE = "Bearer"  # noqa: S105  # nosec B105  # the token type (RFC 6750 §4), not a secret
DPOP_TOKEN_TYPE = "DPoP"  # noqa: S105  # nosec B105  # the token type of a DPoP-bound token (RFC 9449 §5)
# `secrets.token_urlsafe(32)` gives 43 characters of the URL-safe alphabet.
TOKEN_PATTERN = re.compile(r"cbat_[A-Za-z0-9_-]{43}")
#: Hex characters of the token hash handed to the audit hook: enough to correlate, never the whole hash.
HASH_PREFIX_LENGTH = 16

#: `on_token_issued(uow, caller, token_hash_prefix)`: runs inside the token transaction, before the commit.
#: If it raises, no token is issued.
TokenIssuedHook = Callable[[UnitOfWork, Caller, str], None]


def no_op_hook(_uow: UnitOfWork, _caller: Caller, _token_hash_prefix: str) -> None:
    return None


@dataclass(frozen=True)
class ClientCredentials:
    """The client-authentication parameters of a token or revocation request (RFC 7521 §4.2)."""

    client_assertion_type: str | None
    client_assertion: str | None
    client_id: str | None = None


@dataclass(frozen=True)
class AuthenticatedClient:
    partner_id: str
    organisation_id: str
    org_type: str
    granted_scopes: frozenset[str]
    assertion: VerifiedAssertion


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    token_type: str = TOKEN_TYPE

    def response(self) -> dict[str, Any]:
        """The successful token response, RFC 6749 §5.1. No refresh token: partners authenticate again."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def authenticate_client(
    uow: UnitOfWork, broker: Broker, credentials: ClientCredentials, now: datetime
) -> AuthenticatedClient:
    """`private_key_jwt` client authentication (RFC 7523 §2.2), the only method the broker accepts.

    Reads the partner and its organisation, verifies the assertion, checks the acting professional's role
    against the policy and consumes the assertion's `jti` — all in the caller's unit of work."""
    if credentials.client_assertion_type is None and credentials.client_assertion is None:
        raise InvalidClientError(
            "Client authentication is required: send client_assertion_type and client_assertion "
            "(private_key_jwt, RFC 7523 §2.2)."
        )
    if credentials.client_assertion_type != ASSERTION_TYPE:
        raise InvalidClientError(f"client_assertion_type must be {ASSERTION_TYPE!r}.")
    if not credentials.client_assertion:
        raise InvalidClientError("client_assertion is missing.")
    unverified = read_assertion(credentials.client_assertion)
    client_id = unverified.client_id
    if credentials.client_id is not None and credentials.client_id != client_id:
        raise InvalidClientError("client_id does not match the assertion's 'sub'.")

    found = uow.session.execute(
        select(PartnerRow, OrganisationRow.org_type)
        .join(OrganisationRow, OrganisationRow.id == PartnerRow.organisation_id)
        .where(PartnerRow.client_id == client_id)
    ).one_or_none()
    if found is None or not found[0].active:
        raise InvalidClientError("Unknown or inactive client.")
    partner, org_type = found

    settings = broker.settings
    verified = verify_assertion(
        unverified,
        client_id=partner.client_id,
        registered_alg=partner.alg,
        jwks=partner.jwks,
        issuer=settings.issuer,
        now=now,
        max_lifetime=settings.assertion_max_lifetime,
        skew=settings.assertion_iat_skew,
    )
    roles = {DPO_ROLE} if tuple(partner.scopes) == DPO_SCOPES else broker.policy.roles_for(org_type)
    if verified.actor_role not in roles:
        raise InvalidRequestError(
            f"Role {verified.actor_role!r} in 'act.role' is not a role of organisation type {org_type!r}; "
            f"allowed: {', '.join(sorted(roles)) or 'none'}."
        )
    consume_jti(uow, client_id=client_id, jti=verified.jti, expires_at=verified.expires_at)
    return AuthenticatedClient(
        partner_id=partner.client_id,
        organisation_id=partner.organisation_id,
        org_type=org_type,
        granted_scopes=frozenset(partner.scopes),
        assertion=verified,
    )


def consume_jti(uow: UnitOfWork, *, client_id: str, jti: str, expires_at: datetime) -> None:
    """Use an assertion id once: one INSERT against the (client_id, jti) primary key.

    Never check-then-set: of two concurrent requests with the same assertion, the database lets exactly one
    insert through (PostgreSQL makes the second wait for the first to commit, then fails it; SQLite serialises
    the writers). The row is kept until `expires_at` (= the assertion's exp + the clock-skew allowance)."""
    try:
        uow.session.execute(insert(AssertionJtiRow).values(client_id=client_id, jti=jti, expires_at=expires_at))
    except IntegrityError as error:
        raise InvalidClientError("This client assertion has already been used ('jti' replay).") from error


_INSERT_PROOF_JTI = Prepared(insert(DpopProofJtiRow))
# A label that sets the nonce key apart from every other use of the secret it is derived from.
_NONCE_KEY_LABEL = b"consent-broker dpop-nonce v1"


def consume_proof_jti(session: Session | Connection, proof: DpopProof) -> None:
    """Use a DPoP proof once (RFC 9449 §11.1): one INSERT against the (jkt, jti) primary key, never check-then-set,
    as for assertion ids. The row is kept until the proof's `iat` has left the accepted window."""
    try:
        _INSERT_PROOF_JTI.execute(session, proof_jti_row(proof))
    except IntegrityError as error:
        raise DpopProofError(PROOF_REPLAYED) from error


PROOF_REPLAYED = "This DPoP proof has already been used ('jti' replay); sign a new one."


def proof_jti_row(proof: DpopProof) -> dict[str, Any]:
    """The `dpop_proof_jtis` row that uses `proof` (`consume_proof_jti` inserts it)."""
    return {"jkt": proof.jkt, "jti": proof.jti, "expires_at": proof.expires_at}


def dpop_nonces(broker: Broker) -> DpopNonces | None:
    """The broker's DPoP nonces, or None when they are off (`Settings.dpop_nonces`).

    Every process must issue and accept the same nonces without sharing state, so their key is derived from a
    secret all of them hold: the key store's look-up index key, through HMAC with a label of its own (the index
    key itself never leaves the key store's process memory, and nothing about it can be learnt from a nonce)."""
    settings = broker.settings
    if not settings.dpop_nonces:
        return None
    nonces: DpopNonces | None = broker.runtime.get("dpop_nonces")
    if nonces is None:
        key = hmac.new(broker.keys.hetu_index_key(), _NONCE_KEY_LABEL, hashlib.sha256).digest()
        nonces = broker.runtime.setdefault("dpop_nonces", DpopNonces(key, settings.dpop_nonce_step))
    return nonces


def verify_token_request_proof(broker: Broker, dpop: DpopRequest | None, now: datetime) -> DpopProof | None:
    """The token request's DPoP proof (RFC 9449 §5), verified; None when there is none and DPoP is not required."""
    settings = broker.settings
    if dpop is None or not dpop.proofs:
        if settings.require_dpop:
            raise InvalidDpopProofError(
                "This broker issues only DPoP-bound access tokens: send a DPoP proof in the 'DPoP' header "
                "(RFC 9449 §5)."
            )
        return None
    try:
        return verify_proof(
            dpop.proofs,
            method=dpop.method,
            url=dpop.url,
            now=now,
            max_age=settings.dpop_max_age,
            skew=settings.dpop_iat_skew,
            nonces=dpop_nonces(broker),
        )
    except DpopNonceError as error:
        raise UseDpopNonceError(error.description, nonce=error.nonce) from error
    except DpopProofError as error:
        raise InvalidDpopProofError(error.description) from error


def resolve_scope(requested: str | None, granted: Iterable[str]) -> tuple[str, ...]:
    """The scopes of a new token: the request's if all were granted, all granted ones if none was asked for.

    A scope the partner lacks is an error, never silently dropped (authlib#320; RFC 6749 §5.2)."""
    granted_set = set(granted)
    granted_known = [name for name in SCOPES if name in granted_set]
    if requested is None:
        if not granted_known:
            raise InvalidScopeError("No scope has been granted to this client.")
        return tuple(granted_known)
    names = requested.split(" ")  # RFC 6749 §3.3: scope tokens delimited by single spaces
    if "" in names:
        raise InvalidScopeError("scope must be scope names separated by single spaces.")
    for name in names:
        if name not in SCOPES:
            raise InvalidScopeError(f"Unknown scope {name!r}; known scopes: {', '.join(SCOPES)}.")
    for name in names:
        if name not in granted_known:
            raise InvalidScopeError(f"Scope {name!r} has not been granted to this client.")
    return tuple(name for name in SCOPES if name in names)


def issue_access_token(
    broker: Broker,
    credentials: ClientCredentials,
    *,
    grant_type: str | None,
    scope: str | None,
    on_token_issued: TokenIssuedHook = no_op_hook,
    dpop: DpopRequest | None = None,
) -> IssuedToken:
    """The client credentials grant (RFC 6749 §4.4) with `private_key_jwt` authentication; the token is bound to
    the key of the request's DPoP proof (RFC 9449 §5) when there is one."""
    if grant_type is None:
        raise InvalidRequestError("grant_type is required.")
    if grant_type != GRANT_TYPE:
        raise UnsupportedGrantTypeError(f"Only grant_type={GRANT_TYPE} is supported.")
    now = broker.clock.now()
    ttl = broker.settings.access_token_ttl
    proof = verify_token_request_proof(broker, dpop, now)
    with broker.uow() as uow:
        client = authenticate_client(uow, broker, credentials, now)
        scopes = resolve_scope(scope, client.granted_scopes)
        if proof is not None:
            try:
                consume_proof_jti(uow.session, proof)
            except DpopProofError as error:
                raise InvalidDpopProofError(error.description) from error
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_hash = hash_token(token)
        actor = client.assertion
        uow.session.add(
            AccessTokenRow(
                token_hash=token_hash,
                client_id=client.partner_id,
                scope=" ".join(scopes),
                actor_id=actor.actor_id,
                actor_role=actor.actor_role,
                issued_at=now,
                expires_at=now + timedelta(seconds=ttl),
                revoked_at=None,
                jkt=proof.jkt if proof is not None else None,
            )
        )
        caller = Caller(
            partner_id=client.partner_id,
            organisation_id=client.organisation_id,
            org_type=client.org_type,
            actor_id=actor.actor_id,
            actor_role=actor.actor_role,
            scopes=frozenset(scopes),
        )
        on_token_issued(uow, caller, token_hash[:HASH_PREFIX_LENGTH])
        uow.commit()
    token_type = DPOP_TOKEN_TYPE if proof is not None else TOKEN_TYPE
    return IssuedToken(access_token=token, expires_in=ttl, scope=" ".join(scopes), token_type=token_type)


def revoke_access_token(broker: Broker, credentials: ClientCredentials, *, token: str | None) -> None:
    """Token revocation (RFC 7009). An unknown token, another client's token or one already revoked is
    answered like a success and changes nothing (§2.2): the answer tells nobody whether a token exists.

    `token_type_hint` is not needed: the broker issues access tokens only (§2.1 lets the server ignore it).
    The client's assertion is consumed even when nothing is revoked."""
    if not token:
        raise InvalidRequestError("token is required (RFC 7009 §2.1).")
    now = broker.clock.now()
    with broker.uow() as uow:
        client = authenticate_client(uow, broker, credentials, now)
        if TOKEN_PATTERN.fullmatch(token):
            uow.session.execute(
                update(AccessTokenRow)
                .where(
                    AccessTokenRow.token_hash == hash_token(token),
                    AccessTokenRow.client_id == client.partner_id,
                    AccessTokenRow.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        uow.commit()


def purge_expired(broker: Broker) -> tuple[int, int]:
    """Forget used assertion and DPoP proof ids and access tokens whose time is over; returns (ids, tokens)
    deleted, `ids` counting both kinds. One of the scheduled jobs, which live in broker/services/jobs.py (the use
    cases may not import this package, so the job is there and this name calls it)."""
    from broker.services.jobs import forget_expired_credentials

    return forget_expired_credentials(broker, broker.clock.now())
