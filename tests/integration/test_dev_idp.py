"""The development identity provider (broker/devidp): OpenID Connect authorization code flow with PKCE, driven the
way the portal will drive it — Authlib's Flask client, talking to the IdP through `requests` — and, for the
failure cases, with hand-made requests that expect a specific error.

The clock is pinned to the present moment (not the suite's usual fixed date), because Authlib's client checks
`exp` and `iat` against the real time.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.integrations.flask_client import FlaskOAuth2App, OAuth, OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.discovery import OpenIDProviderMetadata
from flask import Flask, jsonify
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet
from requests.structures import CaseInsensitiveDict
from werkzeug.test import TestResponse

from broker.app import build_broker, create_app
from broker.config import Settings
from broker.demo import PERSONS
from broker.devidp import (
    PERSONAL_IDENTITY_CODE_CLAIM,
    init_dev_idp,
    portal_client_settings,
    portal_redirect_uri,
)
from broker.domain.clock import FixedClock
from broker.domain.errors import ConfigurationError
from tests.support import Env

ALL_SCOPES = "openid profile personal_identity_code"
REPLAYS = 8
MIKKO = next(p for p in PERSONS if p.key == "mikko")
LEENA = next(p for p in PERSONS if p.key == "leena")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(at=datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def demo_json(settings: Settings) -> dict[str, Any]:
    """The instance's demo.json as `broker demo` writes it (persons only; person ids are opaque)."""
    demo = {
        "issuer": settings.issuer,
        "persons": [
            {"person_id": f"per_{secrets.token_hex(16)}", "hetu": p.hetu, "name": p.name, "login": p.login}
            for p in PERSONS
        ],
    }
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    (settings.instance_path / "demo.json").write_text(json.dumps(demo), encoding="utf-8")
    return demo


# --- Talking to the IdP like a browser and like a client ---


@dataclass
class Login:
    """One authorization request: what the client keeps (state, nonce, PKCE verifier) and the code it got."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    code: str = ""


def authorization_params(env: Env, login: Login, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": login.redirect_uri,
        "scope": ALL_SCOPES,
        "state": login.state,
        "nonce": login.nonce,
        "code_challenge": create_s256_code_challenge(login.verifier),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def new_login(env: Env) -> Login:
    return Login(
        state=secrets.token_urlsafe(16),
        nonce=secrets.token_urlsafe(16),
        verifier=secrets.token_urlsafe(48),
        redirect_uri=portal_redirect_uri(env.broker.settings),
    )


def login_page(client: FlaskClient, params: dict[str, str]) -> TestResponse:
    return client.get(f"/dev-idp/authorize?{urlencode(params)}")


def form_of(page: TestResponse) -> tuple[str, str]:
    """The login page's form action and CSRF token."""
    text = page.get_data(as_text=True)
    action = re.search(r'<form method="post" action="([^"]+)"', text)
    token = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert action and token, text
    return html.unescape(action.group(1)), html.unescape(token.group(1))


def choose(client: FlaskClient, page: TestResponse, persona: str) -> TestResponse:
    action, token = form_of(page)
    return client.post(action, data={"csrf_token": token, "persona": persona})


def callback_params(response: TestResponse) -> dict[str, str]:
    assert response.status_code == 302, response.get_data(as_text=True)
    location = urlsplit(response.headers["Location"])
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def log_in(env: Env, persona: str = "leena", **overrides: str | None) -> Login:
    login = new_login(env)
    page = login_page(env.client, authorization_params(env, login, **overrides))
    assert page.status_code == 200, page.get_data(as_text=True)
    params = callback_params(choose(env.client, page, persona))
    assert params["state"] == login.state
    login.code = params["code"]
    return login


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def redeem(env: Env, login: Login, *, client: FlaskClient | None = None, **overrides: str | None) -> TestResponse:
    registration = portal_client_settings(env.broker.settings)
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": login.code,
        "redirect_uri": login.redirect_uri,
        "code_verifier": login.verifier,
    }
    form.update(overrides)
    return (client or env.client).post(
        "/dev-idp/token",
        data={k: v for k, v in form.items() if v is not None},
        headers={"Authorization": basic(registration["client_id"], registration["client_secret"])},
    )


def error_of(response: TestResponse) -> str:
    body = response.get_json()
    assert isinstance(body, dict), response.get_data(as_text=True)
    return str(body["error"])


