"""Abuse limits (issue #6; docs/security.md, "Abuse limits"): how large a request may be, and how many requests a
partner system — or an address that has not authenticated — may make. Both are checked in a `before_request` hook,
before any body, form, JSON or JOSE object is parsed and, where it can be, before the database is asked anything.

**Sizes.** The request line, the number of header fields, each field, all of them together and `Authorization` are
capped (414 or 431, RFC 6585 §5), and the body by its `Content-Length` (413): `Settings.max_body_bytes`, and less on
the token and revocation endpoints, whose forms carry one client assertion. The body cap is also set as the request's
`max_content_length`, so that a body without a `Content-Length` (chunked) is cut off by Werkzeug while it is read.

**Rates.** Each limit group is one or more rates in the `limits` library's notation ("600/minute"), counted over a
moving window (an exact count of the requests in the last minute, so a partner cannot double its rate at a window's
edge):

| group | counts | keyed by |
|---|---|---|
| `partner` | every authenticated request to the partner API (`/api/v1/…`) | the partner's client id |
| `unauthenticated` | partner API requests answered 401 (no, unknown or expired token) | the client's address |
| `oauth` | `POST /oauth/token` and `/oauth/revoke` (before the client has authenticated) | the client's address |
| `login` | the portal's `/portal/login` and `/portal/auth/callback` | the client's address |

The partner is known only once `require_scope` (broker/oauth) has checked the access token. The hook therefore
learns which partner a token belongs to from the first request that the token authenticated (after the view, from
`g.caller`) and counts that request then; every later request with the token is counted, and refused when over the
limit, before the token is looked up. The token-to-partner map is a hint for counting and nothing more: it
authenticates nothing, and `require_scope` still checks every token in the database.

A refused request is 429 (RFC 6585 §4) with `Retry-After` (RFC 9110 §10.2.3) and an RFC 9457 problem document;
every counted response carries the `RateLimit-Policy` and `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers-10
(§2, §3): the quota `q` in the window `w` seconds, what remains `r` and the seconds `t` until more is available.

**Where the counts live.** In Redis when `BROKER_REDIS_URL` is set, so that every process of a deployment counts
together; otherwise in the process's memory (each gunicorn worker then counts alone). When Redis cannot be reached
the limits fail open to each process's memory, with one warning per outage, and Redis is tried again every
`STORAGE_RETRY_SECONDS`: a rate limit is a guard against abuse, not an access control — the token, the policy and
the audit log are all enforced in the database — and refusing every request while Redis is down would make it a
single point of failure of the whole broker, withdrawals of consent included (DESIGN.md, invariant 3).

The counters run on the wall clock (of the process, or of Redis's clients), not the broker's injected clock: they
expire within minutes and nothing about them is recorded.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import RequestEntityTooLarge, RequestHeaderFieldsTooLarge, RequestURITooLarge, TooManyRequests

from broker.config import Settings

log = logging.getLogger("broker.http.limits")

# --- sizes ---------------------------------------------------------------------------------------------------------

#: gunicorn's own defaults (`limit_request_line`, `limit_request_fields`, `limit_request_field_size`), which
#: broker/wsgi.py sets explicitly; checked here as well, so that any server — and Flask's test client — holds them.
MAX_REQUEST_LINE = 4094
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8190
#: All header fields together: a partner's request carries a few hundred bytes (a token, a DPoP proof), a browser's
#: a few kilobytes of cookies at most; gunicorn alone would let 100 fields of 8 KiB through.
MAX_HEADER_BYTES = 16 * 1024
#: An access token is "cbat_" and 43 characters (broker/oauth/tokens.py); 1 KiB leaves room for any scheme name.
MAX_AUTHORIZATION_BYTES = 1024
#: The token and revocation endpoints' form: one client assertion, refused above 8 KiB before it is decoded
#: (broker/oauth/assertion.py, MAX_ASSERTION_LENGTH), and a few short parameters.
MAX_TOKEN_BODY_BYTES = 16 * 1024
_TOKEN_ENDPOINTS = frozenset({"oauth.token", "oauth.revoke"})

# --- rates ---------------------------------------------------------------------------------------------------------

PARTNER = "partner"
UNAUTHENTICATED = "unauthenticated"
OAUTH = "oauth"
LOGIN = "login"
#: Endpoints limited per client address before anyone has authenticated, by group.
_ADDRESS_GROUPS = {
    "oauth.token": OAUTH,
    "oauth.revoke": OAUTH,
    # Each login start stores a pending login, and each callback makes the broker call the identity provider.
    "portal.login": LOGIN,
    "portal.callback": LOGIN,
}
#: The partner API's blueprint (broker/http/api); its OpenAPI document and docs are served by others, unlimited.
_API_BLUEPRINT = "api"
#: How long the counters stay in memory after Redis failed before Redis is tried again.
STORAGE_RETRY_SECONDS = 10.0
#: Redis is on the request path: a Redis that stops answering costs a request at most this long before the
#: limits fall back to memory.
REDIS_TIMEOUT_SECONDS = 0.25
#: How many access tokens the hook remembers the partner of (each entry ≈ 150 bytes).
TOKEN_HINTS = 4096
#: A breach is logged at most once per key and group in this many seconds: a client hammering a limit would
#: otherwise write a line per refused request.
_LOG_EVERY_SECONDS = 60.0


class RateLimitedError(TooManyRequests):
    """A request over one of its limits (RFC 6585 §4): answered 429 with `Retry-After`."""


@dataclass(frozen=True)
class Quota:
    """One rate of a group, under the name the RateLimit fields give it."""

    name: str
    item: RateLimitItem


@dataclass(frozen=True)
class Usage:
    """A quota after a request was counted (or tested) against it."""

    quota: Quota
    allowed: bool
    remaining: int
    reset_in: int  # seconds until more of the quota is available

    def policy_field(self) -> str:
        """One item of `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10 §2)."""
        return f'"{self.quota.name}";q={self.quota.item.amount};w={self.quota.item.get_expiry()}'

    def limit_field(self) -> str:
        """One item of `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10 §3)."""
        return f'"{self.quota.name}";r={self.remaining};t={self.reset_in}'


def quotas(group: str, rates: str | None) -> tuple[Quota, ...]:
    """The quotas of `rates` ("600/minute", several separated by ";"), named after the group — and after the
    window, when there are several. Raises ValueError for rates the `limits` library cannot read."""
    if not rates:
        return ()
    items = parse_many(rates)
    if len(items) == 1:
        return (Quota(group, items[0]),)
    return tuple(Quota(f"{group}-{item.get_expiry()}s", item) for item in items)


class Counters:
    """The moving-window counters, in Redis (shared by every process) or in this process's memory.

    When a Redis operation fails the counters switch to memory (fail open, see the module's docstring), log one
    warning, and ask Redis again — a PING — once `STORAGE_RETRY_SECONDS` have passed."""

    def __init__(self, redis_url: str | None, *, prefix: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis_storage: RedisStorage | None = None
        self._redis: MovingWindowRateLimiter | None = None
        if redis_url:
            self._redis_storage = RedisStorage(
                redis_url,
                key_prefix=prefix,
                wrap_exceptions=True,  # every failure of the client arrives as limits.errors.StorageError
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._redis = MovingWindowRateLimiter(self._redis_storage)
        self._retry_at: float | None = None  # set while Redis is taken to be down
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """Whether the counts are in Redis right now."""
        return self._redis is not None and self._retry_at is None

    def hit(self, group: Sequence[Quota], *key: str) -> list[Usage]:
        """Count one request against each quota in turn, stopping at the first it exceeds."""
        return self._run(lambda limiter: self._count(limiter, group, key, consume=True))

    def test(self, group: Sequence[Quota], *key: str) -> list[Usage]:
        """Whether one more request would be within every quota, counting nothing."""
        return self._run(lambda limiter: self._count(limiter, group, key, consume=False))

    @staticmethod
    def _count(
        limiter: MovingWindowRateLimiter, group: Sequence[Quota], key: tuple[str, ...], *, consume: bool
    ) -> list[Usage]:
        used = []
        for quota in group:
            allowed = limiter.hit(quota.item, *key) if consume else limiter.test(quota.item, *key)
            reset_at, remaining = limiter.get_window_stats(quota.item, *key)
            reset_in = max(0, math.ceil(reset_at - time.time()))
            used.append(Usage(quota, allowed, remaining, reset_in))
            if not allowed:
                break
        return used

    def _run(self, count: Callable[[MovingWindowRateLimiter], list[Usage]]) -> list[Usage]:
        if self._redis is not None and self._redis_usable():
            try:
                return count(self._redis)
            except StorageError:
                self._fail()
        return count(self._memory)

    def _redis_usable(self) -> bool:
        if self._retry_at is None:
            return True
        with self._lock:
            if self._retry_at is None:
                return True
            if self._monotonic() < self._retry_at:
                return False
            assert self._redis_storage is not None
            if self._redis_storage.check():
                self._retry_at = None
                log.info("rate-limit storage reachable again: counting in Redis", extra={"storage": "redis"})
                return True
            self._retry_at = self._monotonic() + STORAGE_RETRY_SECONDS
            return False

    def _fail(self) -> None:
        with self._lock:
            if self._retry_at is None:
                log.warning(
                    "rate-limit storage unreachable: counting in this process's memory until it is back",
                    extra={"storage": "redis", "retry_seconds": STORAGE_RETRY_SECONDS},
                )
            self._retry_at = self._monotonic() + STORAGE_RETRY_SECONDS


class TokenHints:
    """Which partner an access token belongs to, learnt from a request the token authenticated; kept for the
    tokens' lifetime (a token cannot outlive it), at most `size` of them, by the SHA-256 of the credentials so that
    no usable token is held here."""

    def __init__(self, ttl: float, *, size: int = TOKEN_HINTS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._size = size
        self._monotonic = monotonic
        self._partners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> str | None:
        with self._lock:
            found = self._partners.get(digest)
            if found is None:
                return None
            partner, expires = found
            if self._monotonic() >= expires:
                del self._partners[digest]
                return None
            return partner

    def put(self, digest: str, partner: str) -> None:
        with self._lock:
            self._partners[digest] = (partner, self._monotonic() + self._ttl)
            self._partners.move_to_end(digest)
            while len(self._partners) > self._size:
                self._partners.popitem(last=False)


def credentials_digest(authorization: str | None) -> str | None:
    """The SHA-256 of an `Authorization` field's credentials, whatever the scheme (Bearer, RFC 6750; DPoP,
    RFC 9449 §7.1): the same token under either scheme is the same partner's."""
    if not authorization:
        return None
    _, _, credentials = authorization.partition(" ")
    credentials = credentials.strip(" ")
    if not credentials:
        return None
    return hashlib.sha256(credentials.encode("latin-1")).hexdigest()


