"""The development identity provider: a real OpenID Connect provider (authorization code flow with PKCE) that the
client portal logs in against in demo and test mode, mounted at `/dev-idp/`. It is never mounted in production,
where the portal uses a real provider such as Suomi.fi e-Identification (docs/portal-login.md).

For the portal:

- `portal_client_settings(settings)` — the keyword arguments for `authlib.integrations.flask_client.OAuth.register`
  (client id and secret, discovery URL, scope and PKCE);
- `portal_redirect_uri(settings)` — the one registered redirect URI, `{issuer}/portal/auth/callback`;
- `PERSONAL_IDENTITY_CODE_CLAIM` — the claim holding the identity code (`urn:oid:1.2.246.21`), sent only with the
  scope `personal_identity_code`.

Modules: `credentials` (the IdP's key and secret and the portal's registration, files in `instance/dev-idp/`),
`personas` (who one can log in as, and their claims), `store` (codes and tokens in the database, one unit of
work each), `server` (Authlib's authorization server, grant and extensions), `views` (the Flask blueprint).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from broker.config import Settings
from broker.devidp.credentials import (
    PORTAL_CLIENT_ID,
    TOKEN_ENDPOINT_AUTH_METHOD,
    load_or_create,
    portal_redirect_uri,
    read_portal_client,
)
from broker.devidp.personas import (
    PERSONAL_IDENTITY_CODE_CLAIM,
    PERSONAL_IDENTITY_CODE_SCOPE,
    SCOPES,
    Persona,
    load_personas,
)
from broker.devidp.server import ACR, ID_TOKEN_ALG, DevAuthorizationServer
from broker.domain.errors import ConfigurationError

__all__ = [
    "ACR",
    "ALLOWED_MODES",
    "ID_TOKEN_ALG",
    "PATH",
    "PERSONAL_IDENTITY_CODE_CLAIM",
    "PERSONAL_IDENTITY_CODE_SCOPE",
    "PORTAL_CLIENT_ID",
    "SCOPES",
    "TOKEN_ENDPOINT_AUTH_METHOD",
    "Persona",
    "dev_idp_issuer",
    "init_dev_idp",
    "portal_client_settings",
    "portal_redirect_uri",
]

PATH = "/dev-idp"
ALLOWED_MODES = ("demo", "test")


def dev_idp_issuer(settings: Settings) -> str:
    """The IdP's issuer identifier (OpenID Connect Discovery 1.0 §3): the broker's issuer + `/dev-idp`."""
    return f"{settings.issuer}{PATH}"


def init_dev_idp(app: Flask, settings: Settings) -> None:
    """Mount the development identity provider on `app` (the Broker must be in `app.extensions["broker"]`).

    Refuses with ConfigurationError unless `settings.mode` is demo or test: an IdP that lets anyone log in as
    anyone must never run in production. Creates the IdP's key and secret and the portal's client registration
    in the instance's `dev-idp/` folder on first start; does not touch the database."""
    if settings.mode not in ALLOWED_MODES:
        raise ConfigurationError(
            f"the development identity provider runs only in demo or test mode, not in {settings.mode!r}"
        )
    broker = app.extensions.get("broker")
    if broker is None:
        raise ConfigurationError("init_dev_idp needs the Broker in app.extensions['broker']")
    from broker.devidp.views import dev_idp_blueprint

    instance_path = settings.instance_path
    server = DevAuthorizationServer(
        broker=broker,
        issuer=dev_idp_issuer(settings),
        credentials=load_or_create(settings),
        personas=lambda: load_personas(instance_path),
    )
    app.extensions["dev_idp"] = server
    app.register_blueprint(dev_idp_blueprint(), url_prefix=PATH)


def portal_client_settings(settings: Settings) -> dict[str, Any]:
    """How the portal registers the dev IdP with Authlib's Flask client::

        oauth.register("login", **portal_client_settings(settings))

    Returns `client_id`, `client_secret`, `server_metadata_url` and `client_kwargs` (scope, `S256` PKCE and the
    `client_secret_basic` token-endpoint authentication). Read from `instance/dev-idp/portal-client.json`, which
    `init_dev_idp` writes on first start; ConfigurationError outside demo and test mode, or before that start."""
    if settings.mode not in ALLOWED_MODES:
        raise ConfigurationError(
            f"the development identity provider's client settings exist only in demo or test mode, not in "
            f"{settings.mode!r}; configure BROKER_OIDC_METADATA_URL and BROKER_OIDC_CLIENT_ID instead"
        )
    registration = read_portal_client(settings)
    return {
        "client_id": str(registration["client_id"]),
        "client_secret": str(registration["client_secret"]),
        "server_metadata_url": f"{dev_idp_issuer(settings)}/.well-known/openid-configuration",
        "client_kwargs": {
            "scope": " ".join(SCOPES),
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": TOKEN_ENDPOINT_AUTH_METHOD,
        },
    }