def verified_id_token(env: Env, id_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify with the published key set and only the advertised algorithm (joserfc, no Authlib)."""
    keys = KeySet.import_key_set(env.client.get("/dev-idp/jwks.json").get_json())
    algs = env.client.get("/dev-idp/.well-known/openid-configuration").get_json()[
        "id_token_signing_alg_values_supported"
    ]
    token = jwt.decode(id_token, keys, algorithms=algs)
    return dict(token.header), dict(token.claims)


class WsgiAdapter(requests.adapters.BaseAdapter):
    """Hands `requests` calls to a Flask test client, so that Authlib's client reaches the IdP without sockets."""

    def __init__(self, client: FlaskClient) -> None:
        super().__init__()
        self.client = client

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        answer = self.client.open(
            url.path + (f"?{url.query}" if url.query else ""), method=request.method, headers=headers, data=request.body
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response._content = answer.get_data()
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        return None


@pytest.fixture
def portal(env: Env) -> FlaskClient:
    """A stand-in for the portal: Authlib's Flask client registered with `portal_client_settings`, a login route
    and the callback at the registered redirect URI, which answers with what Authlib made of the login."""
    idp_client = env.client

    class Session(OAuth2Session):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mount("http://", WsgiAdapter(idp_client))

    class App(FlaskOAuth2App):  # type: ignore[misc]
        client_cls = Session

    app = Flask("portal-stand-in")
    app.secret_key = secrets.token_bytes(32)
    oauth = OAuth(app)
    registration = portal_client_settings(env.broker.settings)
    oauth.register("broker", client_cls=App, **registration)
    redirect_uri = portal_redirect_uri(env.broker.settings)

    @app.get("/login")
    def login() -> Any:
        return oauth.broker.authorize_redirect(redirect_uri)

    @app.get("/portal/auth/callback")
    def callback() -> Any:
        # What docs/portal-login.md tells the portal to do: pin the issuer and the audience.
        issuer = oauth.broker.load_server_metadata()["issuer"]
        claims_options = {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": registration["client_id"]},
        }
        try:
            token = oauth.broker.authorize_access_token(claims_options=claims_options)
        except OAuthError as error:
            return jsonify({"error": error.error, "description": error.description}), 400
        userinfo = oauth.broker.userinfo(token=token)
        return jsonify(
            {"token": {k: v for k, v in token.items() if k != "userinfo"}, "id": token["userinfo"], "info": userinfo}
        )

    app.testing = True
    return app.test_client()


def portal_login(env: Env, portal: FlaskClient, persona: str) -> dict[str, Any]:
    start = portal.get("/login")
    assert start.status_code == 302
    authorize = urlsplit(start.headers["Location"])
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == f"{env.issuer}/dev-idp/authorize"
    page = env.client.get(f"{authorize.path}?{authorize.query}")
    back = choose(env.client, page, persona)
    assert back.status_code == 302
    callback = urlsplit(back.headers["Location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == portal_redirect_uri(env.broker.settings)
    answer = portal.get(f"{callback.path}?{callback.query}")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    result: dict[str, Any] = answer.get_json()
    return result


# --- Discovery and keys ---


def test_the_discovery_document_names_the_endpoints_and_what_the_provider_supports(env: Env) -> None:
    response = env.client.get("/dev-idp/.well-known/openid-configuration")
    assert response.status_code == 200
    doc = response.get_json()
    issuer = f"{env.issuer}/dev-idp"
    assert doc["issuer"] == issuer
    assert doc["authorization_endpoint"] == f"{issuer}/authorize"
    assert doc["token_endpoint"] == f"{issuer}/token"
    assert doc["userinfo_endpoint"] == f"{issuer}/userinfo"
    assert doc["jwks_uri"] == f"{issuer}/jwks.json"
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert doc["id_token_signing_alg_values_supported"] == ["Ed25519"]
    assert doc["subject_types_supported"] == ["pairwise"]
    assert set(doc["scopes_supported"]) == {"openid", "profile", "personal_identity_code"}
    assert PERSONAL_IDENTITY_CODE_CLAIM in doc["claims_supported"]


def test_the_discovery_document_passes_authlibs_checks_but_for_rs256_which_it_leaves_out_on_purpose(env: Env) -> None:
    # Authlib's checks want https endpoints (RFC 8414 §2), so this app is given an https issuer.
    app = create_app(replace(env.broker.settings, issuer="https://broker.example"), broker=env.broker)
    metadata = OpenIDProviderMetadata(app.test_client().get("/dev-idp/.well-known/openid-configuration").get_json())
    assert metadata["issuer"] == "https://broker.example/dev-idp"
    checks = [name for name in dir(metadata) if name.startswith("validate_")]
    assert "validate_id_token_signing_alg_values_supported" in checks
    for name in checks:
        if name != "validate_id_token_signing_alg_values_supported":
            getattr(metadata, name)()
    with pytest.raises(ValueError, match="RS256"):
        metadata.validate_id_token_signing_alg_values_supported()


def test_the_key_set_holds_the_public_ed25519_key_only(env: Env) -> None:
    keys = env.client.get("/dev-idp/jwks.json").get_json()["keys"]
    assert len(keys) == 1
    (key,) = keys
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "Ed25519", "sig")
    assert "d" not in key and key["kid"].startswith("dev-idp-")


# --- The login page ---


def test_the_login_page_lists_the_demo_personas_with_the_representative_and_the_dpo(
    env: Env, demo_json: dict[str, Any]
) -> None:
    page = login_page(env.client, authorization_params(env, new_login(env)))
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for person in PERSONS:
        assert f'name="persona" value="{person.login}"' in text
        assert f"Log in as {person.name}" in text
    assert 'name="persona" value="dpo"' in text
    assert "custodian of the minor Elias Korhonen" in text
    for person in PERSONS:
        assert person.hetu not in text  # identity codes never reach a page (DESIGN.md invariant 6)


def test_without_demo_json_the_representative_and_the_dpo_are_still_offered(env: Env) -> None:
    assert not (env.broker.settings.instance_path / "demo.json").exists()
    text = login_page(env.client, authorization_params(env, new_login(env))).get_data(as_text=True)
    assert re.findall(r'name="persona" value="([^"]+)"', text) == [LEENA.login, "dpo"]


def test_the_login_page_is_plain_accessible_html_under_a_strict_policy(env: Env) -> None:
    page = login_page(env.client, authorization_params(env, new_login(env)))
    text = page.get_data(as_text=True)
    assert page.mimetype == "text/html"
    assert '<html lang="en">' in text
    assert re.search(r"<h1>[^<]+</h1>", text)
    assert re.search(r'<ul aria-labelledby="personas-heading">', text)
    assert all(f'id="who-{login}"' in text for login in re.findall(r'aria-describedby="who-([^"]+)"', text))
    assert "<script" not in text and not re.search(r'(src|href)="https?://', text)  # no third-party assets
    policy = page.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; style-src 'sha256-")
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dev-idp/authorize" in cookie


# --- The whole flow, as the portal will run it ---


def test_a_login_through_authlibs_flask_client_gives_a_verified_id_token_with_the_persons_claims(
    env: Env, portal: FlaskClient, demo_json: dict[str, Any]
) -> None:
    result = portal_login(env, portal, "mikko")
    claims = result["id"]  # what Authlib's parse_id_token verified: signature, iss, aud, exp, iat, nonce
    assert claims["iss"] == f"{env.issuer}/dev-idp"
    assert claims["aud"] == "portal"
    assert claims["name"] == "Mikko Laine"
    assert (claims["given_name"], claims["family_name"]) == ("Mikko", "Laine")
    assert claims[PERSONAL_IDENTITY_CODE_CLAIM] == MIKKO.hetu
    assert claims["roles"] == ["client"]
    assert claims["acr"] == "0"
    assert claims["auth_time"] == int(env.clock.now().timestamp())
    assert claims["exp"] - claims["iat"] == 300
    assert result["info"]["sub"] == claims["sub"]  # the userinfo endpoint agrees (Core §5.3.2)
    assert result["info"][PERSONAL_IDENTITY_CODE_CLAIM] == MIKKO.hetu
    assert result["token"]["token_type"] == "Bearer"
    assert "refresh_token" not in result["token"]


def test_the_nonce_the_client_sent_comes_back_in_the_id_token(env: Env) -> None:
    login = log_in(env)
    response = redeem(env, login)
    assert response.status_code == 200, response.get_data(as_text=True)
    header, claims = verified_id_token(env, response.get_json()["id_token"])
    assert claims["nonce"] == login.nonce
    assert header["alg"] == "Ed25519" and header["kid"].startswith("dev-idp-")
    assert "at_hash" not in claims  # optional for the code flow; Authlib cannot recompute it for Ed25519


def test_the_id_token_verifies_with_the_published_keys_and_carries_every_required_claim(env: Env) -> None:
    response = redeem(env, log_in(env, "dpo"))
    assert response.headers["Cache-Control"] == "no-store"
    _, claims = verified_id_token(env, response.get_json()["id_token"])
    assert {"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr"} <= set(claims)
    assert claims["iss"] == f"{env.issuer}/dev-idp" and claims["aud"] == "portal"
    tampered = response.get_json()["id_token"][:-4] + "AAAA"
    with pytest.raises(Exception, match="signature"):
        verified_id_token(env, tampered)


def test_the_dpo_persona_has_the_dpo_role_and_no_identity_code(env: Env) -> None:
    _, claims = verified_id_token(env, redeem(env, log_in(env, "dpo")).get_json()["id_token"])
    assert claims["roles"] == ["dpo"]
    assert PERSONAL_IDENTITY_CODE_CLAIM not in claims


def test_the_identity_code_is_released_only_with_its_scope(env: Env) -> None:
    granted = redeem(env, log_in(env, "leena", scope="openid profile")).get_json()
    assert granted["scope"] == "openid profile"
    _, claims = verified_id_token(env, granted["id_token"])
    assert claims["name"] == LEENA.name and PERSONAL_IDENTITY_CODE_CLAIM not in claims
    info = env.client.get("/dev-idp/userinfo", headers={"Authorization": f"Bearer {granted['access_token']}"})
    assert info.status_code == 200 and PERSONAL_IDENTITY_CODE_CLAIM not in info.get_json()
    _, minimal = verified_id_token(env, redeem(env, log_in(env, "leena", scope="openid")).get_json()["id_token"])
    assert "name" not in minimal and minimal["roles"] == ["client"]


def test_the_subject_is_stable_per_persona_and_opaque(env: Env, demo_json: dict[str, Any]) -> None:
    def sub(persona: str) -> str:
        return str(verified_id_token(env, redeem(env, log_in(env, persona)).get_json()["id_token"])[1]["sub"])

    first, again, other = sub("mikko"), sub("mikko"), sub("sari")
    assert first == again != other
    assert "mikko" not in first.lower() and MIKKO.hetu not in first and len(first) == 43


def test_another_worker_process_redeems_a_code_and_the_code_stays_single_use(env: Env) -> None:
    """Two app instances with their own engines, as two gunicorn workers, on one database and instance."""
    other_broker = build_broker(env.broker.settings, clock=env.clock)
    other = create_app(env.broker.settings, broker=other_broker)
    try:
        login = log_in(env)
        assert redeem(env, login, client=other.test_client()).status_code == 200
        again = redeem(env, login)
        assert again.status_code == 400 and error_of(again) == "invalid_grant"
    finally:
        other_broker.db.dispose()


def test_the_userinfo_endpoint_wants_a_valid_bearer_token(env: Env) -> None:
    nothing = env.client.get("/dev-idp/userinfo")
    assert nothing.status_code == 401 and nothing.headers["WWW-Authenticate"] == 'Bearer realm="dev-idp"'
    made_up = env.client.get("/dev-idp/userinfo", headers={"Authorization": "Bearer devidp_at_" + "x" * 43})
    assert made_up.status_code == 401 and 'error="invalid_token"' in made_up.headers["WWW-Authenticate"]
    granted = redeem(env, log_in(env, "dpo")).get_json()
    env.clock.advance(seconds=301)
    expired = env.client.get("/dev-idp/userinfo", headers={"Authorization": f"Bearer {granted['access_token']}"})
    assert expired.status_code == 401


# --- The authorization request ---


def test_a_post_without_the_csrf_token_is_refused(env: Env) -> None:
    page = login_page(env.client, authorization_params(env, new_login(env)))
    action, _ = form_of(page)
    response = env.client.post(action, data={"persona": "mikko"})
    assert response.status_code == 400
    assert "Location" not in response.headers and "<h1>Login cannot continue</h1>" in response.get_data(as_text=True)


@pytest.mark.parametrize("tamper", ["other_browser", "changed_request", "bad_mac", "expired", "extra_field"])
def test_a_csrf_token_is_bound_to_the_browser_the_request_and_a_time(env: Env, tamper: str) -> None:
    login = new_login(env)
    page = login_page(env.client, authorization_params(env, login))
    action, token = form_of(page)
    data = {"csrf_token": token, "persona": "leena"}
    if tamper == "other_browser":
        env.client.delete_cookie("devidp_browser", path="/dev-idp/authorize")
    elif tamper == "changed_request":
        action = "/dev-idp/authorize?" + urlencode(authorization_params(env, login, scope="openid"))
    elif tamper == "bad_mac":
        data["csrf_token"] = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif tamper == "expired":
        env.clock.advance(seconds=601)
    elif tamper == "extra_field":
        data["scope"] = "openid"
    assert env.client.post(action, data=data).status_code == 400


def test_cancelling_sends_access_denied_and_the_state_back(env: Env) -> None:
    login = new_login(env)
    page = login_page(env.client, authorization_params(env, login))
    action, token = form_of(page)
    params = callback_params(env.client.post(action, data={"csrf_token": token, "action": "cancel"}))
    assert (params["error"], params["state"]) == ("access_denied", login.state)
    assert "code" not in params


def test_an_unknown_persona_is_refused(env: Env) -> None:
    page = login_page(env.client, authorization_params(env, new_login(env)))
    assert choose(env.client, page, "mallory").status_code == 400


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),  # PKCE required
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),  # absent means plain (RFC 7636 §4.3)
        ({"nonce": None}, "invalid_request"),
        ({"nonce": "n" * 201}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),  # not an OpenID Connect request
        ({"scope": "openid email"}, "invalid_scope"),  # refused, not silently narrowed
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"prompt": "none"}, "login_required"),  # no session at the dev IdP, ever
        ({"request": "eyJ..."}, "request_not_supported"),
    ],
)
def test_a_bad_authentication_request_goes_back_to_the_client_with_its_error(
    env: Env, overrides: dict[str, str | None], error: str
) -> None:
    login = new_login(env)
    params = callback_params(login_page(env.client, authorization_params(env, login, **overrides)))
    assert params["error"] == error
    assert params["state"] == login.state


