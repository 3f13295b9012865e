"""The client portal (docs/portal.md): server-rendered pages at `/portal/` where a person — or someone acting for
them — sees their consent requests, consents, who has seen their information and on what basis, and changes it.

- `views` — the pages (a Flask blueprint), thin over `broker.services.person_portal`;
- `login` — OpenID Connect login with Authlib's Flask client (docs/portal-login.md);
- `sessions` — server-side sessions (`portal_sessions`), the cookie holding only a random token;
- `security` — CSRF tokens and the response headers;
- `i18n` — Finnish, Swedish and English with Flask-Babel (catalogues in `broker/translations/`);
- `labels` — what the person reads instead of an identifier;
- `proof` — the proof of each entry of the person's log, checked in the browser or offline.

Templates are in `broker/http/templates/portal/`, the one stylesheet in `broker/http/static/portal.css`, and the
one script — `verify-proof.js`, run only on the proof page — beside it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from broker.config import Settings

STATIC = Path(__file__).resolve().parents[1] / "static"


def init_portal(app: Flask, settings: Settings) -> None:
    """Mount the portal at /portal (the Broker must be in `app.extensions["broker"]`; in demo and test mode the
    development identity provider must be mounted first, since the portal registers with it). Does nothing when
    the portal is not enabled (production without an OpenID provider configured)."""
    if not settings.portal_enabled:
        return
    from broker.http.portal.i18n import init_i18n
    from broker.http.portal.login import init_login
    from broker.http.portal.sessions import PortalSessionInterface
    from broker.http.portal.views import PortalConfig, portal_blueprint

    secure = not settings.issuer.startswith("http://")
    init_i18n(app)
    app.session_interface = PortalSessionInterface(app.extensions["broker"], secure=secure)
    app.extensions["portal"] = PortalConfig(
        settings=settings,
        provider=init_login(app, settings),
        trust_roles=settings.mode in ("demo", "test"),
        secure=secure,
    )
    app.register_blueprint(portal_blueprint(str(STATIC)), url_prefix="/portal")
