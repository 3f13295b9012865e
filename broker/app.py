"""The application factory: the composition root that wires settings, database, keys, policy and HTTP."""

from __future__ import annotations

import logging
import re
import secrets
import threading
from datetime import UTC, datetime

from flask import Flask, Response, current_app, g, render_template, request
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from broker.adapters.database import Database, Timeouts
from broker.adapters.keystore import KeyStore
from broker.adapters.orm import PolicyVersionRow
from broker.adapters.uow import UnitOfWork
from broker.config import Settings
from broker.domain.clock import Clock, SystemClock
from broker.domain.errors import ConfigurationError, DatabaseUnavailableError
from broker.domain.model import SCOPES, Caller
from broker.http.errors import BrokerFlask, database_unavailable_response, register_error_handlers
from broker.services import Broker
from broker.services.audit_log import append_entry
from policies import Policy, load_policy

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def build_broker(
    settings: Settings, *, clock: Clock | None = None, policy: Policy | None = None, serving: bool = False
) -> Broker:
    """Open what the broker runs on. Keys are created on first start only outside production: a production
    instance must be given its keys (`broker keys init`) so that a misconfigured path never silently starts
    with fresh keys that cannot open the stored records. A broker `serving` requests bounds each statement and
    lock wait too (Settings, "Time limits"); command-line jobs over the whole log may rightly run longer."""
    settings.verify_test_switches()
    create_keys = settings.mode != "production"
    if not create_keys and not settings.keys_path.exists():
        raise ConfigurationError(
            f"no key store at {settings.keys_path.name}/ in the instance folder; run `broker keys init` first"
        )
    keys = KeyStore.open(settings.keys_path, create=create_keys)
    return Broker(
        settings=settings,
        db=Database(
            settings.database_url,
            timeouts=Timeouts(
                connect=settings.db_connect_timeout,
                pool=settings.db_pool_timeout,
                statement=settings.db_statement_timeout if serving else None,
                lock=settings.db_lock_timeout if serving else None,
            ),
        ),
        keys=keys,
        policy=policy or load_policy(),
        clock=clock or SystemClock(),
    )


def record_policy_version(broker: Broker) -> None:
    """Store the running policy's full text once, so every past decision can be re-read with its rules."""
    with broker.uow() as uow:
        if (
            uow.session.scalars(
                select(PolicyVersionRow.version).where(PolicyVersionRow.version == broker.policy.version)
            ).first()
            is None
        ):
            uow.session.add(
                PolicyVersionRow(
                    version=broker.policy.version, files=dict(broker.policy.files), first_loaded_at=broker.clock.now()
                )
            )
            uow.commit()


def _database_reachable(broker: Broker) -> bool:
    try:
        with broker.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def _log_token_issue(uow: UnitOfWork, caller: Caller, token_hash_prefix: str) -> None:
    """Every issued token is logged, in the token's own transaction: who got access, for whom, with which
    scopes. The token itself never is — only a prefix of its hash, enough for the DPO to match it."""
    broker: Broker = current_app.extensions["broker"]
    append_entry(
        uow,
        event="token:issue",
        now=broker.clock.now(),
        caller=caller,
        detail={"token_hash_prefix": token_hash_prefix, "scopes": sorted(caller.scopes)},
    )


