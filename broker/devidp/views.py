"""The development identity provider's HTTP endpoints (OpenID Connect Core 1.0 and Discovery 1.0), under
`/dev-idp/`:

| path | what |
|---|---|
| `GET /.well-known/openid-configuration` | provider metadata (Discovery §3) |
| `GET /jwks.json` | the public signing key |
| `GET /authorize` | validates the authentication request, then a page listing the personas |
| `POST /authorize` | a persona chosen (or the login cancelled): back to the client with `code` and `state` |
| `POST /token` | authorization code → access token and ID token |
| `GET`, `POST /userinfo` | the persona's claims for a bearer access token (Core §5.3) |

The login page keeps no server-side state: each persona button posts back to the same URL, with the request's
parameters in the query string and a CSRF token that binds them, the browser (a cookie) and a time. Errors that
cannot be sent back to a verified redirect URI are shown as a page and never redirected (RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Blueprint, Response, current_app, jsonify, render_template, request
from markupsafe import Markup
from werkzeug.datastructures import MultiDict

from broker.devidp.credentials import TOKEN_ENDPOINT_AUTH_METHOD
from broker.devidp.personas import CLAIMS, SCOPES
from broker.devidp.server import ACCESS_TOKEN_PREFIX, ACR, ID_TOKEN_ALG, DevAuthorizationServer
from broker.devidp.store import find_token

_FORM = "application/x-www-form-urlencoded"
#: How long the login page's forms stay valid.
CSRF_TTL = 600
CSRF_COOKIE = "devidp_browser"
_BROWSER_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
_ACCESS_TOKEN = re.compile(re.escape(ACCESS_TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")
_FORM_FIELDS = {"csrf_token", "persona", "action"}

# The pages' only style, allowed by its hash in the Content-Security-Policy (CSP Level 3 §2.3.2), so that no
# inline script or other style could run.
CSS = (
    "body{font:1rem/1.5 system-ui,sans-serif;max-width:40rem;margin:0 auto;padding:1rem;color:#1a1a1a}"
    ".note{border-left:.25rem solid #b35c00;padding:.25rem .75rem;background:#fff4e5}"
    "ul{list-style:none;padding:0}li{margin:.75rem 0}"
    "button{font:inherit;padding:.5rem 1rem;min-width:16rem;text-align:left;cursor:pointer}"
    "button:focus{outline:.2rem solid #0b5fff;outline-offset:.15rem}"
    ".who{display:block;color:#444;font-size:.9rem}"
)
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode("utf-8")).digest()).decode("ascii")
# Marked safe once, here: a constant of this module, never user input (S704/B704).
_CSS_MARKUP = Markup(CSS)  # noqa: S704  # nosec B704  # a constant of this module


def dev_idp_blueprint() -> Blueprint:
    blueprint = Blueprint("dev_idp", __name__)
    blueprint.add_url_rule("/.well-known/openid-configuration", "discovery", discovery, methods=["GET"])
    blueprint.add_url_rule("/jwks.json", "jwks", jwks, methods=["GET"])
    blueprint.add_url_rule("/authorize", "authorize", authorize_page, methods=["GET"])
    blueprint.add_url_rule("/authorize", "authorize_submit", authorize_submit, methods=["POST"])
    blueprint.add_url_rule("/token", "token", token, methods=["POST"])
    blueprint.add_url_rule("/userinfo", "userinfo", userinfo, methods=["GET", "POST"])
    return blueprint


def _server() -> DevAuthorizationServer:
    server: DevAuthorizationServer = current_app.extensions["dev_idp"]
    return server


# --- Discovery ---


def provider_metadata(issuer: str) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3 (see broker.devidp.server on the signing algorithm)."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks.json",
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [ID_TOKEN_ALG],
        "token_endpoint_auth_methods_supported": [TOKEN_ENDPOINT_AUTH_METHOD],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", *CLAIMS],
        "acr_values_supported": [ACR],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


def discovery() -> Response:
    response = jsonify(provider_metadata(_server().issuer))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def jwks() -> Response:
    key = _server().credentials.signing_key
    response = jsonify({"keys": [dict(key.as_dict(private=False))]})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --- Authorization endpoint ---


def authorize_page() -> Response:
    server = _server()
    try:
        grant = server.get_consent_grant(end_user=None)
    except OAuth2Error as error:
        return _authorization_error(server, error)
    browser = request.cookies.get(CSRF_COOKIE, "")
    if not _BROWSER_ID.match(browser):
        browser = secrets.token_urlsafe(32)
    html = render_template(
        "devidp/authorize.html",
        css=_CSS_MARKUP,
        action=f"{request.path}?{request.query_string.decode('ascii', 'replace')}",
        csrf_token=csrf_token(server.credentials.csrf_key, browser, request.args, _now(server)),
        personas=list(server.personas().values()),
        scopes=grant.request.scope.split(),
        client_id=server.client.client_id,
    )
    response = _page(server, html, 200)
    response.set_cookie(
        CSRF_COOKIE,
        browser,
        max_age=CSRF_TTL,
        path=request.path,
        secure=server.issuer.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


def authorize_submit() -> Response:
    server = _server()
    form = request.form
    if set(form) - _FORM_FIELDS or any(len(form.getlist(name)) > 1 for name in form):
        return _error_page(server, "The form was not sent by the login page.")
    if not csrf_valid(
        server.credentials.csrf_key,
        request.cookies.get(CSRF_COOKIE, ""),
        form.get("csrf_token", ""),
        request.args,
        _now(server),
    ):
        return _error_page(server, "The login form has expired or was not sent from the login page. Start again.")
    persona = None
    if form.get("action") != "cancel":
        persona = server.personas().get(form.get("persona", ""))
        if persona is None:
            return _error_page(server, "There is no such persona.")
    try:
        grant = server.get_consent_grant(end_user=persona)
    except OAuth2Error as error:
        return _authorization_error(server, error)
    # With no persona (cancelled) Authlib answers access_denied to the client (RFC 6749 §4.1.2.1).
    response: Response = server.create_authorization_response(grant_user=persona, grant=grant)
    return response


def _authorization_error(server: DevAuthorizationServer, error: OAuth2Error) -> Response:
    if error.redirect_uri:  # the client and its redirect URI are verified: tell the client
        response: Response = server.handle_error_response(None, error)
        return response
    return _error_page(server, f"{error.error}: {error.description or 'the login request is not valid'}")


def _error_page(server: DevAuthorizationServer, message: str) -> Response:
    html = render_template("devidp/error.html", css=_CSS_MARKUP, message=message)
    return _page(server, html, 400)


def _page(server: DevAuthorizationServer, html: str, status: int) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    # form-action also governs where a form's redirect may go (CSP Level 3 §6.4.1): the client's callback.
    callback = urlsplit(server.client.registration.redirect_uri)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self' {callback.scheme}://"
        f"{callback.netloc}; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def _now(server: DevAuthorizationServer) -> int:
    return int(server.broker.clock.now().timestamp())


def csrf_token(key: bytes, browser: str, args: MultiDict[str, str], now: int) -> str:
    """`<issued>.<HMAC(key, browser, issued, the authorization request's parameters)>`."""
    return f"{now}.{_csrf_mac(key, browser, now, args)}"


def csrf_valid(key: bytes, browser: str, token: str, args: MultiDict[str, str], now: int) -> bool:
    issued_text, _, mac = token.partition(".")
    if not (_BROWSER_ID.match(browser) and issued_text.isdigit() and len(issued_text) <= 12):
        return False
    issued = int(issued_text)
    if not 0 <= now - issued <= CSRF_TTL:
        return False
    return hmac.compare_digest(mac.encode("ascii", "replace"), _csrf_mac(key, browser, issued, args).encode())


def _csrf_mac(key: bytes, browser: str, issued: int, args: MultiDict[str, str]) -> str:
    bound = json.dumps([browser, issued, sorted(args.items(multi=True))], separators=(",", ":"))
    digest = hmac.new(key, bound.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- Token endpoint ---


def token() -> Response:
    server = _server()
    problem = _token_request_problem()
    if problem:
        response = jsonify({"error": "invalid_request", "error_description": problem})
        response.status_code = 400
        response.headers["Cache-Control"] = "no-store"
        return response
    try:
        result: Response = server.create_token_response()
    except OAuth2Error as error:  # raised before Authlib's own handler, e.g. insecure transport
        result = server.handle_error_response(None, error)
    return result


def _token_request_problem() -> str | None:
    """RFC 6749 §3.2: parameters in a form-encoded body, never in the URL, each at most once."""
    if request.args:
        return "Parameters must be sent in the request body, not in the URL."
    if request.mimetype != _FORM:
        return f"The request body must be {_FORM}."
    if any(len(request.form.getlist(name)) > 1 for name in request.form):
        return "A parameter is sent more than once."
    return None


# --- UserInfo endpoint ---


def userinfo() -> Response:
    """OpenID Connect Core 1.0 §5.3; the bearer token only in the Authorization header (RFC 6750 §2.1)."""
    server = _server()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        return _bearer_challenge(None)
    granted = find_token(server.broker, value) if _ACCESS_TOKEN.fullmatch(value) else None
    persona = server.personas().get(granted.login) if granted else None
    if granted is None or persona is None or "openid" not in granted.scope.split():
        return _bearer_challenge("invalid_token")
    response = jsonify(server.claims(persona, granted.scope))
    response.headers["Cache-Control"] = "no-store"
    return response


def _bearer_challenge(error: str | None) -> Response:
    """RFC 6750 §3: no error code when the request carried no token at all, `invalid_token` otherwise."""
    if error:
        response = jsonify({"error": error, "error_description": "The access token is not valid."})
        response.headers["WWW-Authenticate"] = f'Bearer realm="dev-idp", error="{error}"'
    else:
        response = jsonify({"error_description": "A bearer access token is required."})
        response.headers["WWW-Authenticate"] = 'Bearer realm="dev-idp"'
    response.status_code = 401
    return response
