"""Test helpers: a broker with the reference organisations, and a partner-side client that authenticates the
way a real partner system does (a signed client assertion, RFC 7523; DPoP-bound access tokens, RFC 9449) over
Flask's test client."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey
from werkzeug.test import TestResponse

from broker.adapters.orm import WebhookEndpointRow
from broker.app import build_broker, create_app
from broker.config import Settings
from broker.demo import DPO_PARTNER, ORGANISATIONS, register_organisations
from broker.domain.clock import FixedClock
from broker.domain.hetu import make_hetu
from broker.domain.model import DPO_ROLE
from broker.services import Broker

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ROLE = {org_id: role for org_id, _, _, role in ORGANISATIONS} | {DPO_PARTNER: DPO_ROLE}
ORG_TYPE = {org_id: org_type for org_id, org_type, _, _ in ORGANISATIONS}
_sequence = itertools.count()


class DpopSigner:
    """The partner side of DPoP (RFC 9449 §4.2): signs a fresh proof for each request with one key pair.

    Usable over Flask's test client and over real HTTP alike: `headers(method, url, token)` gives the two
    headers of a resource request, `proof(method, url)` the `DPoP` header of a token request. `url` may carry
    a query and a fragment; they are left out of `htu` (RFC 9449 §4.2). `now` is a callable returning Unix
    seconds (the test clock, or the real one)."""

    def __init__(self, key: OKPKey | ECKey | None = None, *, now: Callable[[], float] = time.time) -> None:
        self.key = key or OKPKey.generate_key("Ed25519")
        self.alg = "ES256" if isinstance(self.key, ECKey) else "Ed25519"
        self.now = now
        self.nonce: str | None = None  # the last DPoP-Nonce a server sent, used in later proofs (RFC 9449 §8)

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {name: public[name] for name in ("kty", "crv", "x", "y") if name in public}

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public key: the `cnf.jkt` a bound token carries."""
        return self.key.thumbprint()

    def proof(
        self,
        method: str,
        url: str,
        token: str | None = None,
        *,
        nonce: str | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """One signed proof. `header` and `claims` override or add members; a member set to None is left out."""
        scheme, netloc, path, _, _ = urlsplit(url)
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": urlunsplit((scheme, netloc, path, "", "")),
            "iat": int(self.now()),
        }
        if token is not None:
            body["ath"] = access_token_hash(token)
        if nonce or self.nonce:
            body["nonce"] = nonce or self.nonce
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        head = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk} | (header or {})
        head = {k: v for k, v in head.items() if v is not None}
        return jwt.encode(head, body, self.key, algorithms=[head["alg"]])

    def headers(self, method: str, url: str, token: str, *, scheme: str = "DPoP") -> dict[str, str]:
        """`Authorization: DPoP <token>` and a fresh `DPoP` proof for one resource request (RFC 9449 §7.1)."""
        return {"Authorization": f"{scheme} {token}", "DPoP": self.proof(method, url, token)}

    def remember_nonce(self, response_headers: Any) -> None:
        """Keep the server's latest `DPoP-Nonce` for the next proofs (RFC 9449 §8.2)."""
        nonce = response_headers.get("DPoP-Nonce")
        if nonce:
            self.nonce = nonce


