"""What the development identity provider keeps in the broker's database: authorization codes and access tokens
(`DevIdpCodeRow`, `DevIdpTokenRow`), so that any worker process can finish a login another one started.

Each function is one unit of work that commits itself (STYLE.md: the use case owns the transaction); Authlib's
SQLAlchemy helpers, which commit inside, are not used. Codes and tokens are stored only as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from broker.adapters.orm import DevIdpCodeRow, DevIdpTokenRow
from broker.domain.clock import utc

if TYPE_CHECKING:
    from broker.services import Broker

#: RFC 6749 §4.1.2 recommends at most 10 minutes; the portal redeems its code at once, so 60 s is plenty.
CODE_TTL = timedelta(seconds=60)


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedCode:
    """A redeemed authorization code, in the shape Authlib's grants and OpenID extension read
    (`authlib.oidc.core.models.AuthorizationCodeMixin`)."""

    code_hash: str
    client_id: str
    login: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    auth_time: datetime

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> str | None:
        return None  # set by the OpenID extension, which knows what the IdP asserts

    def get_amr(self) -> list[str] | None:
        return None


@dataclass(frozen=True)
class GrantedToken:
    login: str
    scope: str
    client_id: str


def save_code(
    broker: Broker,
    code: str,
    *,
    client_id: str,
    login: str,
    redirect_uri: str,
    scope: str,
    nonce: str | None,
    code_challenge: str,
    code_challenge_method: str,
    keep_after_expiry: timedelta,
) -> None:
    now = broker.clock.now()
    with broker.uow() as uow:
        # Housekeeping in passing: a code row is kept until no token it gave can still be valid, so that a
        # replay found late still voids them; after that it has nothing left to protect.
        uow.session.execute(delete(DevIdpCodeRow).where(DevIdpCodeRow.expires_at < now - keep_after_expiry))
        uow.session.execute(delete(DevIdpTokenRow).where(DevIdpTokenRow.expires_at < now))
        uow.session.add(
            DevIdpCodeRow(
                code_hash=token_hash(code),
                client_id=client_id,
                login=login,
                redirect_uri=redirect_uri,
                scope=scope,
                nonce=nonce,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
                auth_time=now,
                created_at=now,
                expires_at=now + CODE_TTL,
                used_at=None,
                replayed_at=None,
            )
        )
        uow.commit()


def redeem_code(broker: Broker, code: str, client_id: str) -> IssuedCode | None:
    """Use the code: once, by the client it was issued to, before it expires. The use is committed at once and
    before anything else is checked, so a code presented with a wrong PKCE verifier or redirect URI is spent
    too — nobody gets a second guess.

    A code that was already used is a replay: it is marked, which voids every access token it gave, whenever
    that token was stored (RFC 6749 §4.1.2, RFC 9700 §4.5.3), and None is returned, as for an unknown or expired
    code."""
    hashed = token_hash(code)
    now = broker.clock.now()
    with broker.uow() as uow:
        # One conditional UPDATE: of two concurrent redemptions (in any processes) exactly one changes the row.
        used: Any = uow.session.execute(
            update(DevIdpCodeRow)
            .where(
                DevIdpCodeRow.code_hash == hashed,
                DevIdpCodeRow.client_id == client_id,
                DevIdpCodeRow.used_at.is_(None),
                DevIdpCodeRow.expires_at > now,
            )
            .values(used_at=now)
        )
        if used.rowcount != 1:
            replayed: Any = uow.session.execute(
                update(DevIdpCodeRow)
                .where(
                    DevIdpCodeRow.code_hash == hashed,
                    DevIdpCodeRow.client_id == client_id,
                    DevIdpCodeRow.used_at.is_not(None),
                    DevIdpCodeRow.replayed_at.is_(None),
                )
                .values(replayed_at=now)
            )
            if replayed.rowcount:
                uow.commit()
            return None
        row = uow.session.get(DevIdpCodeRow, hashed)
        assert row is not None
        redeemed = IssuedCode(
            code_hash=row.code_hash,
            client_id=row.client_id,
            login=row.login,
            redirect_uri=row.redirect_uri,
            scope=row.scope,
            nonce=row.nonce,
            code_challenge=row.code_challenge,
            code_challenge_method=row.code_challenge_method,
            auth_time=utc(row.auth_time),
        )
        uow.commit()
        return redeemed


def nonce_used(broker: Broker, client_id: str, nonce: str) -> bool:
    """Has this client sent this nonce before (while its code is still kept)? OpenID Connect Core 1.0 §15.5.2:
    a nonce is used once."""
    with broker.uow(write=False) as uow:
        found = uow.session.scalars(
            select(DevIdpCodeRow.code_hash).where(DevIdpCodeRow.client_id == client_id, DevIdpCodeRow.nonce == nonce)
        ).first()
    return found is not None


def save_token(
    broker: Broker, token: str, *, code_hash: str, client_id: str, login: str, scope: str, expires_in: int
) -> None:
    now = broker.clock.now()
    with broker.uow() as uow:
        uow.session.add(
            DevIdpTokenRow(
                token_hash=token_hash(token),
                code_hash=code_hash,
                client_id=client_id,
                login=login,
                scope=scope,
                issued_at=now,
                expires_at=now + timedelta(seconds=expires_in),
            )
        )
        uow.commit()


def find_token(broker: Broker, token: str) -> GrantedToken | None:
    """The grant behind a bearer token, if the token is known, has not expired and its code was never replayed.
    The replay check is made here, at use, rather than by revoking tokens when the replay is seen: a token stored
    just after a concurrent replay is void all the same."""
    now = broker.clock.now()
    with broker.uow(write=False) as uow:
        found = uow.session.execute(
            select(DevIdpTokenRow, DevIdpCodeRow.replayed_at)
            .outerjoin(DevIdpCodeRow, DevIdpCodeRow.code_hash == DevIdpTokenRow.code_hash)
            .where(DevIdpTokenRow.token_hash == token_hash(token))
        ).first()
    if found is None:
        return None
    row, replayed_at = found
    if replayed_at is not None or utc(row.expires_at) <= now:
        return None
    return GrantedToken(login=row.login, scope=row.scope, client_id=row.client_id)
