"""A small test bed for the OAuth wiring: a Flask app with only the OAuth blueprint and two protected routes,
a real database (a SQLite file, or a fresh PostgreSQL schema when BROKER_TEST_POSTGRES_URL is set), a pinned
clock, and fakes for the policy and the key store. The partner side binds its tokens to a DPoP key (RFC 9449)
and signs a fresh proof for each request, as the broker requires by default.

Not a conftest (pytest does not load it by itself): test modules import `open_test_bed` and `BACKENDS` and
declare their own fixtures, so that fixture names never shadow imports.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g, jsonify
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from werkzeug.test import TestResponse

from broker.adapters.database import Database
from broker.adapters.orm import AccessTokenRow, Base, OrganisationRow, PartnerRow
from broker.adapters.uow import UnitOfWork
from broker.config import Settings
from broker.domain.clock import FixedClock
from broker.domain.model import PARTNER_SCOPES, Caller
from broker.oauth import init_oauth, require_scope
from broker.oauth.assertion import ASSERTION_TYPE
from broker.services import Broker
from tests.support import DpopSigner

ISSUER = "https://broker.example"
TOKEN_URL = ISSUER + "/oauth/token"
NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
POSTGRES_URL = os.environ.get("BROKER_TEST_POSTGRES_URL")

# PostgreSQL runs too when BROKER_TEST_POSTGRES_URL names a database to create throw-away schemas in. It is
# left out silently otherwise, so that every test here does not print a skip line; the race test, which
# matters most on PostgreSQL, lists RACE_BACKENDS and shows its skip.
_POSTGRES = pytest.param("postgresql", marks=pytest.mark.postgres)
BACKENDS = ["sqlite", _POSTGRES] if POSTGRES_URL else ["sqlite"]
RACE_BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not POSTGRES_URL, reason="BROKER_TEST_POSTGRES_URL is not set"),
        ],
    ),
]

ROLES = {
    "employment_services": frozenset({"individual_coach", "work_coach"}),
    "health_services": frozenset({"physician", "nurse"}),
}

# A claim given this value is left out of the assertion.
OMIT: Any = object()


class FakePolicy:
    """The one thing the OAuth wiring asks of the policy: which roles an organisation type has."""

    def roles_for(self, org_type: str) -> frozenset[str]:
        return ROLES.get(org_type, frozenset())


class FakeKeyStore:
    def __init__(self) -> None:
        self.signing_key = OKPKey.generate_key("Ed25519", parameters={"kid": "sig-000001-abcdef01"})
        self.index_key = secrets.token_bytes(32)

    def hetu_index_key(self) -> bytes:
        return self.index_key  # the secret the DPoP nonce key is derived from (broker/oauth/tokens.py)

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.signing_key.as_dict(private=False, use="sig", alg="Ed25519")]}


@dataclass
class Partner:
    client_id: str
    key: Key  # the partner's private key, as the partner system holds it
    alg: str
    kid: str | None
    organisation_id: str


@dataclass
class IssuedHookCall:
    caller: Caller
    token_hash_prefix: str
    token_row_visible: bool


@dataclass
class OAuthTestBed:
    app: Flask
    broker: Broker
    clock: FixedClock
    hook_calls: list[IssuedHookCall] = field(default_factory=list)
    fail_hook: bool = False
    # The partner systems' DPoP key pair (one for the whole bed), signing with the pinned clock.
    dpop: DpopSigner = field(init=False)

    def __post_init__(self) -> None:
        self.dpop = DpopSigner(now=lambda: self.clock.now().timestamp())

    # --- set-up ---

    def add_partner(
        self,
        client_id: str,
        *,
        org_type: str = "employment_services",
        alg: str = "EdDSA",
        scopes: list[str] | None = None,
        kid: str | None = "key-1",
        active: bool = True,
        extra_keys: list[dict[str, Any]] | None = None,
    ) -> Partner:
        key: Key
        if alg == "ES256":
            key = ECKey.generate_key("P-256", parameters={"kid": kid} if kid else None)
        else:
            key = OKPKey.generate_key("Ed25519", parameters={"kid": kid} if kid else None)
        public = key.as_dict(private=False)
        with self.broker.uow() as uow:
            uow.session.add(
                OrganisationRow(
                    id=f"org-{client_id}",
                    name=f"Organisation of {client_id}",
                    org_type=org_type,
                    created_at=NOW,
                )
            )
            uow.session.flush()
            uow.session.add(
                PartnerRow(
                    client_id=client_id,
                    organisation_id=f"org-{client_id}",
                    name=client_id,
                    jwks={"keys": [public, *(extra_keys or [])]},
                    alg=alg,
                    scopes=list(PARTNER_SCOPES if scopes is None else scopes),
                    active=active,
                    created_at=NOW,
                )
            )
            uow.commit()
        return Partner(client_id=client_id, key=key, alg=alg, kid=kid, organisation_id=f"org-{client_id}")

    # --- the partner's side ---

    def claims(self, partner: Partner, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": partner.client_id,
            "sub": partner.client_id,
            "aud": ISSUER,
            "iat": now,
            "exp": now + 30,
            "jti": secrets.token_urlsafe(16),
            "act": {"sub": "staff-42", "role": "individual_coach"},
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not OMIT}

    def assertion(
        self,
        partner: Partner,
        *,
        header: dict[str, Any] | None = None,
        key: Key | None = None,
        alg: str | None = None,
        **claims: Any,
    ) -> str:
        signing_key = key if key is not None else partner.key
        signing_alg = alg or partner.alg
        head: dict[str, Any] = {"alg": signing_alg}
        if partner.kid:
            head["kid"] = partner.kid
        head.update(header or {})
        return sign(head, self.claims(partner, **claims), signing_key)

    # --- requests ---

    def token_request(self, assertion: str | None, *, dpop: str | list[str] | None = None, **form: str) -> TestResponse:
        """A token request; `dpop` is the DPoP header (a list: several headers) — None signs a fresh proof with the
        bed's key, "" sends none."""
        data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
        if assertion is not None:
            data["client_assertion"] = assertion
        data.update(form)
        proofs = [self.dpop.proof("POST", TOKEN_URL)] if dpop is None else [dpop] if isinstance(dpop, str) else dpop
        headers = [("DPoP", proof) for proof in proofs if proof]
        return self.app.test_client().post("/oauth/token", data=data, headers=headers)

    def token(self, partner: Partner, scope: str | None = None, *, dpop: str | None = None, **claims: Any) -> str:
        form = {"scope": scope} if scope is not None else {}
        response = self.token_request(self.assertion(partner, **claims), dpop=dpop, **form)
        assert response.status_code == 200, response.get_json()
        return str(response.get_json()["access_token"])

    def revoke(self, partner: Partner, token: str) -> TestResponse:
        data = {
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(partner),
        }
        return self.app.test_client().post("/oauth/revoke", data=data)

    def get(
        self,
        path: str,
        token: str | None = None,
        *,
        authorization: str | None = None,
        dpop: str | list[str] | None = None,
    ) -> TestResponse:
        """A resource request. With `token`: `Authorization: DPoP <token>` and, unless `dpop` is given, a fresh
        proof for this request (`dpop` as for `token_request`). `authorization` replaces the Authorization
        header as it is."""
        headers: list[tuple[str, str]] = []
        if authorization is not None:
            headers.append(("Authorization", authorization))
        elif token is not None:
            headers.append(("Authorization", f"DPoP {token}"))
        if dpop is None and token is not None:
            dpop = self.dpop.proof("GET", ISSUER + path, token)
        proofs = [dpop] if isinstance(dpop, str) else dpop or []
        headers.extend(("DPoP", proof) for proof in proofs if proof)
        return self.app.test_client().get(path, headers=headers)


