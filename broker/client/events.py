"""Receiving the broker's events: verifying a pushed Security Event Token and handling it at least once.

The broker pushes each event to a partner's webhook as a Security Event Token (RFC 8417) in the body of a POST
(RFC 8935): a compact JWS signed with the broker's Ed25519 key, header `typ` "secevent+jwt" and the `kid` of a key
in /.well-known/jwks.json; claims `iss` (the broker's issuer), `aud` (the organisation addressed), `iat`, `jti` (the
event id), `toe` (when it happened) and `events` with exactly one member, named `<issuer>/events/<type>`.

Delivery is at least once: the same event (the same `jti`) may arrive again after a lost answer, so a receiver
remembers the ids it has handled (`EventDeduplicator` shows the idea; a real receiver keeps them in its own database
with a unique constraint, in the transaction that handles the event).

A SET that fails a check raises `InvalidEventError` with an RFC 8935 §2.4 error code; the endpoint answers the broker
400 with `error.response_body()` (§2.3), and 2xx only for an event it has accepted.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64decode

from broker.client.errors import InvalidEventError

__all__ = ["SET_MEDIA_TYPE", "Event", "EventDeduplicator", "EventVerifier", "verify_security_event"]

#: The media type of a pushed SET (RFC 8935 §2).
SET_MEDIA_TYPE = "application/secevent+jwt"
#: The JWS `typ` of a SET (RFC 8417 §2.3).
SET_TYP = "secevent+jwt"
#: The one algorithm the broker signs with (broker/adapters/signing.py).
ALGORITHM = "Ed25519"
#: A SET is a few hundred bytes; anything far larger is refused before it is decoded.
MAX_SET_LENGTH = 64 * 1024
#: Seconds an `iat` may be ahead of the receiver's clock.
DEFAULT_SKEW = 30

_REGISTRY = JWSRegistry(algorithms=[ALGORITHM])
# Header members that carry or point at a key (the key is always the broker's published one, RFC 8725 §3.10), and
# extensions this verifier does not understand (RFC 7515 §4.1.11 `crit`, RFC 7797 `b64`).
_REFUSED_HEADER = ("jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64")


@dataclass(frozen=True)
class Event:
    """One verified event. `data` is the event's member of `events` (ids and states only, never record content);
    `raw` the SET as received, `claims` its verified claims."""

    id: str
    type: str
    organisation: str
    person_id: str | None
    occurred_at: datetime | None
    data: dict[str, Any]
    raw: str = field(repr=False)
    claims: dict[str, Any] = field(repr=False)


def verify_security_event(
    token: str | bytes,
    *,
    jwks: dict[str, Any],
    issuer: str,
    audience: str | None = None,
    now: float | None = None,
    skew: int = DEFAULT_SKEW,
) -> Event:
    """Verify a pushed SET against the broker's JWK Set and return its event.

    `audience` is the receiving organisation's id: when given, `aud` must name it. Raises `InvalidEventError`;
    `UnknownKeyError` (one of them) when the `kid` is not in `jwks`, which may mean the broker has rotated its key."""
    text = _as_text(token)
    header = _header(text)
    key = _key_for(jwks, header["kid"])
    try:
        signed = jws.deserialize_compact(text, key, registry=_REGISTRY)
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidEventError("authentication_failed", "the SET's signature does not verify") from error
    claims = _claims(signed.payload)
    return _event(text, claims, issuer=issuer, audience=audience, now=time.time() if now is None else now, skew=skew)


class UnknownKeyError(InvalidEventError):
    """The SET names a `kid` that is not in the JWK Set at hand."""

    def __init__(self, kid: str) -> None:
        super().__init__("invalid_key", f"no key {kid!r} in the broker's JWK Set")
        self.kid = kid


class EventVerifier:
    """Verifies pushed SETs with the broker's published keys, fetched once and kept.

    `jwks` is a JWK Set, or a function that fetches the current one (GET /.well-known/jwks.json). A SET naming a
    key that is not in the kept set makes it fetch again once — the broker may have rotated its key — but not more
    often than every `refetch_interval` seconds, so that forged SETs with made-up key ids cannot turn the receiver
    into a stream of requests to the broker."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks: dict[str, Any] | Callable[[], dict[str, Any]],
        audience: str | None = None,
        clock: Callable[[], float] = time.time,
        skew: int = DEFAULT_SKEW,
        refetch_interval: float = 60.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._clock = clock
        self._skew = skew
        self._refetch_interval = refetch_interval
        self._fetch = jwks if callable(jwks) else None
        self._jwks: dict[str, Any] | None = None if callable(jwks) else jwks
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def verify(self, token: str | bytes) -> Event:
        jwks = self._current()
        try:
            return self._verify(token, jwks)
        except UnknownKeyError:
            refreshed = self._refetch()
            if refreshed is None:
                raise
            return self._verify(token, refreshed)

    def _verify(self, token: str | bytes, jwks: dict[str, Any]) -> Event:
        return verify_security_event(
            token, jwks=jwks, issuer=self.issuer, audience=self.audience, now=self._clock(), skew=self._skew
        )

    def _current(self) -> dict[str, Any]:
        with self._lock:
            if self._jwks is None:
                assert self._fetch is not None
                self._jwks = self._fetch()
                self._fetched_at = self._clock()
            return self._jwks

    def _refetch(self) -> dict[str, Any] | None:
        """The JWK Set fetched anew, or None when it cannot be (a fixed set) or was fetched only just now."""
        with self._lock:
            if self._fetch is None:
                return None
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < self._refetch_interval:
                return None
            self._jwks = self._fetch()
            self._fetched_at = now
            return self._jwks