def access_token_hash(token: str) -> str:
    """The `ath` claim: base64url of the SHA-256 of the access token's ASCII (RFC 9449 §4.2)."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_hetu(born: date | None = None) -> str:
    """A fresh test identity code (individual numbers 900–999), a new birth date every hundred codes."""
    n = next(_sequence)
    return make_hetu(born or date(1960, 1, 1) + timedelta(days=n // 100), 900 + n % 100)


@dataclass
class Env:
    broker: Broker
    app: Flask
    client: FlaskClient
    clock: FixedClock
    _tokens: dict[tuple[str, str, str | None], str] = field(default_factory=dict)
    # Every token issued through `token_response`: its type ("DPoP", or "Bearer" when the broker does not bind) and
    # the organisation whose DPoP key it is bound to.
    _token_types: dict[str, str] = field(default_factory=dict)
    _token_orgs: dict[str, str] = field(default_factory=dict)
    # One DPoP key pair per organisation: its tokens are bound to it, its requests carry proofs signed with it.
    _signers: dict[str, DpopSigner] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return self.broker.settings.issuer

    def partner_key(self, org: str) -> OKPKey:
        path = self.broker.settings.instance_path / "partners" / f"{org}.jwk"
        return OKPKey.import_key(json.loads(path.read_text()))

    def assertion(
        self, org: str, *, key: OKPKey | None = None, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        now = int(self.clock.now().timestamp())
        body: dict[str, Any] = {
            "iss": org,
            "sub": org,
            "aud": self.issuer,
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_hex(16),
            "act": {"sub": f"{org}-staff-1", "role": ROLE[org]},
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        key = key or self.partner_key(org)
        head = {"alg": "Ed25519", "kid": key.kid} | (header or {})
        return jwt.encode(head, body, key, algorithms=[head["alg"]])

    def signer(self, org: str) -> DpopSigner:
        """The organisation's DPoP key pair (made on first use), signing with the test clock's time."""
        if org not in self._signers:
            self._signers[org] = DpopSigner(now=lambda: self.clock.now().timestamp())
        return self._signers[org]

    def token_response(
        self, org: str, assertion: str | None = None, *, dpop: str | None = None, **form: str
    ) -> TestResponse:
        """A token request. `dpop` is the DPoP header to send: None signs a fresh proof with the organisation's
        key, "" sends none."""
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(org),
        } | form
        proof = self.signer(org).proof("POST", self.issuer + "/oauth/token") if dpop is None else dpop
        headers = {"DPoP": proof} if proof else {}
        response = self.client.post("/oauth/token", data=data, headers=headers)
        if response.status_code == 200:
            issued = response.get_json()
            self._token_types[issued["access_token"]] = issued["token_type"]
            self._token_orgs[issued["access_token"]] = org
        return response

    def token(self, org: str, role: str | None = None, scope: str | None = None) -> str:
        """A cached access token of `org`, bound to the organisation's DPoP key."""
        cache_key = (org, role or ROLE[org], scope)
        if cache_key not in self._tokens:
            act = {"sub": f"{org}-staff-1", "role": role or ROLE[org]}
            form = {"scope": scope} if scope else {}
            response = self.token_response(org, self.assertion(org, act=act), **form)
            assert response.status_code == 200, response.get_data(as_text=True)
            self._tokens[cache_key] = response.get_json()["access_token"]
        return self._tokens[cache_key]

    def auth_headers(
        self,
        org: str,
        method: str,
        path: str,
        *,
        role: str | None = None,
        scope: str | None = None,
        proof: bool = True,
    ) -> dict[str, str]:
        """The headers of one request by `org` to `path` (a path on the broker, query allowed): the access token
        (`Env.token(org, role, scope)`) under its issued scheme and, unless `proof` is False, a fresh DPoP proof
        for this method and URL."""
        return self.token_headers(self.token(org, role, scope), method, path, proof=proof)

    def token_headers(self, token: str, method: str, path: str, *, proof: bool = True) -> dict[str, str]:
        """As `auth_headers`, for a token obtained from `token_response` (e.g. for a named professional): signed
        with the key of the organisation that asked for it."""
        scheme = self._token_types.get(token, "Bearer")
        headers = {"Authorization": f"{scheme} {token}"}
        if proof and token in self._token_orgs:
            headers["DPoP"] = self.signer(self._token_orgs[token]).proof(method, self.issuer + path, token)
        return headers

    def call(
        self,
        org: str | None,
        method: str,
        path: str,
        body: Any = None,
        *,
        role: str | None = None,
        proof: bool = True,
        **kwargs: Any,
    ) -> TestResponse:
        """A request by `org` (None: unauthenticated) with its token and a fresh DPoP proof; `proof=False` sends
        the token without a proof. Headers passed in `headers` win over the generated ones."""
        headers = dict(kwargs.pop("headers", {}))
        if org is not None:
            headers = self.auth_headers(org, method, path, role=role, proof=proof) | headers
        if body is not None:
            kwargs["json"] = body
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def post(self, org: str | None, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        return self.call(org, "POST", f"/api/v1{path}", body if body is not None else {}, **kwargs)

    def get(self, org: str | None, path: str, **kwargs: Any) -> TestResponse:
        return self.call(org, "GET", f"/api/v1{path}", **kwargs)

    def person(self, org: str = "kisalli", hetu: str | None = None) -> str:
        response = self.post(org, "/persons/resolve", {"hetu": hetu or new_hetu()})
        assert response.status_code == 200, response.get_data(as_text=True)
        person_id: str = response.get_json()["person_id"]
        return person_id

    def serve(self, person_id: str, *orgs: str) -> None:
        for org in orgs:
            response = self.post(org, f"/persons/{person_id}/relationships")
            assert response.status_code == 200, response.get_data(as_text=True)


def add_endpoint(env: Env, endpoint_id: str, org: str, events: list[str], *, active: bool = True) -> None:
    """A webhook endpoint of `org` written straight to the database, for tests of what happens around deliveries
    (registration through the API is tested in tests/integration/test_webhooks_api.py)."""
    with env.broker.uow() as uow:
        uow.session.add(
            WebhookEndpointRow(
                id=endpoint_id,
                organisation_id=org,
                client_id=org,
                url=f"https://{org}.example/events",
                events=events,
                active=active,
                created_at=env.clock.now(),
                disabled_at=None,
            )
        )
        uow.commit()


def make_env(settings: Settings, clock: FixedClock) -> Env:
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    broker = build_broker(settings, clock=clock)
    register_organisations(broker)
    app = create_app(settings, broker=broker)
    app.testing = True
    return Env(broker=broker, app=app, client=app.test_client(), clock=clock)


ROOT = Path(__file__).resolve().parents[1]
#: The broker's command line, run by this interpreter (the served tests start `broker serve` with it).
BROKER_CLI = [sys.executable, "-m", "broker.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_demo_instance(env: dict[str, str], port: int) -> None:
    """`broker demo --no-serve` with `env`: the demo instance a served test then serves on `port`."""
    created = subprocess.run(
        [*BROKER_CLI, "demo", "--no-serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert created.returncode == 0, created.stderr