def sign(header: dict[str, Any], claims: dict[str, Any], key: Key) -> str:
    """Sign as a partner would. joserfc warns on the deprecated name "EdDSA"; here that is intended."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A compact JWS with an empty signature, put together by hand (`alg: none`)."""
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), ""])


def signed_by_hand(header: dict[str, Any], claims: dict[str, Any], key: OKPKey) -> str:
    """An Ed25519-signed compact JWS with any header at all — joserfc refuses to sign some of them."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.private_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64(signature)}"


# --- the test bed ---


@contextlib.contextmanager
def _database(backend: str, tmp_path: Path) -> Iterator[Database]:
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'broker.db'}")
        try:
            Base.metadata.create_all(db.engine)
            yield db
        finally:
            db.dispose()
        return
    assert POSTGRES_URL
    schema = f"oauth_test_{secrets.token_hex(6)}"
    admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = Database(POSTGRES_URL, connect_args={"options": f"-c search_path={schema}"})
        try:
            Base.metadata.create_all(db.engine)
            yield db
        finally:
            db.dispose()
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def open_test_bed(backend: str, tmp_path: Path, **settings_overrides: Any) -> Iterator[OAuthTestBed]:
    """The bed; `settings_overrides` change `Settings` fields (`require_dpop=False`, `dpop_nonces=True`, …)."""
    with _database(backend, tmp_path) as db:
        clock = FixedClock(NOW)
        settings = Settings(
            instance_path=tmp_path, database_url=db.url, issuer=ISSUER, mode="test", **settings_overrides
        )
        broker = Broker(settings=settings, db=db, keys=FakeKeyStore(), policy=FakePolicy(), clock=clock)
        app = Flask(__name__)
        app.extensions["broker"] = broker
        bed = OAuthTestBed(app=app, broker=broker, clock=clock)

        def on_token_issued(uow: UnitOfWork, caller: Caller, token_hash_prefix: str) -> None:
            # Runs inside the token transaction: the new token's row is visible here, before the commit.
            visible = (
                uow.session.scalars(
                    select(AccessTokenRow.token_hash).where(AccessTokenRow.token_hash.startswith(token_hash_prefix))
                ).first()
                is not None
            )
            bed.hook_calls.append(IssuedHookCall(caller, token_hash_prefix, visible))
            if bed.fail_hook:
                raise RuntimeError("audit log unavailable")

        init_oauth(app, on_token_issued=on_token_issued)

        @app.get("/protected/consents")
        @require_scope("consents")
        def consents() -> Any:
            caller: Caller = g.caller
            return jsonify(
                partner_id=caller.partner_id,
                organisation_id=caller.organisation_id,
                org_type=caller.org_type,
                actor_id=caller.actor_id,
                actor_role=caller.actor_role,
                scopes=sorted(caller.scopes),
            )

        @app.get("/protected/audit")
        @require_scope("audit:read")
        def audit() -> Any:
            return jsonify(ok=True)

        yield bed
