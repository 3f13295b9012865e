"""The data-protection officer's workspace (docs/dpo.md): server-rendered pages at `/dpo/` to search the log,
answer a person's log request, review the anomaly queue, read the register of processing activities, check the
log's integrity and see the activity over time.

It is built on the client portal's login and session (broker/http/portal): a DPO who has logged in at `/portal/`
is logged in here, with the same server-side session, CSRF tokens, security headers and languages. Only a login
carrying the `dpo` role gets in (in demo and test mode the development provider's DPO persona; in production no
login carries it until the broker has its own staff configuration — docs/portal-login.md).

- `views` — the pages (a Flask blueprint), thin over broker.services.dpo, .anomalies and .processing_register;
- `documents` — the person's report as CSV and PDF, the register as CSV;
- `charts` — the bar charts, drawn as inline SVG on the server.

Templates are in `broker/http/templates/dpo/`, the workspace's stylesheet in `broker/http/dpo/static/dpo.css`.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from broker.config import Settings
from broker.http.portal.sessions import PortalSessionInterface

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/dpo"


class WorkspaceSessionInterface(PortalSessionInterface):
    """The portal's sessions, opened under /dpo/ as well (the cookie's path is `/` already): one login for both
    surfaces, one row per session."""

    @staticmethod
    def applies_to(path: str) -> bool:
        if PortalSessionInterface.applies_to(path):
            return True
        inside = path == PREFIX or path.startswith(PREFIX + "/")
        return inside and not path.startswith(PREFIX + "/static/")


def init_dpo(app: Flask, settings: Settings) -> None:
    """Mount the workspace at /dpo (after the portal, whose login and session it uses). Does nothing when the
    portal is not enabled: there is then no login to build on."""
    if not settings.portal_enabled or "portal" not in app.extensions:
        return
    from broker.http.dpo.views import dpo_blueprint

    interface = app.session_interface
    if isinstance(interface, PortalSessionInterface):
        app.session_interface = WorkspaceSessionInterface(interface.broker, secure=interface.secure)
    app.register_blueprint(dpo_blueprint(str(STATIC)), url_prefix=PREFIX)
