"""Server-side sessions for the client portal (docs/portal.md, "Security").

The browser's cookie holds only a random 256-bit token; the database keeps the token's SHA-256 as the row id
(STYLE.md: tokens are secrets you never store), so a copy of the table lets no one take over a session. The
session is Flask's `session`, which is what Authlib's client keeps the pending login's `state`, `nonce` and PKCE
verifier in: everything the portal remembers between requests lives in one row.

- Only requests under `/portal/` (its stylesheet aside) open a session; the partner API and the other surfaces
  never read or write the table.
- A visitor gets a row only when something is written to the session (the CSRF token of a form, a pending login).
- Rotated at login (`rotate()`: a new token, the old row deleted — no fixation), destroyed at logout (`destroy()`:
  the row deleted, the cookie expired).
- Idle timeout: a session not used for IDLE_TIMEOUT is gone; `last_seen_at` is refreshed at most once a
  TOUCH_INTERVAL, so that reading a page is not a write each time. MAX_AGE bounds a session however busy.
- The cookie is `__Host-broker_portal` with `Secure; HttpOnly; SameSite=Lax; Path=/` (RFC 6265bis §4.1.3.2: the
  `__Host-` prefix demands Secure, Path=/ and no Domain). Over plain HTTP — the demo, the tests — it is
  `broker_portal` without Secure, which a browser would otherwise refuse to send back.

Time comes from the broker's clock (DESIGN.md invariant 9).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete
from werkzeug.datastructures import CallbackDict

from broker.adapters.orm import PortalSessionRow
from broker.domain.clock import utc
from broker.services import Broker

IDLE_TIMEOUT = timedelta(minutes=30)
MAX_AGE = timedelta(hours=12)
TOUCH_INTERVAL = timedelta(seconds=60)
SECURE_COOKIE = "__Host-broker_portal"
PLAIN_COOKIE = "broker_portal"
PREFIX = "/portal"
_STATIC = "/portal/static/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 random bytes, base64url without padding


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class PortalSession(CallbackDict[str, Any], SessionMixin):
    """The data of one portal session, and what is to happen to its row when the response goes out."""

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        *,
        active: bool = True,
        token: str | None = None,
        created_at: datetime | None = None,
        last_seen_at: datetime | None = None,
    ) -> None:
        def on_update(_: Any) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self.active = active
        self.token = token
        self.created_at = created_at
        self.last_seen_at = last_seen_at
        self.new = token is None
        self.modified = False
        self.rotate_requested = False
        self.destroy_requested = False

    def rotate(self) -> None:
        """Give the session a new token and delete the old row when the response goes out (at login)."""
        self.rotate_requested = True
        self.modified = True

    def destroy(self) -> None:
        """Delete the row and expire the cookie when the response goes out (at logout)."""
        self.clear()
        self.destroy_requested = True


class PortalSessionInterface(SessionInterface):
    def __init__(self, broker: Broker, *, secure: bool) -> None:
        self.broker = broker
        self.secure = secure
        self.cookie = SECURE_COOKIE if secure else PLAIN_COOKIE

    @staticmethod
    def applies_to(path: str) -> bool:
        return (path == PREFIX or path.startswith(PREFIX + "/")) and not path.startswith(_STATIC)

    def open_session(self, app: Flask, request: Request) -> PortalSession:
        if not self.applies_to(request.path):
            return PortalSession(active=False)
        token = request.cookies.get(self.cookie, "")
        if not _TOKEN.match(token):
            return PortalSession()
        now = self.broker.clock.now()
        with self.broker.uow(write=False) as uow:
            row = uow.session.get(PortalSessionRow, session_id(token))
            if row is None:
                return PortalSession()
            data, created_at, last_seen_at, expires_at = (
                dict(row.data),
                utc(row.created_at),
                utc(row.last_seen_at),
                utc(row.expires_at),
            )
        if now >= expires_at or now >= created_at + MAX_AGE:
            # Gone: the visitor starts again with an empty session (the old row is purged with the others).
            return PortalSession()
        return PortalSession(data, token=token, created_at=created_at, last_seen_at=last_seen_at)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, PortalSession) or not session.active:
            return
        now = self.broker.clock.now()
        if session.destroy_requested:
            if session.token is not None:
                self._write(
                    lambda s: s.execute(delete(PortalSessionRow).where(PortalSessionRow.id == self._id(session)))
                )
            self._expire_cookie(response)
            return
        if session.token is not None and not session.rotate_requested:
            assert session.last_seen_at is not None
            if session.modified or now - session.last_seen_at >= TOUCH_INTERVAL:
                self._write(lambda s: self._update(s, session, now))
            return
        if not session and session.token is None:
            return  # nothing to remember: no row, no cookie
        old_id = self._id(session) if session.token is not None else None
        token = secrets.token_urlsafe(32)

        def insert(s: Any) -> None:
            if old_id is not None:
                s.execute(delete(PortalSessionRow).where(PortalSessionRow.id == old_id))
            # Expired sessions are purged whenever a new one starts.
            s.execute(delete(PortalSessionRow).where(PortalSessionRow.expires_at <= now))
            s.add(
                PortalSessionRow(
                    id=session_id(token),
                    data=dict(session),
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + IDLE_TIMEOUT,
                )
            )

        self._write(insert)
        session.token = token
        response.set_cookie(self.cookie, token, path="/", secure=self.secure, httponly=True, samesite="Lax")

    @staticmethod
    def _id(session: PortalSession) -> str:
        assert session.token is not None
        return session_id(session.token)

    def _update(self, s: Any, session: PortalSession, now: datetime) -> None:
        row = s.get(PortalSessionRow, self._id(session))
        if row is None:  # deleted meanwhile (a logout in another tab): do not bring it back
            return
        row.data = dict(session)
        row.last_seen_at = now
        row.expires_at = now + IDLE_TIMEOUT

    def _write(self, change: Callable[[Any], None]) -> None:
        with self.broker.uow() as uow:
            change(uow.session)
            uow.commit()

    def _expire_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", secure=self.secure, httponly=True, samesite="Lax")