def test_a_used_nonce_is_refused(env: Env) -> None:
    first = log_in(env)
    login = new_login(env)
    params = callback_params(login_page(env.client, authorization_params(env, login, nonce=first.nonce)))
    assert params["error"] == "invalid_request"


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": "https://evil.example/portal/auth/callback"},
        {"redirect_uri": "http://broker.test/portal/auth/callback/../../evil"},
        {"redirect_uri": None},
        {"client_id": "someone-else"},
        {"client_id": None},
    ],
)
def test_a_request_with_an_unverified_client_or_redirect_uri_is_shown_and_never_redirected(
    env: Env, overrides: dict[str, str | None]
) -> None:
    page = login_page(env.client, authorization_params(env, new_login(env), **overrides))
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert "Login cannot continue" in page.get_data(as_text=True)


# --- The token request ---


def test_a_wrong_pkce_verifier_is_invalid_grant_and_spends_the_code(env: Env) -> None:
    login = log_in(env)
    wrong = redeem(env, login, code_verifier=secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and error_of(wrong) == "invalid_grant"
    assert error_of(redeem(env, login)) == "invalid_grant"  # no second guess


@pytest.mark.parametrize("verifier", [None, "", "short", "ä" * 50])
def test_a_missing_or_malformed_pkce_verifier_is_invalid_grant(env: Env, verifier: str | None) -> None:
    response = redeem(env, log_in(env), code_verifier=verifier)
    assert response.status_code == 400 and error_of(response) == "invalid_grant"


def test_a_reused_code_is_invalid_grant_and_revokes_the_token_it_gave(env: Env) -> None:
    login = log_in(env)
    first = redeem(env, login)
    assert first.status_code == 200
    bearer = {"Authorization": f"Bearer {first.get_json()['access_token']}"}
    assert env.client.get("/dev-idp/userinfo", headers=bearer).status_code == 200
    again = redeem(env, login)
    assert again.status_code == 400 and error_of(again) == "invalid_grant"
    assert env.client.get("/dev-idp/userinfo", headers=bearer).status_code == 401  # RFC 6749 §4.1.2


def test_eight_concurrent_redemptions_of_one_code_get_one_token_which_the_replays_void(env: Env) -> None:
    login = log_in(env)
    start = threading.Barrier(REPLAYS)

    def attempt() -> tuple[int, dict[str, Any]]:
        client = env.app.test_client()
        start.wait()  # all requests leave together
        response = redeem(env, login, client=client)
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(max_workers=REPLAYS) as pool:
        outcomes = [future.result() for future in [pool.submit(attempt) for _ in range(REPLAYS)]]
    assert Counter(status for status, _ in outcomes) == Counter({200: 1, 400: REPLAYS - 1})
    assert {body["error"] for status, body in outcomes if status == 400} == {"invalid_grant"}
    (winner,) = [body for status, body in outcomes if status == 200]
    bearer = {"Authorization": f"Bearer {winner['access_token']}"}
    assert env.client.get("/dev-idp/userinfo", headers=bearer).status_code == 401


def test_an_expired_code_is_invalid_grant(env: Env) -> None:
    login = log_in(env)
    env.clock.advance(seconds=61)
    response = redeem(env, login)
    assert response.status_code == 400 and error_of(response) == "invalid_grant"


def test_a_code_redeemed_within_its_60_seconds_works(env: Env) -> None:
    login = log_in(env)
    env.clock.advance(seconds=59)
    assert redeem(env, login).status_code == 200


def test_a_different_redirect_uri_at_the_token_endpoint_is_invalid_grant(env: Env) -> None:
    response = redeem(env, log_in(env), redirect_uri=f"{env.issuer}/portal/auth/other")
    assert response.status_code == 400 and error_of(response) == "invalid_grant"


def test_an_unknown_code_is_invalid_grant(env: Env) -> None:
    login = log_in(env)
    login.code = "devidp_ac_" + secrets.token_urlsafe(32)
    assert error_of(redeem(env, login)) == "invalid_grant"


@pytest.mark.parametrize("how", ["wrong_secret", "no_authentication", "client_secret_post"])
def test_the_client_must_authenticate_with_its_secret_in_basic_auth(env: Env, how: str) -> None:
    login = log_in(env)
    form = {
        "grant_type": "authorization_code",
        "code": login.code,
        "redirect_uri": login.redirect_uri,
        "code_verifier": login.verifier,
    }
    headers = {}
    if how == "wrong_secret":
        headers["Authorization"] = basic("portal", "not-the-secret")
    elif how == "client_secret_post":
        form |= {"client_id": "portal", "client_secret": portal_client_settings(env.broker.settings)["client_secret"]}
    response = env.client.post("/dev-idp/token", data=form, headers=headers)
    assert response.status_code == 401 and error_of(response) == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_token_parameters_in_the_url_or_sent_twice_are_refused(env: Env) -> None:
    login = log_in(env)
    in_url = env.client.post(f"/dev-idp/token?code={login.code}", data={"grant_type": "authorization_code"})
    assert in_url.status_code == 400 and error_of(in_url) == "invalid_request"
    twice = env.client.post("/dev-idp/token", data={"grant_type": ["authorization_code", "authorization_code"]})
    assert twice.status_code == 400 and error_of(twice) == "invalid_request"


# --- Where it runs, and what it keeps ---


def test_it_refuses_to_mount_in_production(env: Env) -> None:
    production = replace(env.broker.settings, mode="production")
    app = Flask("production")
    app.extensions["broker"] = env.broker
    with pytest.raises(ConfigurationError, match="only in demo or test mode"):
        init_dev_idp(app, production)
    assert not any(rule.rule.startswith("/dev-idp") for rule in app.url_map.iter_rules())
    with pytest.raises(ConfigurationError):
        portal_client_settings(production)


def test_a_production_app_has_no_dev_idp(env: Env) -> None:
    app = create_app(replace(env.broker.settings, mode="production"), broker=env.broker)
    assert app.test_client().get("/dev-idp/.well-known/openid-configuration").status_code == 404


def test_the_files_are_private_and_a_restart_keeps_them(env: Env) -> None:
    folder: Path = env.broker.settings.instance_path / "dev-idp"
    assert folder.stat().st_mode & 0o777 == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["portal-client.json", "secret.json", "signing-key.jwk"]
    assert all((folder / name).stat().st_mode & 0o777 == 0o600 for name in names)
    before = {name: (folder / name).read_bytes() for name in names}
    settings = portal_client_settings(env.broker.settings)
    create_app(env.broker.settings, broker=env.broker)  # a second start, e.g. another worker
    assert {name: (folder / name).read_bytes() for name in names} == before
    assert settings == portal_client_settings(env.broker.settings)
    assert settings["client_id"] == "portal"
    assert settings["server_metadata_url"] == f"{env.issuer}/dev-idp/.well-known/openid-configuration"
    assert settings["client_kwargs"]["code_challenge_method"] == "S256"


def test_a_key_file_open_to_others_stops_the_start(env: Env) -> None:
    key = env.broker.settings.instance_path / "dev-idp" / "signing-key.jwk"
    key.chmod(0o644)
    with pytest.raises(ConfigurationError, match="0600"):
        create_app(env.broker.settings, broker=env.broker)