def create_app(settings: Settings | None = None, *, broker: Broker | None = None) -> Flask:
    settings = settings or (broker.settings if broker else Settings.from_env())
    broker = broker or build_broker(settings, serving=True)
    # A broker started while its database is down answers /readyz with 503 until the database is back, instead
    # of failing to start; the policy version is then recorded before the first request that reaches it.
    policy_recorded = _database_reachable(broker)
    if policy_recorded:
        record_policy_version(broker)
    else:
        logging.getLogger("broker").warning("database not reachable at start")
    policy_lock = threading.Lock()

    app = BrokerFlask(__name__, template_folder="http/templates")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Consent Broker",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Consents, policy-checked disclosures and a verifiable log. "
                "Errors are RFC 9457 problem documents with a stable `code`."
            },
            "servers": [{"url": settings.issuer}],
            "security": [{"partner": []}],
        },
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    app.extensions["broker"] = broker

    from broker.devidp import init_dev_idp
    from broker.http.api import attestations as _attestation_routes  # noqa: F401 — withdrawal attestations
    from broker.http.api import audit as _audit_routes  # noqa: F401 — registers the audit routes on the API blueprint
    from broker.http.api import fhir as _fhir_routes  # noqa: F401 — FHIR and ISO/IEC TS 27560 routes
    from broker.http.api import webhooks as _webhook_routes  # noqa: F401 — webhook endpoints, the event feed
    from broker.http.api.views import PartnerApi, blp
    from broker.http.dpo import init_dpo
    from broker.http.limits import init_limits
    from broker.http.metrics import init_metrics
    from broker.http.portal import init_portal
    from broker.oauth import init_oauth

    api = PartnerApi(app)
    api.spec.components.security_scheme(
        "partner",
        {
            "type": "oauth2",
            "description": "client_credentials with private_key_jwt (RFC 7523); `aud` = the issuer. Tokens are "
            "DPoP-bound (RFC 9449): send `Authorization: DPoP <token>` and a fresh `DPoP` proof with every request",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": f"{settings.issuer}/oauth/token",
                    "scopes": dict(SCOPES),
                }
            },
        },
    )
    api.register_blueprint(blp)
    init_oauth(app, on_token_issued=_log_token_issue)
    if settings.mode in ("demo", "test"):
        # The portal's development OpenID provider at /dev-idp/ (broker/devidp); never mounted in production.
        init_dev_idp(app, settings)
    # The client portal at /portal/ (broker/http/portal); after the dev IdP, which it registers with in demo and
    # test mode. Not mounted in production unless its OpenID provider is configured.
    init_portal(app, settings)
    init_dpo(app, settings)  # the DPO workspace at /dpo/ (broker/http/dpo), on the portal's login and session
    register_error_handlers(app)  # after flask-smorest's, so that every error is a problem document

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.match(given) else secrets.token_hex(8)

    # Sizes and request rates, checked before anything is parsed (broker/http/limits.py); after the request id, which
    # its refusals carry.
    init_limits(app, settings)

    @app.before_request
    def _record_policy_version_late() -> None:
        nonlocal policy_recorded
        if policy_recorded or request.endpoint == "healthz":
            return
        with policy_lock:
            if not policy_recorded and _database_reachable(broker):
                record_policy_version(broker)
                policy_recorded = True

    # HSTS only where the broker is reached over https (production requires an https issuer): a browser ignores the
    # header over plain http anyway (RFC 6797 §8.1), and a development host must not be pinned to https by it.
    hsts = settings.issuer.startswith("https://")

    @app.after_request
    def _headers(response: Response) -> Response:
        """Every response, errors and redirects included (Flask runs this hook for an error handler's response too);
        docs/security.md, "Headers"."""
        response.headers["X-Request-Id"] = g.get("request_id", "")
        # OWASP ASVS 5.0 V14.3.2: nothing about a person may stay in a browser or shared cache (RFC 9111 §5.2.2.5).
        # A view may ask for caching only for what is public and the same for everyone: the OAuth metadata and JWKS,
        # and the portal's stylesheet and script (its static files), which hold no personal data.
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"  # OWASP ASVS 5.0 V3.4.4
        # OWASP ASVS 5.0 V3.4.6: no framing, on every response; pages that need more set their own full policy,
        # which always keeps frame-ancestors 'none' (broker/http/portal/security.py).
        response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        response.headers["Referrer-Policy"] = "no-referrer"  # OWASP ASVS 5.0 V3.4.5
        if hsts:  # OWASP ASVS 5.0 V3.4.1: a year, subdomains included (RFC 6797 §6.1)
            response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', mimetype="application/json")

    init_metrics(app, broker)  # GET /metrics (broker/http/metrics.py)

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            with broker.db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:
            unavailable = DatabaseUnavailableError("the database is not reachable")
            unavailable.__cause__ = error
            return database_unavailable_response(unavailable)
        return Response('{"status":"ready"}', mimetype="application/json")

    @app.get("/api/v1/docs")
    def api_docs() -> Response:
        """Browsable API documentation rendered on the server from the OpenAPI document (no third-party
        scripts or styles)."""
        spec = api.spec.to_dict()
        html = render_template("api_docs.html", spec=spec, generated_at=datetime.now(UTC))
        response = Response(html, mimetype="text/html")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        )
        return response

    return app
