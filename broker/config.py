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
    # The audit log (broker/services/sequencer.py). The origin names the log in its checkpoints (default: the
    # issuer's host + "/audit-log"); the sink is a folder (relative to the instance folder) or an https URL; the
    # anchoring window is how long disclosures go on without a checkpoint reaching the sink (None: no gate, which
    # only test mode allows); the sequencer runs in every served process unless `audit_sequencer` is off.
    audit_origin: str | None = None
    audit_sink: str = "checkpoints"
    audit_sink_ca: str | None = None
    audit_batch_size: int = 256
    audit_interval: float = 1.0
    audit_anchor_window: int | None = 300
    audit_sequencer: bool = True
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
        settings = cls(
            instance_path=instance,
            database_url=database_url,
            issuer=issuer.rstrip("/"),
            mode=mode,
            **oidc,
            **_audit_settings(env, mode),
        )
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


def _audit_settings(env: dict[str, str], mode: str) -> dict[str, Any]:
    def number(name: str, default: float, minimum: float) -> float:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
        if value < minimum:
            raise ConfigurationError(f"{name} must be at least {minimum:g}")
        return value

    window_raw = env.get("BROKER_AUDIT_ANCHOR_WINDOW", "")
    if window_raw.lower() == "off":
        if mode != "test":
            raise ConfigurationError("BROKER_AUDIT_ANCHOR_WINDOW=off is allowed only in test mode")
        window = None
    else:
        window = int(number("BROKER_AUDIT_ANCHOR_WINDOW", 300, 10))
    sink = env.get("BROKER_AUDIT_SINK") or "checkpoints"
    if "://" in sink and not sink.startswith("https://"):
        raise ConfigurationError("BROKER_AUDIT_SINK must be a folder or an https URL")
    sequencer = env.get("BROKER_AUDIT_SEQUENCER", "on").lower()
    if sequencer not in {"on", "off"}:
        raise ConfigurationError("BROKER_AUDIT_SEQUENCER must be on or off")
    return {
        "audit_origin": env.get("BROKER_AUDIT_ORIGIN") or None,
        "audit_sink": sink,
        "audit_sink_ca": env.get("BROKER_AUDIT_SINK_CA") or None,
        "audit_batch_size": int(number("BROKER_AUDIT_BATCH_SIZE", 256, 1)),
        "audit_interval": number("BROKER_AUDIT_INTERVAL", 1.0, 0.05),
        "audit_anchor_window": window,
        "audit_sequencer": sequencer == "on",
    }
