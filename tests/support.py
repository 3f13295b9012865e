"""Test helpers: a broker with the reference organisations, and a partner-side client that authenticates the
way a real partner system does (a signed client assertion, RFC 7523) over Flask's test client."""

from __future__ import annotations

import itertools
import json
import secrets
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import OKPKey
from werkzeug.test import TestResponse

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

    def token_response(self, org: str, assertion: str | None = None, **form: str) -> TestResponse:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(org),
        } | form
        return self.client.post("/oauth/token", data=data)

    def token(self, org: str, role: str | None = None, scope: str | None = None) -> str:
        cache_key = (org, role or ROLE[org], scope)
        if cache_key not in self._tokens:
            act = {"sub": f"{org}-staff-1", "role": role or ROLE[org]}
            form = {"scope": scope} if scope else {}
            response = self.token_response(org, self.assertion(org, act=act), **form)
            assert response.status_code == 200, response.get_data(as_text=True)
            self._tokens[cache_key] = response.get_json()["access_token"]
        return self._tokens[cache_key]

    def call(
        self, org: str | None, method: str, path: str, body: Any = None, *, role: str | None = None, **kwargs: Any
    ) -> TestResponse:
        headers = kwargs.pop("headers", {})
        if org is not None:
            headers["Authorization"] = f"Bearer {self.token(org, role)}"
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


def make_env(settings: Settings, clock: FixedClock) -> Env:
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    broker = build_broker(settings, clock=clock)
    register_organisations(broker)
    app = create_app(settings, broker=broker)
    app.testing = True
    return Env(broker=broker, app=app, client=app.test_client(), clock=clock)
