"""The portal's CSRF tokens and response headers (docs/portal.md, "Security").

CSRF: one random token per session, put in a hidden field of every form and compared in constant time
(`hmac.compare_digest`) on every POST. A POST without the session's token is refused before any view runs.
`SameSite=Lax` on the session cookie is a second line, not the only one.

Headers: a strict Content-Security-Policy (no script, except the portal's own `verify-proof.js` on the one page that
checks a proof; styles from the portal's own stylesheet only, forms only to the portal itself and to the OpenID
provider the login goes to, no framing), `Cache-Control: no-store`
(pages about a person must not stay in a shared or back-button cache).
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

CSRF_FIELD = "csrf_token"
_CSRF_KEY = "csrf"


def csrf_token() -> str:
    """The session's CSRF token (made on first use; this is what gives a visitor a session row)."""
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_CSRF_KEY] = token
    return token


def new_csrf_token() -> None:
    """A new token, at login: a form rendered before the login is not valid after it."""
    session[_CSRF_KEY] = secrets.token_urlsafe(32)


def csrf_valid() -> bool:
    expected = session.get(_CSRF_KEY)
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode("ascii"), sent.encode("utf-8", "replace"))


def content_security_policy(form_origins: tuple[str, ...], *, scripts: bool = False) -> str:
    """The policy of a portal page. `scripts` lets the page load scripts from the portal itself (never inline
    ones): only the proof page asks for it, so every other page still runs no script at all."""
    form_action = " ".join(("'self'", *sorted(set(form_origins))))
    script_src = "script-src 'self'; " if scripts else ""
    return (
        f"default-src 'none'; {script_src}style-src 'self'; img-src 'self'; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