def client_address(trusted_proxies: int) -> str:
    """The client's address: the peer's, or — behind `trusted_proxies` reverse proxies that each append the address
    they received from to `X-Forwarded-For` — the one the outermost trusted proxy saw (the same rule as Werkzeug's
    ProxyFix with `x_for`). Entries further left were written by the client and are not believed."""
    if trusted_proxies > 0:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= trusted_proxies:
            return forwarded[-trusted_proxies]
    return request.remote_addr or "unknown"


def _address_key(address: str) -> str:
    """Counters are keyed by a hash of the address, so that no client address is stored in Redis or memory."""
    return hashlib.sha256(address.encode("utf-8")).hexdigest()[:32]


_UNPREFIXED_HEADERS = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})


class AbuseLimits:
    """The limits of one application. Before the view: `check_sizes`, then `check_rates`; after it: `count_after`
    counts what could be counted only once the token was checked, and `write_fields` writes the RateLimit fields."""

    def __init__(self, settings: Settings) -> None:
        self.max_body_bytes = settings.max_body_bytes
        self.trusted_proxies = settings.trusted_proxies
        self.groups: dict[str, tuple[Quota, ...]] = {
            PARTNER: quotas(PARTNER, settings.rate_limit_api),
            UNAUTHENTICATED: quotas(UNAUTHENTICATED, settings.rate_limit_unauthenticated),
            OAUTH: quotas(OAUTH, settings.rate_limit_oauth),
            LOGIN: quotas(LOGIN, settings.rate_limit_login),
        }
        self.enabled = any(self.groups.values())
        self.counters = Counters(settings.redis_url, prefix=settings.rate_limit_prefix) if self.enabled else None
        self.hints = TokenHints(settings.access_token_ttl)
        self._logged: dict[tuple[str, str], float] = {}

    # --- sizes ---

    def check_sizes(self) -> None:
        environ = request.environ
        target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
        # Method, target and protocol with their two spaces, as gunicorn measures the request line.
        line = len(request.method) + len(target) + len(environ.get("SERVER_PROTOCOL", "HTTP/1.1")) + 2
        if line > MAX_REQUEST_LINE:
            raise RequestURITooLarge(f"the request line is longer than {MAX_REQUEST_LINE} bytes")
        fields = 0
        total = 0
        # The header fields straight from the WSGI environ (PEP 3333: HTTP_<NAME>, and CONTENT_TYPE and
        # CONTENT_LENGTH without the prefix) — the same fields Werkzeug's `request.headers` lists, without building
        # its title-cased names on every request. len("HTTP_") - len(": ") is 3.
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                size = len(key) - 3 + len(value)
            elif key in _UNPREFIXED_HEADERS and value:
                size = len(key) + 2 + len(value)
            else:
                continue
            fields += 1
            if size > MAX_HEADER_FIELD_BYTES:
                name = key.removeprefix("HTTP_").replace("_", "-").title()
                raise RequestHeaderFieldsTooLarge(
                    f"the {name} header field is longer than {MAX_HEADER_FIELD_BYTES} bytes"
                )
            total += size
        if fields > MAX_HEADER_FIELDS:
            raise RequestHeaderFieldsTooLarge(f"the request has more than {MAX_HEADER_FIELDS} header fields")
        if total > MAX_HEADER_BYTES:
            raise RequestHeaderFieldsTooLarge(f"the header fields are longer than {MAX_HEADER_BYTES} bytes together")
        authorization = request.headers.get("Authorization")
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION_BYTES:
            raise RequestHeaderFieldsTooLarge(
                f"the Authorization header field is longer than {MAX_AUTHORIZATION_BYTES} bytes"
            )
        limit = MAX_TOKEN_BODY_BYTES if request.endpoint in _TOKEN_ENDPOINTS else self.max_body_bytes
        # Werkzeug refuses a longer Content-Length, or a chunked body once it grows past this, when the body is read.
        request.max_content_length = limit
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge(f"the request body exceeds {limit} bytes")

    # --- rates ---

    def check_rates(self) -> None:
        if self.counters is None:
            return
        group = _ADDRESS_GROUPS.get(request.endpoint or "")
        if group is not None:
            self._enforce(group, _address_key(client_address(self.trusted_proxies)), consume=True)
            return
        if request.blueprint != _API_BLUEPRINT:
            return
        digest = credentials_digest(request.headers.get("Authorization"))
        g.limits_token = digest
        partner = self.hints.get(digest) if digest else None
        if partner is not None:
            g.limits_counted = True
            self._enforce(PARTNER, partner, consume=True)
            return
        # Not yet known to be a partner's: refused only while this address has too many failed attempts.
        self._enforce(UNAUTHENTICATED, _address_key(client_address(self.trusted_proxies)), consume=False)

    def count_after(self, response: Response) -> None:
        if self.counters is None or request.blueprint != _API_BLUEPRINT:
            return
        caller = g.get("caller")
        if caller is not None:
            digest = g.get("limits_token")
            if digest:
                self.hints.put(digest, caller.partner_id)
            if not g.get("limits_counted"):
                g.limits_usage = self.counters.hit(self.groups[PARTNER], PARTNER, caller.partner_id)
        elif response.status_code == 401:
            key = _address_key(client_address(self.trusted_proxies))
            g.limits_usage = self.counters.hit(self.groups[UNAUTHENTICATED], UNAUTHENTICATED, key)

    def _enforce(self, group: str, key: str, *, consume: bool) -> None:
        quotas_ = self.groups[group]
        if not quotas_:
            return
        assert self.counters is not None
        used = self.counters.hit(quotas_, group, key) if consume else self.counters.test(quotas_, group, key)
        g.limits_usage = used
        breached = next((u for u in used if not u.allowed), None)
        if breached is None:
            return
        retry = max(1, breached.reset_in)
        self._log_breach(group, key, breached)
        item = breached.quota.item
        window = _window_words(item)
        who = f"partner {key!r}" if group == PARTNER else "this address"
        raise RateLimitedError(
            f"more than {item.amount} requests in {window} from {who} ({group} limit); retry after {retry} seconds",
            retry_after=retry,
        )

    def _log_breach(self, group: str, key: str, usage: Usage) -> None:
        now = time.monotonic()
        last = self._logged.get((group, key))
        if last is not None and now - last < _LOG_EVERY_SECONDS:
            return
        if len(self._logged) > TOKEN_HINTS:
            self._logged.clear()
        self._logged[(group, key)] = now
        # The partner's client id, or the address's hash: never an address itself.
        log.warning(
            "rate limit reached",
            extra={"limit": group, "key": key, "quota": str(usage.quota.item), "retry_after": usage.reset_in},
        )

    @staticmethod
    def write_fields(response: Response) -> None:
        used: list[Usage] | None = g.get("limits_usage")
        if not used:
            return
        response.headers["RateLimit-Policy"] = ", ".join(u.policy_field() for u in used)
        response.headers["RateLimit"] = ", ".join(u.limit_field() for u in used)
        breached = next((u for u in used if not u.allowed), None)
        if breached is not None and response.status_code == 429:
            response.headers["Retry-After"] = str(max(1, breached.reset_in))  # RFC 9110 §10.2.3: delay-seconds


def _window_words(item: RateLimitItem) -> str:
    """The window as a refusal's detail names it: "1 minute", "10 seconds", "2 hours"."""
    seconds = item.get_expiry()
    units = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
    unit, length = next((unit, length) for unit, length in units if seconds % length == 0)
    count = seconds // length
    return f"{count} {unit}" + ("" if count == 1 else "s")


def init_limits(app: Flask, settings: Settings) -> AbuseLimits:
    """Register the hooks. Call after the request-id hook, so that a refusal's problem document and log line carry
    the request id."""
    limits = AbuseLimits(settings)
    app.extensions["limits"] = limits

    @app.before_request
    def _abuse_limits() -> None:
        limits.check_sizes()
        limits.check_rates()

    @app.after_request
    def _rate_limit_fields(response: Response) -> Response:
        limits.count_after(response)
        limits.write_fields(response)
        return response

    return limits
