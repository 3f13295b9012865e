"""Settings, read from the environment once by the app factory — never at import time.

Outside demo and test mode a missing setting stops the start: there are no development defaults on a
production path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from limits import parse_many

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
    # How long a recipient has to say what it did with data it received under a consent that was then withdrawn
    # (deleted, or retained under a statute) before the silence goes to the DPO's anomaly queue (issue #8).
    attestation_due_days: int = 14
    # A bearer token that /metrics requires when set (BROKER_METRICS_TOKEN); unset, /metrics is open like /healthz
    # and should be reachable only from the operator's network (docs/operations.md).
    metrics_token: str | None = None
    # Private networks where partner systems take their events (BROKER_WEBHOOK_NETWORKS, comma-separated CIDR blocks,
    # e.g. a municipal network reached over a VPN): webhook deliveries go to public addresses and to these only
    # (broker/services/webhooks.py, docs/webhooks.md).
    webhook_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    # How long partner events are kept once their deliveries are over (BROKER_EVENT_RETENTION_DAYS, at least 7): the
    # window in which a partner can catch up from the feed (GET /api/v1/events) after an outage
    # (broker/services/jobs.py, docs/webhooks.md).
    event_retention_days: int = 90
    # How long the first response to a request with an Idempotency-Key is kept for its retries
    # (BROKER_IDEMPOTENCY_KEY_TTL, seconds; broker/services/idempotency.py, docs/api.md).
    idempotency_key_ttl: int = 24 * 3600
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
    # Time limits, in seconds, that keep a request from hanging on its database (docs/security.md, "Database
    # unavailable"): a request whose database is unreachable or stuck is answered 503 with Retry-After well before
    # gunicorn ends a worker that has been silent for `request_timeout` (its `timeout`; 30 s, gunicorn's default).
    # - connect 5: a reachable PostgreSQL accepts a connection in milliseconds, a TLS one over a slow link in well
    #   under a second; an address that does not answer is given up after this (libpq connect_timeout, 2 at least).
    # - pool 5: a sync worker uses one pooled connection per request (plus the sequencer's two), so waiting for one
    #   means connections are stuck; better a prompt 503 than a queue.
    # - statement 10: the broker's statements take milliseconds (docs/benchmarks.md); a statement this slow means an
    #   overloaded or stuck database (PostgreSQL statement_timeout; served processes only, not command-line jobs).
    # - lock 5: the rows a request locks are held for one short transaction (PostgreSQL lock_timeout, SQLite's busy
    #   timeout; served processes only).
    # connect + pool + statement must stay below request_timeout, so that one slow step cannot use it all.
    request_timeout: int = 30
    db_connect_timeout: int = 5
    db_pool_timeout: float = 5.0
    db_statement_timeout: float = 10.0
    db_lock_timeout: float = 5.0
    # DPoP (RFC 9449; broker/oauth/dpop.py): partners' access tokens are bound to a key pair of theirs and every
    # request carries a proof signed with it. Required unless turned off (BROKER_REQUIRE_DPOP=off). A proof's `iat`
    # may be `dpop_max_age` seconds old or `dpop_iat_skew` seconds ahead. Server nonces (§8, §9; BROKER_DPOP_NONCES)
    # are off by default; when on, a nonce is good for one to two steps of `dpop_nonce_step` seconds.
    require_dpop: bool = True
    dpop_max_age: int = 60
    dpop_iat_skew: int = 10
    dpop_nonces: bool = False
    dpop_nonce_step: int = 120
    # Test mode only (BROKER_TEST_DISABLE_DECISION_LOCK=on): disclosures decide without the person row's share lock
    # on PostgreSQL, so that the withdrawal-race test can show that its harness finds the race the lock prevents
    # (tests/integration/test_withdrawal_race.py, docs/security.md). Outside test mode the start is refused, and the
    # `decision_lock` property ignores it should a Settings be built some other way.
    test_disable_decision_lock: bool = False
    # Abuse limits (broker/http/limits.py, docs/security.md "Abuse limits"): request rates in the `limits` notation
    # ("600/minute", several separated by ";"), None for none. `rate_limit_api` per partner; the others per client
    # address, found behind `trusted_proxies` reverse proxies in X-Forwarded-For. Counted in Redis when `redis_url` is
    # set (under `rate_limit_prefix`, so that deployments can share one Redis), else in each process's memory.
    rate_limit_api: str | None = "600/minute"
    rate_limit_unauthenticated: str | None = "60/minute"
    rate_limit_oauth: str | None = "60/minute"
    rate_limit_login: str | None = "60/minute"
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    rate_limit_prefix: str = "consent-broker"
    trusted_proxies: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keys_path(self) -> Path:
        return self.instance_path / "keys"

    @property
    def portal_enabled(self) -> bool:
        """The client portal runs in demo and test mode (against the development provider), and in production
        when its OpenID provider is configured."""
        return self.mode in ("demo", "test") or self.oidc_metadata_url is not None

    @property
    def decision_lock(self) -> bool:
        """Whether disclosures lock the person row for their decision (DESIGN.md invariant 3). Always true outside
        test mode, whatever `test_disable_decision_lock` says."""
        return not (self.test_disable_decision_lock and self.mode == "test")

    def verify_test_switches(self) -> None:
        """Raise ConfigurationError when a test-only switch is on outside test mode."""
        if self.test_disable_decision_lock and self.mode != "test":
            raise ConfigurationError(
                f"BROKER_TEST_DISABLE_DECISION_LOCK is allowed only in test mode, not in {self.mode} mode: "
                "without the lock a withdrawal would not be immediate (DESIGN.md invariant 3)"
            )

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
            idempotency_key_ttl=_idempotency_key_ttl(env),
            **oidc,
            **_audit_settings(env, mode),
            **_database_settings(env),
            **_dpop_settings(env),
            test_disable_decision_lock=_switch(env, "BROKER_TEST_DISABLE_DECISION_LOCK"),
            metrics_token=env.get("BROKER_METRICS_TOKEN") or None,
            webhook_networks=_networks(env, "BROKER_WEBHOOK_NETWORKS"),
            event_retention_days=_whole_days(env, "BROKER_EVENT_RETENTION_DAYS", default=90, minimum=7),
            **_limit_settings(env),
        )
        settings = replace(settings, **overrides)
        settings.verify_test_switches()
        return settings


def _whole_days(env: dict[str, str], name: str, *, default: int, minimum: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise ConfigurationError(f"{name} must be a whole number of days, at least {minimum}, not {value!r}")
    return int(value)


def _networks(env: dict[str, str], name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    found: list[IPv4Network | IPv6Network] = []
    for item in (part.strip() for part in env.get(name, "").split(",")):
        if not item:
            continue
        try:
            network = ip_network(item, strict=True)
        except ValueError as error:
            raise ConfigurationError(
                f"{name}: {item!r} is not a network in CIDR notation such as 10.20.0.0/16 ({error})"
            ) from None
        if network.is_loopback or network.is_link_local or network.is_multicast or network.is_unspecified:
            raise ConfigurationError(f"{name}: {item!r} is a loopback, link-local, multicast or unspecified network")
        found.append(network)
    return tuple(found)


def _switch(env: dict[str, str], name: str) -> bool:
    value = env.get(name, "off").lower() or "off"
    if value not in {"on", "off"}:
        raise ConfigurationError(f"{name} must be on or off, not {env[name]!r}")
    return value == "on"


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


def _database_settings(env: dict[str, str]) -> dict[str, Any]:
    """BROKER_REQUEST_TIMEOUT and BROKER_DB_*_TIMEOUT (seconds; the defaults and their reasons are on Settings)."""

    def seconds(name: str, default: float, minimum: float) -> float:
        raw = env.get(name, "")
        if raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number of seconds, not {raw!r}") from None
        if not minimum <= value <= 3600:
            raise ConfigurationError(f"{name} must be from {minimum:g} to 3600 seconds")
        return value

    found = {
        "request_timeout": int(seconds("BROKER_REQUEST_TIMEOUT", 30, 5)),
        "db_connect_timeout": int(seconds("BROKER_DB_CONNECT_TIMEOUT", 5, 2)),
        "db_pool_timeout": seconds("BROKER_DB_POOL_TIMEOUT", 5.0, 0.1),
        "db_statement_timeout": seconds("BROKER_DB_STATEMENT_TIMEOUT", 10.0, 0.1),
        "db_lock_timeout": seconds("BROKER_DB_LOCK_TIMEOUT", 5.0, 0.1),
    }
    waits = found["db_connect_timeout"] + found["db_pool_timeout"] + found["db_statement_timeout"]
    if waits >= found["request_timeout"]:
        raise ConfigurationError(
            f"BROKER_DB_CONNECT_TIMEOUT + BROKER_DB_POOL_TIMEOUT + BROKER_DB_STATEMENT_TIMEOUT ({waits:g} s) must be "
            f"less than BROKER_REQUEST_TIMEOUT ({found['request_timeout']} s): a request must be able to answer "
            "503 before its worker is ended"
        )
    return found


def _dpop_settings(env: dict[str, str]) -> dict[str, Any]:
    def on_off(name: str, default: bool) -> bool:
        raw = env.get(name, "").lower()
        if raw == "":
            return default
        if raw not in {"on", "off"}:
            raise ConfigurationError(f"{name} must be on or off, not {env[name]!r}")
        return raw == "on"

    def seconds(name: str, default: int, minimum: int, maximum: int) -> int:
        raw = env.get(name, "")
        if raw == "":
            return default
        if not raw.isdigit() or not minimum <= int(raw) <= maximum:
            raise ConfigurationError(f"{name} must be a whole number of seconds from {minimum} to {maximum}")
        return int(raw)

    return {
        "require_dpop": on_off("BROKER_REQUIRE_DPOP", True),
        "dpop_nonces": on_off("BROKER_DPOP_NONCES", False),
        # Longer windows keep more used proof ids and let a captured proof live longer (RFC 9449 §11.1).
        "dpop_max_age": seconds("BROKER_DPOP_MAX_AGE", 60, 5, 600),
        "dpop_nonce_step": seconds("BROKER_DPOP_NONCE_STEP", 120, 10, 3600),
    }


def _idempotency_key_ttl(env: dict[str, str]) -> int:
    # A minute at least, so that a client's quick retries are covered; a week at most, as stored responses may hold
    # disclosed records (sealed, but kept only as long as a retry is plausible).
    raw = env.get("BROKER_IDEMPOTENCY_KEY_TTL", "")
    if raw == "":
        return 24 * 3600
    if not raw.isdigit() or not 60 <= int(raw) <= 7 * 24 * 3600:
        raise ConfigurationError("BROKER_IDEMPOTENCY_KEY_TTL must be a whole number of seconds from 60 to 604800")
    return int(raw)


def _limit_settings(env: dict[str, str]) -> dict[str, Any]:
    """BROKER_RATE_LIMIT_API, _UNAUTHENTICATED, _OAUTH and _LOGIN: rates, or "off"; BROKER_RATE_LIMITS=off turns them
    all off (benchmarks; a deployment that limits rates in front of the broker)."""
    every = env.get("BROKER_RATE_LIMITS", "on").lower() or "on"
    if every not in {"on", "off"}:
        raise ConfigurationError(f"BROKER_RATE_LIMITS must be on or off, not {env['BROKER_RATE_LIMITS']!r}")
    found: dict[str, Any] = {}
    for name in ("api", "unauthenticated", "oauth", "login"):
        variable = f"BROKER_RATE_LIMIT_{name.upper()}"
        raw = env.get(variable, "").strip()
        if every == "off" or raw.lower() == "off":
            found[f"rate_limit_{name}"] = None
        elif raw:
            try:
                parse_many(raw)
            except ValueError:
                raise ConfigurationError(
                    f"{variable} must be rates such as '600/minute' (several separated by ';') or off, not {raw!r}"
                ) from None
            found[f"rate_limit_{name}"] = raw
    redis_url = env.get("BROKER_REDIS_URL") or None
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "redis+unix://")):
        raise ConfigurationError("BROKER_REDIS_URL must be a redis://, rediss:// or redis+unix:// URL")
    found["redis_url"] = redis_url
    if env.get("BROKER_RATE_LIMIT_PREFIX"):
        found["rate_limit_prefix"] = env["BROKER_RATE_LIMIT_PREFIX"]
    proxies = env.get("BROKER_TRUSTED_PROXIES", "0")
    if not proxies.isdigit() or int(proxies) > 10:
        raise ConfigurationError("BROKER_TRUSTED_PROXIES must be the number of reverse proxies in front, 0 to 10")
    found["trusted_proxies"] = int(proxies)
    return found