class EventDeduplicator:
    """Remembers the ids of the last `capacity` events seen, to handle each event once under at-least-once
    delivery. In memory and per process, so an example of the idea: a receiver that must never handle an event twice
    records `event.id` in its own database, under a unique constraint, in the transaction that handles it."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, event: Event | str) -> bool:
        """True the first time an event id is offered, False for every repeat while it is remembered."""
        event_id = event.id if isinstance(event, Event) else event
        with self._lock:
            if event_id in self._seen:
                self._seen.move_to_end(event_id)
                return False
            self._seen[event_id] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True


# --- the checks ---


def _as_text(token: str | bytes) -> str:
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidEventError("invalid_request", "the body is not a JWS compact serialization") from None
    token = token.strip()
    if len(token) > MAX_SET_LENGTH:
        raise InvalidEventError("invalid_request", f"the body is longer than {MAX_SET_LENGTH} characters")
    if not token.isascii() or token.count(".") != 2:
        raise InvalidEventError("invalid_request", "the body is not a JWS compact serialization")
    return token


def _header(token: str) -> dict[str, Any]:
    """The JWS header, checked before any key is looked up."""
    try:
        header = json.loads(urlsafe_b64decode(token.split(".", 1)[0].encode("ascii")))
    except (ValueError, TypeError):
        raise InvalidEventError("invalid_request", "the SET's header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise InvalidEventError("invalid_request", "the SET's header is not a JSON object")
    typ = header.get("typ")
    # RFC 8417 §2.3 explicit typing; media types compare case-insensitively, "application/" may be left out
    # (RFC 7515 §4.1.9). A JWT of another type — a consent receipt, an ID token — is never taken for an event.
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != SET_TYP:
        raise InvalidEventError("invalid_request", f"the JWS 'typ' is {typ!r}, not {SET_TYP!r} (RFC 8417 §2.3)")
    if header.get("alg") != ALGORITHM:
        # Never "none", never an HMAC keyed with a public key: the broker signs with Ed25519 only.
        raise InvalidEventError("invalid_request", f"the JWS 'alg' is {header.get('alg')!r}, not {ALGORITHM!r}")
    refused = [name for name in _REFUSED_HEADER if name in header]
    if refused:
        raise InvalidEventError("invalid_request", f"the JWS header parameter {refused[0]!r} is not accepted")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise InvalidEventError("invalid_key", "the SET names no key ('kid')")
    return header


def _key_for(jwks: dict[str, Any], kid: str) -> OKPKey:
    """The Ed25519 signing key `kid` of the broker's JWK Set; other keys and members are ignored (RFC 7517 §5)."""
    for data in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if not isinstance(data, dict) or data.get("kid") != kid:
            continue
        if (
            data.get("kty") != "OKP"
            or data.get("crv") != "Ed25519"
            or data.get("use", "sig") != "sig"
            or data.get("alg", ALGORITHM) != ALGORITHM
        ):
            raise InvalidEventError("invalid_key", f"key {kid!r} of the JWK Set is not an Ed25519 signing key")
        try:
            return OKPKey.import_key({name: data[name] for name in ("kty", "crv", "x")})  # never a private "d"
        except (JoseError, ValueError, TypeError, KeyError) as error:
            raise InvalidEventError("invalid_key", f"key {kid!r} of the JWK Set cannot be read") from error
    raise UnknownKeyError(kid)


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError:
        raise InvalidEventError("invalid_request", "the SET's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise InvalidEventError("invalid_request", "the SET's payload is not a JSON object")
    return claims


def _event(token: str, claims: dict[str, Any], *, issuer: str, audience: str | None, now: float, skew: int) -> Event:
    if claims.get("iss") != issuer:
        raise InvalidEventError("invalid_issuer", f"the SET's 'iss' is {claims.get('iss')!r}, not {issuer!r}")
    aud = claims.get("aud")
    # RFC 7519 §4.1.3: one string, or an array of them. The broker sends one: the organisation addressed.
    audiences: list[str] = [a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str) and a]
    if not audiences or (isinstance(aud, list) and len(audiences) != len(aud)):
        raise InvalidEventError("invalid_audience", "the SET's 'aud' is not an organisation id")
    if audience is not None and audience not in audiences:
        raise InvalidEventError("invalid_audience", f"the SET is addressed to {aud!r}, not {audience!r}")
    iat = _numeric_date(claims, "iat", required=True)
    assert iat is not None
    if iat > now + skew:
        raise InvalidEventError("invalid_request", "the SET's 'iat' is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidEventError("invalid_request", "the SET has no 'jti' (RFC 8417 §2.2)")
    events = claims.get("events")
    # RFC 8417 §2.2: `events` is a JSON object; the broker puts exactly one event in each SET.
    if not isinstance(events, dict) or len(events) != 1:
        count = len(events) if isinstance(events, dict) else "no"
        raise InvalidEventError("invalid_request", f"the SET carries {count} events, not exactly one")
    [(uri, data)] = events.items()
    prefix = f"{issuer}/events/"
    if not uri.startswith(prefix) or len(uri) == len(prefix):
        raise InvalidEventError("invalid_request", f"the event {uri!r} is not one of the broker's ({prefix}…)")
    if not isinstance(data, dict):
        raise InvalidEventError("invalid_request", "the event's payload is not a JSON object")
    toe = _numeric_date(claims, "toe", required=False)
    person_id = data.get("person_id")
    return Event(
        id=jti,
        type=uri[len(prefix) :],
        organisation=audience if audience is not None else audiences[0],
        person_id=person_id if isinstance(person_id, str) else None,
        occurred_at=datetime.fromtimestamp(toe, UTC) if toe is not None else None,
        data=data,
        raw=token,
        claims=claims,
    )


def _numeric_date(claims: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # A NumericDate is a finite JSON number (RFC 7519 §2).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEventError("invalid_request", f"the SET's {name!r} is not a NumericDate")
    return float(value)
