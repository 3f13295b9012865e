"""The portal's OpenID Connect login, with Authlib's Flask client (docs/portal-login.md).

Authorization code flow with PKCE (`S256`), `state` and `nonce`, all made and kept by Authlib in the portal's
server-side session; the ID token is verified against the provider's published keys, with the issuer and the
audience pinned. The portal keeps the verified claims it needs, never the ID token: it holds the identity code,
which is turned into the broker's person id at once and forgotten (DESIGN.md invariant 6).

Which provider:

- demo and test mode: the development provider at `{issuer}/dev-idp` (broker/devidp), registered with
  `portal_client_settings(settings)`. It runs in this same application, so the portal's back-channel calls to it
  (discovery, keys, token) are handed to the application in-process rather than sent over the network: the
  issuer's URL is the one the browser uses, which the server may not reach from inside (a container's mapped
  port), and with one synchronous worker a call to itself would wait for itself. The browser's side of the flow
  — the redirects, the login page, the code in the callback — is the same as with any provider.
- production: `BROKER_OIDC_METADATA_URL`, `BROKER_OIDC_CLIENT_ID` and `BROKER_OIDC_CLIENT_SECRET`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.flask_client import FlaskOAuth2App, OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask
from requests.structures import CaseInsensitiveDict
from werkzeug.test import EnvironBuilder, run_wsgi_app

from broker.config import Settings
from broker.domain.errors import ConfigurationError

CLIENT_NAME = "login"
SCOPE = "openid profile personal_identity_code"
TOKEN_ENDPOINT_AUTH_METHOD = "client_secret_basic"  # noqa: S105  # nosec B105  # a method name (RFC 7591 §2)
#: Back-channel calls to a real provider give up after this many seconds.
TIMEOUT = 10


@dataclass(frozen=True)
class Provider:
    """What the views need: the registered Authlib client, its id (the ID token's audience) and the redirect
    URI registered with the provider."""

    client: FlaskOAuth2App
    client_id: str
    redirect_uri: str
    metadata_url: str

    def authorization_origin(self) -> str:
        """The origin the browser is sent to for the login, for the portal's `form-action` (a form whose answer
        redirects there, such as a POST after the session has expired, would otherwise be blocked)."""
        endpoint = self.client.server_metadata.get("authorization_endpoint") or self.metadata_url
        parts = urlsplit(str(endpoint))
        return f"{parts.scheme}://{parts.netloc}"


class _InProcessAdapter(requests.adapters.BaseAdapter):
    """Hands a `requests` call to the application's WSGI callable instead of the network."""

    def __init__(self, app: Flask, base_url: str) -> None:
        super().__init__()
        self.app = app
        self.base_url = base_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        body = request.body.encode("utf-8") if isinstance(request.body, str) else request.body
        builder = EnvironBuilder(
            path=url.path,
            query_string=url.query,
            method=request.method or "GET",
            headers=headers,
            data=body,
            base_url=self.base_url,
        )
        try:
            app_iter, status, answer_headers = run_wsgi_app(self.app, builder.get_environ(), buffered=True)
        finally:
            builder.close()
        response = requests.Response()
        response.status_code = int(status.split(" ", 1)[0])
        response.headers = CaseInsensitiveDict(dict(answer_headers))
        response._content = b"".join(app_iter)
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        return None


def _in_process_client(app: Flask, prefix: str, base_url: str) -> type[FlaskOAuth2App]:
    class Session(OAuth2Session):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mount(prefix, _InProcessAdapter(app, base_url))

    class Client(FlaskOAuth2App):  # type: ignore[misc]
        client_cls = Session

    return Client


def init_login(app: Flask, settings: Settings) -> Provider:
    """Register the portal's OpenID provider with Authlib's Flask client."""
    oauth = OAuth(app)
    if settings.mode in ("demo", "test"):
        from broker.devidp import dev_idp_issuer, portal_client_settings, portal_redirect_uri

        registration = portal_client_settings(settings)
        # The provider checks that a token request came over a secure transport (RFC 6749 §3.2; Authlib allows
        # https and loopback). A call handed over in-process never leaves the process: it is a loopback call.
        base_url = settings.issuer if settings.issuer.startswith("https://") else "http://localhost"
        client_cls = _in_process_client(app, f"{dev_idp_issuer(settings)}/", base_url)
        redirect_uri = portal_redirect_uri(settings)
    else:
        if not settings.oidc_metadata_url or not settings.oidc_client_id:
            raise ConfigurationError("the client portal needs BROKER_OIDC_METADATA_URL and BROKER_OIDC_CLIENT_ID")
        registration = {
            "client_id": settings.oidc_client_id,
            "client_secret": settings.oidc_client_secret,
            "server_metadata_url": settings.oidc_metadata_url,
            "client_kwargs": {
                "scope": SCOPE,
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": TOKEN_ENDPOINT_AUTH_METHOD,
                "default_timeout": TIMEOUT,
            },
        }
        client_cls = FlaskOAuth2App
        redirect_uri = f"{settings.issuer}/portal/auth/callback"
    client = oauth.register(CLIENT_NAME, client_cls=client_cls, **registration)
    return Provider(
        client=client,
        client_id=str(registration["client_id"]),
        redirect_uri=redirect_uri,
        metadata_url=str(registration["server_metadata_url"]),
    )


def verified_claims(provider: Provider) -> dict[str, Any]:
    """Finish the login at the callback: check `state`, redeem the code with the PKCE verifier, verify the ID
    token (signature, `exp`, `iat`, `nonce`, and the pinned `iss` and `aud`). Raises Authlib's OAuthError (or a
    joserfc error) when anything does not hold."""
    from authlib.integrations.flask_client import OAuthError

    issuer = provider.client.load_server_metadata()["issuer"]
    token = provider.client.authorize_access_token(
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": provider.client_id},
        }
    )
    claims = token.get("userinfo")
    provider.client.token = None  # Authlib keeps the token response for this request; the portal needs no more of it
    if not claims:
        # No ID token, or no nonce to check it against: not a login this portal can trust.
        raise OAuthError(error="invalid_id_token", description="no verified ID token")
    return dict(claims)
