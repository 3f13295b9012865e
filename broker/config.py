"""Settings, read from the environment once by the app factory — never at import time.

Outside demo and test mode a missing setting stops the start: there are no development defaults on a
production path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.domain.errors import ConfigurationError


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    issuer: str
    mode: str = "production"  # production | demo | test
    access_token_ttl: int = 300  # seconds; RFC 9700 §2.2: keep access tokens short-lived
    assertion_max_lifetime: int = 60
    assertion_iat_skew: int = 10
    max_body_bytes: int = 1024 * 1024
    consent_request_ttl_days: int = 30
    # The client portal's OpenID provider (docs/portal-login.md). In demo and test mode the portal logs in against
    # the development provider at /dev-idp/ and these stay unset; in production the portal is enabled by setting
    # them, and then the discovery URL and the client id are required.
    oidc_metadata_url: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keys_path(self) -> Path:
        return self.instance_path / "keys"

    @property
    def portal_enabled(self) -> bool:
        """The client portal runs in demo and test mode (against the development provider), and in production
        when its OpenID provider is configured."""
        return self.mode in ("demo", "test") or self.oidc_metadata_url is not None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        mode = overrides.pop("mode", env.get("BROKER_MODE", "production"))
        instance = Path(overrides.pop("instance_path", env.get("BROKER_INSTANCE_PATH", "instance"))).resolve()
        database_url = overrides.pop("database_url", env.get("BROKER_DATABASE_URL"))
        issuer = overrides.pop("issuer", env.get("BROKER_ISSUER"))
        if mode not in {"production", "demo", "test"}:
            raise ConfigurationError(f"BROKER_MODE must be production, demo or test, not {mode!r}")
        if database_url is None:
            if mode == "production":
                raise ConfigurationError("BROKER_DATABASE_URL must be set in production")
            database_url = f"sqlite:///{instance / 'broker.db'}"
        if issuer is None:
            if mode == "production":
                raise ConfigurationError("BROKER_ISSUER (the broker's https URL) must be set in production")
            issuer = "http://127.0.0.1:8000"
        if mode == "production" and not issuer.startswith("https://"):
            raise ConfigurationError("BROKER_ISSUER must be an https URL in production (RFC 8414 §2)")
        oidc = _oidc_settings(env, mode)
        settings = cls(instance_path=instance, database_url=database_url, issuer=issuer.rstrip("/"), mode=mode, **oidc)
        return replace(settings, **overrides)


def _oidc_settings(env: dict[str, str], mode: str) -> dict[str, str | None]:
    """The portal's OpenID provider. Production without any of these runs without the portal, as before; with
    any of them, the discovery URL (https) and the client id must be there too. The secret is optional: a provider
    may authenticate the portal otherwise."""
    metadata_url = env.get("BROKER_OIDC_METADATA_URL") or None
    client_id = env.get("BROKER_OIDC_CLIENT_ID") or None
    client_secret = env.get("BROKER_OIDC_CLIENT_SECRET") or None
    if mode == "production" and (metadata_url or client_id or client_secret):
        if metadata_url is None or client_id is None:
            raise ConfigurationError(
                "the client portal needs BROKER_OIDC_METADATA_URL and BROKER_OIDC_CLIENT_ID in production "
                "(or none of the BROKER_OIDC_* settings, to run without the portal)"
            )
        if not metadata_url.startswith("https://"):
            raise ConfigurationError("BROKER_OIDC_METADATA_URL must be an https URL in production")
    return {"oidc_metadata_url": metadata_url, "oidc_client_id": client_id, "oidc_client_secret": client_secret}
