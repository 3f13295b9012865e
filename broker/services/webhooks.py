"""Webhook endpoints, and the delivery of each organisation's events to them (issue #8; docs/webhooks.md).

A partner system registers an https endpoint for its organisation and the event types it wants; `emit`
(broker/services/events.py) writes every event with a pending delivery to each subscribed active endpoint, in the
transaction of the change it reports. `deliver_due` — run by `broker worker` — pushes them as signed Security Event
Tokens (RFC 8417) over HTTP (RFC 8935 §2): at least once, with exponential backoff, until delivered or given up.

How a delivery is worked, so that no transaction (and on SQLite no write lock) is ever held across the network:

1. **Lease** (one short transaction): the due deliveries are taken — `attempts` + 1 and `next_attempt_at` moved a
   lease ahead — by a conditional UPDATE on the attempt count seen, so two workers never both take one (on PostgreSQL
   the rows are also selected `FOR UPDATE SKIP LOCKED`, so a second worker skips them instead of waiting; on SQLite
   the write lock serialises the leasing transactions). The lease commits.
2. **Send**, outside any transaction: the event is signed now (a fresh `iat`, the same `jti`) and POSTed.
3. **Record** (a new short transaction): delivered, scheduled again, or failed — conditional on the attempt count
   the lease wrote, which is the lease's fencing token. A worker that died mid-send leaves its lease to run out; the
   next worker takes the delivery again and sends it once more (at-least-once: receivers de-duplicate on `jti`). A
   worker whose lease ran out and whose delivery was taken by another finds its UPDATE matching nothing and drops its
   outcome (`lost`), as the other worker's attempt is the one that counts.

Deliveries are independent: a later event is delivered even while an earlier one to the same endpoint is still
failing, so one event a receiver keeps refusing cannot hold up the rest (no head-of-line blocking). Receivers must not
assume order; the token's `toe` (time of event) orders events, and the feed (`events_feed`) lists them in order.

Outbound requests go only to public addresses (OWASP Server-Side Request Forgery Prevention Cheat Sheet): the URL's
address is checked when it is registered (an address literal) and when each request connects (every address the
name resolves to, and the connection is made to the address that was checked, so a name that re-resolves elsewhere
in between cannot redirect it). Loopback is allowed in demo and test mode only. No redirect is followed: the
registered URL is where events go, and a 3xx is a failed attempt.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import ColumnElement, CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError

from broker.adapters.orm import OrganisationRow, OutboxEventRow, WebhookDeliveryRow, WebhookEndpointRow
from broker.adapters.signing import sign_jws
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import ConflictError, InvalidRequestError, NotFoundError
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry
from broker.services.events import (
    EVENT_TYPES,
    SET_MEDIA_TYPE,
    SET_TYP,
    TEST_EVENT,
    event_view,
    security_event_token,
    sign_event,
)

log = logging.getLogger("broker.webhooks")

#: Active endpoints an organisation may have at once: each one is a copy of every event it subscribes to.
MAX_ENDPOINTS = 10
MAX_URL_LENGTH = 2000  # the column's width
#: How long a taken delivery is a worker's own (BROKER_WEBHOOK_LEASE_SECONDS in `broker worker`). Longer than a send
#: can take (connect 5 s + read 10 s), so that a live worker keeps its lease; a dead worker's deliveries wait this long.
LEASE = timedelta(seconds=60)
#: Retries: full-jitter exponential backoff — a delay drawn uniformly from 0 to min(cap, base × 2^(n−1)) after the
#: n-th failed attempt ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015), so that receivers coming back
#: from an outage are not hit by every broker at the same moment.
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
#: A delivery is given up (`failed`, visible to the partner and the DPO) when an attempt fails this long after the
#: event, or after this many attempts; the partner can still read the event from the feed (GET /api/v1/events). The
#: three days bound a delivery in practice — an endpoint down over a long weekend still gets its events: 30 attempts
#: under the schedule above take about 2½ days on average — and the count stops only a receiver that keeps asking
#: for short waits with Retry-After.
MAX_ATTEMPTS = 30
GIVE_UP_AFTER = timedelta(days=3)
#: requests' (connect, read) timeouts in seconds; the read timeout bounds each wait for data, not the whole exchange.
TIMEOUTS = (5.0, 10.0)
#: What is kept of a receiver's error answer: enough to diagnose (RFC 8935 §2.3's `err` and `description`).
EXCERPT = 200
#: `last_error` of the deliveries an endpoint still had pending when it was disabled.
ENDPOINT_DISABLED = "endpoint disabled"
#: On PostgreSQL an event's sequence number is drawn when it is inserted, but transactions commit in their own order:
#: a later event may be visible while an earlier one is still uncommitted, and a feed reader that moved past it would
#: never see it. The feed therefore lists an event only once every transaction that could still commit an earlier one
#: has ended. Requests, which emit most events, end within BROKER_REQUEST_TIMEOUT (30 s) — the worker that serves one
#: is ended then, and its transaction rolled back; any other code that emits events (the scheduled jobs) must commit
#: within this time of reading its clock too. On SQLite the write lock makes commit order the sequence order, and the
#: feed needs no wait.
FEED_SETTLE = timedelta(seconds=60)
DELIVERY_STATUSES = ("pending", "delivered", "failed")
# The shape of a henkilötunnus (broker/domain/hetu.py; audit/entry.py refuses the same in log entries).
_HETU_LIKE = re.compile(r"(?<![0-9A-Za-z])\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]")
_random = random.SystemRandom()  # jitter; SystemRandom keeps the linters' pseudo-random warnings quiet, at no cost


class InvalidWebhookUrlError(InvalidRequestError):
    code = "invalid_webhook_url"
    title = "Invalid webhook URL"


class UnknownEventTypeError(InvalidRequestError):
    code = "unknown_event_type"
    title = "Unknown event type"


class TooManyWebhooksError(ConflictError):
    code = "too_many_webhooks"
    title = "Too many webhook endpoints"


class WebhookUrlTakenError(ConflictError):
    code = "webhook_url_taken"
    title = "An endpoint with this URL exists"


class WebhookDisabledError(ConflictError):
    code = "webhook_disabled"
    title = "The webhook endpoint is disabled"


# --- Validation -----------------------------------------------------------------------------------------------------


def loopback_allowed(broker: Broker) -> bool:
    """Plain http, and https, to a loopback host: only where the broker and the receiver are one developer's machine
    or a test (demo and test mode) — the reasoning of RFC 8252 §8.3 for loopback redirect URIs."""
    return broker.settings.mode in ("demo", "test")


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def address_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool, networks: Networks = ()
) -> bool:
    """Whether the broker may connect to `address`: a public unicast address, an address in one of the operator's
    partner `networks` (BROKER_WEBHOOK_NETWORKS: partners reached over a private network), or loopback when allowed.
    Other private, link-local, shared (100.64/10), unspecified, multicast and reserved addresses are refused: a
    partner could otherwise point the broker at services inside its network (OWASP Server-Side Request Forgery
    Prevention)."""
    address = _unmapped(address)
    if address.is_loopback:
        return allow_loopback
    if any(address in network for network in networks):
        return True
    return address.is_global and not address.is_multicast


def _unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (::ffff:127.0.0.1 is 127.0.0.1)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_url(url: str, *, allow_loopback: bool, networks: Networks = ()) -> str:
    """The endpoint URL, if the broker may send events to it; else InvalidWebhookUrlError naming what is wrong."""

    def refuse(reason: str) -> InvalidWebhookUrlError:
        return InvalidWebhookUrlError(f"url {reason}", field="url")

    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise refuse("must not contain spaces or control characters (RFC 3986 §2)")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 literal
        raise refuse("is not a URL (RFC 3986)") from None
    if not parts.scheme or not parts.netloc:
        raise refuse("must be an absolute URL such as https://partner.example/events (RFC 3986 §4.3)")
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise refuse("must be an https URL (RFC 9110 §4.2.2)")
    if "@" in parts.netloc:
        raise refuse("must not carry a user name or password (RFC 9110 §4.2.4)")
    if "#" in url:
        raise refuse("must not have a fragment: it is never sent to the server (RFC 9110 §7.1)")
    host = parts.hostname
    if not host:
        raise refuse("must name a host")
    try:
        parts.port  # noqa: B018 — reading it validates it
    except ValueError:
        raise refuse("has an invalid port") from None
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    loopback = host == "localhost" or (address is not None and _unmapped(address).is_loopback)
    if scheme == "http" and not (loopback and allow_loopback):
        raise refuse(
            "must be an https URL (RFC 9110 §4.2.2); plain http is allowed only for a loopback host "
            "(127.0.0.1, ::1, localhost) when the broker runs in demo or test mode"
        )
    if loopback and not allow_loopback:
        raise refuse("must not name a loopback host")
    if address is not None and not address_allowed(address, allow_loopback=allow_loopback, networks=networks):
        raise refuse(
            "must name a public address or one in the partner networks the operator allows (BROKER_WEBHOOK_NETWORKS): "
            "other private, link-local and reserved addresses are refused"
        )
    if _HETU_LIKE.search(url):
        # DESIGN.md invariant 6: an identity code is never in a URL; the URL is logged and shown.
        raise refuse("must not contain anything shaped like a personal identity code")
    return url


def check_event_types(events: Sequence[str]) -> list[str]:
    """The subscribed event types, deduplicated and sorted; UnknownEventTypeError naming an unknown one."""
    if not events:
        raise UnknownEventTypeError("events must name at least one event type", field="events")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise UnknownEventTypeError(
            f"events: unknown event type {unknown[0]!r}; the types are {', '.join(EVENT_TYPES)}", field="events"
        )
    return sorted(set(events))


def shown_url(url: str) -> str:
    """The URL without its query, for the log and the DPO: a receiver may carry a secret of its own in the query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


# --- Endpoints ------------------------------------------------------------------------------------------------------


def register_endpoint(broker: Broker, caller: Caller, url: str, events: Sequence[str]) -> dict[str, Any]:
    """Register an endpoint for the caller's organisation. Logged (`webhook:register`): it decides where events about
    persons go."""
    url = check_url(url, allow_loopback=loopback_allowed(broker), networks=broker.settings.webhook_networks)
    chosen = check_event_types(events)
    now = broker.clock.now()
    organisation = caller.organisation_id
    with broker.uow() as uow:
        # The organisation's row lock serialises its registrations, so that two at once cannot both pass the count.
        uow.session.execute(select(OrganisationRow.id).where(OrganisationRow.id == organisation).with_for_update())
        active = list(
            uow.session.scalars(
                select(WebhookEndpointRow).where(
                    WebhookEndpointRow.organisation_id == organisation, WebhookEndpointRow.active.is_(True)
                )
            )
        )
        same = next((row for row in active if row.url == url), None)
        if same is not None:
            raise WebhookUrlTakenError(
                f"the active endpoint {same.id} already has this URL; disable it first, or use it",
                field="url",
                extra={"webhook_id": same.id},
            )
        if len(active) >= MAX_ENDPOINTS:
            raise TooManyWebhooksError(
                f"an organisation may have at most {MAX_ENDPOINTS} active webhook endpoints; disable one first"
            )
        row = WebhookEndpointRow(
            id=new_id("whk"),
            organisation_id=organisation,
            client_id=caller.partner_id,
            url=url,
            events=chosen,
            active=True,
            created_at=now,
            disabled_at=None,
        )
        uow.session.add(row)
        uow.session.flush()
        append_entry(
            uow,
            event="webhook:register",
            now=now,
            caller=caller,
            detail={"webhook_id": row.id, "url": shown_url(url), "events": chosen},
        )
        uow.commit()
        return _endpoint_view(row, {})


def list_endpoints(broker: Broker, caller: Caller) -> list[dict[str, Any]]:
    """The caller's organisation's endpoints, active and disabled, oldest first, with their delivery counts."""
    with broker.uow(write=False) as uow:
        rows = list(
            uow.session.scalars(
                select(WebhookEndpointRow)
                .where(WebhookEndpointRow.organisation_id == caller.organisation_id)
                .order_by(WebhookEndpointRow.created_at, WebhookEndpointRow.id)
            )
        )
        counts = _delivery_counts(uow, [row.id for row in rows])
    return [_endpoint_view(row, counts.get(row.id, {})) for row in rows]


def get_endpoint(broker: Broker, caller: Caller, webhook_id: str) -> dict[str, Any]:
    with broker.uow(write=False) as uow:
        row = _own_endpoint(uow, caller, webhook_id)
        counts = _delivery_counts(uow, [row.id])
    return _endpoint_view(row, counts.get(row.id, {}))


def disable_endpoint(broker: Broker, caller: Caller, webhook_id: str) -> None:
    """Disable an endpoint: it gets no new events, and the deliveries it still had pending become `failed` with
    `last_error` "endpoint disabled" — visible as such, and readable from the feed — rather than lingering. Disabling
    a disabled endpoint changes nothing. Logged (`webhook:disable`)."""
    now = broker.clock.now()
    with broker.uow() as uow:
        row = _own_endpoint(uow, caller, webhook_id, lock=True)
        if not row.active:
            return
        row.active = False
        row.disabled_at = now
        abandoned = _update(
            uow.session,
            and_(WebhookDeliveryRow.endpoint_id == row.id, WebhookDeliveryRow.status == "pending"),
            status="failed",
            next_attempt_at=None,
            last_error=ENDPOINT_DISABLED,
        )
        append_entry(
            uow,
            event="webhook:disable",
            now=now,
            caller=caller,
            detail={"webhook_id": row.id, "url": shown_url(row.url), "abandoned_deliveries": abandoned},
        )
        uow.commit()


def list_deliveries(
    broker: Broker,
    caller: Caller,
    webhook_id: str,
    *,
    status: str | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """One of the caller's endpoints' deliveries, newest first; `next_cursor` continues the list."""
    with broker.uow(write=False) as uow:
        _own_endpoint(uow, caller, webhook_id)
        return _delivery_page(uow, endpoint_id=webhook_id, status=status, cursor=cursor, limit=limit)


def events_feed(
    broker: Broker, caller: Caller, *, after: int | None = None, limit: int = 100, tokens: bool = False
) -> dict[str, Any]:
    """The caller's organisation's events in the order they were written — the pull alternative to the push (the same
    events, whether or not any endpoint is registered). `after` is a `next_cursor` from an earlier page; `tokens`
    adds each event's Security Event Token, signed now."""
    now = broker.clock.now()
    with broker.uow(write=False) as uow:
        query = select(OutboxEventRow).where(OutboxEventRow.organisation_id == caller.organisation_id)
        if after is not None:
            query = query.where(OutboxEventRow.seq > after)
        if uow.postgres:
            query = query.where(OutboxEventRow.created_at <= now - FEED_SETTLE)  # see FEED_SETTLE
        rows = list(uow.session.scalars(query.order_by(OutboxEventRow.seq).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    events = []
    for row in rows:
        view = event_view(row)
        if tokens:
            view["token"] = sign_event(broker, row, now=now)
        events.append(view)
    # The cursor to continue from: after the last event listed, or where the reader already was.
    position = rows[-1].seq if rows else after
    return {"events": events, "next_cursor": str(position) if position is not None else None, "has_more": more}


def _own_endpoint(uow: UnitOfWork, caller: Caller, webhook_id: str, *, lock: bool = False) -> WebhookEndpointRow:
    query = select(WebhookEndpointRow).where(WebhookEndpointRow.id == webhook_id)
    row = uow.session.scalars(query.with_for_update() if lock else query).first()
    # Another organisation's endpoint is as unknown as one that does not exist: its id tells nothing.
    if row is None or row.organisation_id != caller.organisation_id:
        raise NotFoundError(f"no webhook endpoint '{webhook_id}' of '{caller.organisation_id}'")
    return row


def _endpoint_view(row: WebhookEndpointRow, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "webhook_id": row.id,
        "organisation": row.organisation_id,
        "url": row.url,
        "events": list(row.events),
        "active": row.active,
        "registered_by": row.client_id,
        "created_at": utc(row.created_at),
        "disabled_at": utc(row.disabled_at) if row.disabled_at else None,
        "deliveries": {status: counts.get(status, 0) for status in DELIVERY_STATUSES},
    }


def _delivery_counts(uow: UnitOfWork, endpoint_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    wanted = list(endpoint_ids)
    if not wanted:
        return {}
    counts: dict[str, dict[str, int]] = {}
    for endpoint_id, status, count in uow.session.execute(
        select(WebhookDeliveryRow.endpoint_id, WebhookDeliveryRow.status, func.count())
        .where(WebhookDeliveryRow.endpoint_id.in_(wanted))
        .group_by(WebhookDeliveryRow.endpoint_id, WebhookDeliveryRow.status)
    ):
        counts.setdefault(endpoint_id, {})[status] = int(count)
    return counts


def _delivery_page(
    uow: UnitOfWork,
    *,
    endpoint_id: str | None = None,
    organisation: str | None = None,
    status: str | None,
    cursor: int | None,
    limit: int,
) -> dict[str, Any]:
    query = (
        select(WebhookDeliveryRow, OutboxEventRow.type, OutboxEventRow.organisation_id)
        .join(OutboxEventRow, OutboxEventRow.id == WebhookDeliveryRow.event_id)
        .order_by(WebhookDeliveryRow.id.desc())
        .limit(limit + 1)
    )
    if endpoint_id is not None:
        query = query.where(WebhookDeliveryRow.endpoint_id == endpoint_id)
    if organisation is not None:
        query = query.where(OutboxEventRow.organisation_id == organisation)
    if status is not None:
        query = query.where(WebhookDeliveryRow.status == status)
    if cursor is not None:
        query = query.where(WebhookDeliveryRow.id < cursor)
    rows = uow.session.execute(query).all()
    page = rows[:limit]
    return {
        "deliveries": [_delivery_view(row, event_type, org) for row, event_type, org in page],
        "next_cursor": str(page[-1][0].id) if len(rows) > limit else None,
    }


def _delivery_view(row: WebhookDeliveryRow, event_type: str, organisation: str) -> dict[str, Any]:
    def when(value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None

    return {
        "delivery_id": str(row.id),
        "webhook_id": row.endpoint_id,
        "event_id": row.event_id,
        "type": event_type,
        "organisation": organisation,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": when(row.next_attempt_at) if row.status == "pending" else None,
        "last_attempt_at": when(row.last_attempt_at),
        "last_status": row.last_status,
        "last_error": row.last_error,
        "delivered_at": when(row.delivered_at),
        "created_at": utc(row.created_at),
    }


# --- The data-protection officer's view (no person ids: event ids, types, organisations and states only) -----------


def delivery_overview(broker: Broker) -> list[dict[str, Any]]:
    """Every organisation that has registered an endpoint, by name, with its endpoints (the URLs without their query)
    and each endpoint's pending, delivered and failed deliveries."""
    with broker.uow(write=False) as uow:
        rows = list(
            uow.session.execute(
                select(WebhookEndpointRow, OrganisationRow.name)
                .join(OrganisationRow, OrganisationRow.id == WebhookEndpointRow.organisation_id)
                .order_by(OrganisationRow.name, WebhookEndpointRow.created_at, WebhookEndpointRow.id)
            )
        )
        counts = _delivery_counts(uow, [row.id for row, _ in rows])
    found: dict[str, dict[str, Any]] = {}
    for row, name in rows:
        organisation = found.setdefault(
            row.organisation_id, {"organisation": row.organisation_id, "name": name, "endpoints": []}
        )
        view = _endpoint_view(row, counts.get(row.id, {}))
        view["url"] = shown_url(row.url)
        organisation["endpoints"].append(view)
    return list(found.values())


def all_endpoints(broker: Broker) -> list[dict[str, Any]]:
    """`delivery_overview` as one flat list (the DPO systems' API)."""
    return [endpoint for organisation in delivery_overview(broker) for endpoint in organisation["endpoints"]]


def all_deliveries(
    broker: Broker,
    *,
    status: str | None = "failed",
    organisation: str | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Deliveries of every organisation, newest first (by default the failed ones)."""
    with broker.uow(write=False) as uow:
        return _delivery_page(uow, organisation=organisation, status=status, cursor=cursor, limit=limit)


# --- Sending --------------------------------------------------------------------------------------------------------


class AddressRefusedError(NewConnectionError):
    """The host resolves to an address the broker does not connect to (`address_allowed`)."""


def _guarded(base: type[HTTPConnection], allow_loopback: bool, networks: Networks) -> type[HTTPConnection]:
    """`base` (urllib3's HTTP or HTTPS connection) that resolves the host itself, refuses it unless every address it
    resolves to is allowed, and connects to those addresses only — never resolving the name a second time, so that a
    name cannot pass the check with one address and connect to another (DNS rebinding). TLS still verifies the
    certificate against the host name: urllib3 takes the name for SNI and verification from `host`, and only the TCP
    connection from `_dns_host`, which is what is pointed at the checked address (urllib3 2.x)."""

    class Guarded(base):  # type: ignore[valid-type, misc]
        def _new_conn(self) -> socket.socket:
            name: str = self._dns_host
            try:
                found = socket.getaddrinfo(name, self.port, type=socket.SOCK_STREAM)
            except socket.gaierror as error:
                raise NameResolutionError(self.host, self, error) from error
            addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
            if not addresses or not all(
                address_allowed(
                    ipaddress.ip_address(a.partition("%")[0]), allow_loopback=allow_loopback, networks=networks
                )
                for a in addresses
            ):
                raise AddressRefusedError(self, "the host resolves to an address that is not public")
            last: Exception | None = None
            try:
                for address in addresses:
                    self._dns_host = address
                    try:
                        sock: socket.socket = super()._new_conn()
                        return sock
                    except NewConnectionError as error:  # refused or unreachable: the next address, if any
                        last = error
            finally:
                self._dns_host = name
            assert last is not None
            raise last

    Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_loopback: bool, networks: Networks) -> None:
        self._classes = {
            "http": type(
                "GuardedHTTPConnectionPool",
                (HTTPConnectionPool,),
                {"ConnectionCls": _guarded(HTTPConnection, allow_loopback, networks)},
            ),
            "https": type(
                "GuardedHTTPSConnectionPool",
                (HTTPSConnectionPool,),
                {"ConnectionCls": _guarded(HTTPSConnection, allow_loopback, networks)},
            ),
        }
        super().__init__(max_retries=0)  # one request per attempt: the schedule is the broker's

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._classes


@dataclass(frozen=True)
class Attempt:
    """What one POST of a token came to."""

    delivered: bool
    status: int | None  # the HTTP status, None when no response came
    error: str | None  # a short reason, never the URL (its query may hold a receiver's secret) nor a secret
    retry_after: str | None  # the Retry-After field of a 429 or 503 answer
    elapsed_ms: int


class Sender:
    """POSTs tokens (RFC 8935 §2): one requests session per concurrent send, kept for connection reuse. Never uses the
    environment's proxies or .netrc (`trust_env` off): a .netrc password for a host would be sent to a receiver."""

    def __init__(
        self,
        *,
        user_agent: str,
        allow_loopback: bool,
        networks: Networks = (),
        timeouts: tuple[float, float] = TIMEOUTS,
        ca_file: str | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.allow_loopback = allow_loopback
        self.networks = networks
        self.timeouts = timeouts
        self.ca_file = ca_file  # the certificate authorities to trust instead of the system's (None: the system's)
        self._idle: list[requests.Session] = []
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    @classmethod
    def for_broker(cls, broker: Broker) -> Sender:
        return cls(
            user_agent=f"ConsentBroker-Webhooks/1 (+{broker.settings.issuer})",
            allow_loopback=loopback_allowed(broker),
            networks=broker.settings.webhook_networks,
        )

    def _session(self) -> requests.Session:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        session = requests.Session()
        session.trust_env = False
        if self.ca_file is not None:
            session.verify = self.ca_file
        adapter = _GuardedAdapter(self.allow_loopback, self.networks)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with self._lock:
            self._all.append(session)
        return session

    def post(self, url: str, token: str) -> Attempt:
        started = time.monotonic()
        session = self._session()
        try:
            return self._post(session, url, token, started)
        finally:
            with self._lock:
                self._idle.append(session)

    def _post(self, session: requests.Session, url: str, token: str, started: float) -> Attempt:
        try:
            response = session.post(
                url,
                data=token.encode("ascii"),
                headers={"Content-Type": SET_MEDIA_TYPE, "Accept": "application/json", "User-Agent": self.user_agent},
                timeout=self.timeouts,
                allow_redirects=False,
                stream=True,  # only an excerpt of an error answer is read
            )
        except requests.RequestException as error:
            return Attempt(False, None, _request_error(error), None, _since(started))
        with response:
            status = response.status_code
            if 200 <= status < 300:  # RFC 8935 §2.2: 202 Accepted; any success is taken
                return Attempt(True, status, None, None, _since(started))
            if 300 <= status < 400:
                reason = f"HTTP {status}: redirects are not followed; register the URL that answers"
            else:
                try:
                    excerpt = _answer_excerpt(response)
                except requests.RequestException:
                    excerpt = ""
                reason = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
            retry_after = response.headers.get("Retry-After") if status in (429, 503) else None
            return Attempt(False, status, reason[:400], retry_after, _since(started))

    def close(self) -> None:
        with self._lock:
            sessions, self._all, self._idle = self._all, [], []
        for session in sessions:
            session.close()


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _answer_excerpt(response: requests.Response) -> str:
    """The start of an error answer, as one line: RFC 8935 §2.3's `err` and `description` when it is that JSON."""
    raw = next(response.iter_content(4 * EXCERPT), b"")
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("err"), str):
        text = parsed["err"] + (f" ({parsed['description']})" if isinstance(parsed.get("description"), str) else "")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:EXCERPT] + ("…" if len(text) > EXCERPT else "")


def _request_error(error: requests.RequestException) -> str:
    """A short reason for a request that got no answer. Never str(error): requests puts the URL in it."""
    if isinstance(error, requests.ConnectTimeout):
        return f"no connection within {TIMEOUTS[0]:g} s"
    if isinstance(error, requests.ReadTimeout):
        return f"no answer within {TIMEOUTS[1]:g} s"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS failed: the certificate is not valid for the host, or the handshake failed"
    reason: BaseException | None = error.args[0] if error.args and isinstance(error.args[0], BaseException) else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, AddressRefusedError):
        return "refused: the host resolves to an address that is not public"
    if isinstance(reason, NameResolutionError):
        return "the host name could not be resolved"
    if isinstance(reason, NewConnectionError):
        return "the connection was refused or the host is unreachable"
    if isinstance(reason, ProtocolError):
        return "the connection closed without an answer"
    return f"the request failed ({type(error).__name__})"


def sign_test_event(broker: Broker, organisation_id: str, webhook_id: str, now: datetime) -> tuple[str, str]:
    """A `webhook.test` token for an endpoint's test call: its own fresh `jti`, stored nowhere."""
    event_id = new_id("evt")
    claims = security_event_token(
        broker.settings.issuer,
        event_id=event_id,
        event_type=TEST_EVENT,
        organisation_id=organisation_id,
        data={"webhook_id": webhook_id},
        occurred_at=now,
        issued_at=now,
    )
    return event_id, sign_jws(claims, broker.keys, typ=SET_TYP)


def test_endpoint(broker: Broker, caller: Caller, webhook_id: str, *, sender: Sender | None = None) -> dict[str, Any]:
    """POST a signed `webhook.test` token to one of the caller's active endpoints now, and say how it went. Nothing is
    stored; no transaction is open while it is sent."""
    with broker.uow(write=False) as uow:
        row = _own_endpoint(uow, caller, webhook_id)
    if not row.active:
        raise WebhookDisabledError(f"the webhook endpoint {webhook_id} is disabled")
    event_id, token = sign_test_event(broker, row.organisation_id, row.id, broker.clock.now())
    own = sender is None
    sender = sender or Sender.for_broker(broker)
    try:
        attempt = sender.post(row.url, token)
    finally:
        if own:
            sender.close()
    return {
        "event_id": event_id,
        "delivered": attempt.delivered,
        "status": attempt.status,
        "error": attempt.error,
        "elapsed_ms": attempt.elapsed_ms,
    }


# --- The schedule (pure) --------------------------------------------------------------------------------------------


def backoff(
    attempts: int, *, retry_after: timedelta | None = None, draw: Callable[[], float] = _random.random
) -> timedelta:
    """The wait after the `attempts`-th failed attempt: full jitter over min(cap, base × 2^(attempts−1)), and never
    less than the receiver's Retry-After (RFC 9110 §10.2.3) — itself bounded by the cap, so that a receiver cannot
    park a delivery for ever."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(max(attempts, 1) - 1, 20))
    wait: timedelta = ceiling * draw()
    if retry_after is not None:
        wait = max(wait, min(retry_after, BACKOFF_CAP))
    return wait


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date; None for anything else or a time past."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=min(int(value), int(BACKOFF_CAP.total_seconds())))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # RFC 9110 §5.6.7: an HTTP-date is UTC ("GMT")
        return None
    wait = moment - now
    return wait if wait > timedelta(0) else None


def next_step(
    *,
    attempts: int,
    now: datetime,
    event_created: datetime,
    retry_after: timedelta | None = None,
    draw: Callable[[], float] = _random.random,
) -> datetime | None:
    """When to try a delivery again after its `attempts`-th attempt failed at `now`; None to give it up. The last try
    is made at the give-up time itself rather than skipped, so that every event gets its full three days."""
    deadline = utc(event_created) + GIVE_UP_AFTER
    if attempts >= MAX_ATTEMPTS or now >= deadline:
        return None
    return min(now + backoff(attempts, retry_after=retry_after, draw=draw), deadline)


# --- The delivery engine --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lease:
    delivery_id: int
    attempt: int  # the attempt count this lease wrote: the fencing token of its outcome
    endpoint_id: str
    url: str
    event: OutboxEventRow  # detached, loaded in the leasing transaction


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    event_id: str
    endpoint_id: str
    attempt: int
    result: str  # delivered | retry | failed | lost (another worker took the delivery: this outcome is dropped)
    status: int | None
    error: str | None
    next_attempt_at: datetime | None
    elapsed_ms: int


@dataclass
class DeliveryReport:
    outcomes: list[Outcome] = field(default_factory=list)
    given_up: int = 0  # deliveries failed without a send: a lease that ran out on the last attempt, a disabled endpoint

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    def lines(self) -> list[str]:
        return [
            f"webhook deliveries: {len(self.outcomes)} sent — {self.count('delivered')} delivered, "
            f"{self.count('retry')} to retry, {self.count('failed')} given up, {self.count('lost')} taken over by "
            f"another worker; {self.given_up} given up without a send"
        ]


def deliver_due(
    broker: Broker,
    *,
    limit: int = 50,
    now: datetime | None = None,
    lease: timedelta = LEASE,
    sender: Sender | None = None,
    concurrency: int = 4,
) -> DeliveryReport:
    """Take up to `limit` due deliveries, send them (`concurrency` at a time) and record each outcome (see the
    module's docstring). `now` pins the time of the whole round (tests); otherwise the clock is read for the lease and
    again for each outcome."""
    taken, given_up = _lease_due(broker, now=now or broker.clock.now(), limit=limit, lease=lease)
    report = DeliveryReport(given_up=given_up)
    if not taken:
        return report
    own = sender is None
    sender = sender or Sender.for_broker(broker)
    try:
        if concurrency > 1 and len(taken) > 1:
            with ThreadPoolExecutor(min(concurrency, len(taken)), thread_name_prefix="webhook") as pool:
                report.outcomes = list(pool.map(lambda one: _deliver(broker, sender, one, now), taken))
        else:
            report.outcomes = [_deliver(broker, sender, one, now) for one in taken]
    finally:
        if own:
            sender.close()
    return report


def _lease_due(broker: Broker, *, now: datetime, limit: int, lease: timedelta) -> tuple[list[_Lease], int]:
    # A read first: an idle worker's poll takes no write lock on SQLite.
    due = and_(WebhookDeliveryRow.status == "pending", WebhookDeliveryRow.next_attempt_at <= now)
    with broker.uow(write=False) as uow:
        if uow.session.scalar(select(WebhookDeliveryRow.id).where(due).limit(1)) is None:
            return [], 0
    with broker.uow() as uow:
        session = uow.session
        query = (
            select(WebhookDeliveryRow.id, WebhookDeliveryRow.attempts, WebhookEndpointRow.active)
            .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
            .where(due)
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
            .limit(limit)
        )
        if uow.postgres:
            query = query.with_for_update(skip_locked=True, of=WebhookDeliveryRow)
        leased: dict[int, int] = {}
        given_up = 0
        for delivery_id, attempts, active in session.execute(query).all():
            seen = and_(
                WebhookDeliveryRow.id == delivery_id,
                WebhookDeliveryRow.attempts == attempts,
                WebhookDeliveryRow.status == "pending",
            )
            if not active or attempts >= MAX_ATTEMPTS:
                # A delivery created while its endpoint was being disabled, or one whose last attempt's lease ran
                # out (its worker died mid-send): given up without another send.
                reason = ENDPOINT_DISABLED if not active else "the worker stopped during the last attempt"
                given_up += _update(session, seen, status="failed", next_attempt_at=None, last_error=reason)
                continue
            if _update(session, seen, attempts=attempts + 1, next_attempt_at=now + lease, last_attempt_at=now):
                leased[delivery_id] = attempts + 1
        taken: list[_Lease] = []
        if leased:
            rows = session.execute(
                select(WebhookDeliveryRow.id, WebhookDeliveryRow.endpoint_id, WebhookEndpointRow.url, OutboxEventRow)
                .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
                .join(OutboxEventRow, OutboxEventRow.id == WebhookDeliveryRow.event_id)
                .where(WebhookDeliveryRow.id.in_(list(leased)))
                .order_by(OutboxEventRow.seq, WebhookDeliveryRow.id)
            ).all()
            taken = [_Lease(i, leased[i], endpoint, url, event) for i, endpoint, url, event in rows]
        uow.commit()
    return taken, given_up


def _update(session: Session, condition: ColumnElement[bool], **values: Any) -> int:
    """UPDATE the deliveries matching `condition`; how many it changed."""
    result = session.execute(
        update(WebhookDeliveryRow).where(condition).values(**values).execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount)


def _deliver(broker: Broker, sender: Sender, lease: _Lease, pinned: datetime | None) -> Outcome:
    token = sign_event(broker, lease.event, now=pinned or broker.clock.now())
    attempt = sender.post(lease.url, token)
    return _record(broker, lease, attempt, pinned or broker.clock.now())


def _record(broker: Broker, lease: _Lease, attempt: Attempt, now: datetime) -> Outcome:
    ours = and_(WebhookDeliveryRow.id == lease.delivery_id, WebhookDeliveryRow.attempts == lease.attempt)
    next_at: datetime | None = None
    if attempt.delivered:
        result = "delivered"
        # Disabling the endpoint while this send was under way marked it failed; it did arrive, and says so.
        condition = and_(
            ours,
            or_(
                WebhookDeliveryRow.status == "pending",
                and_(WebhookDeliveryRow.status == "failed", WebhookDeliveryRow.last_error == ENDPOINT_DISABLED),
            ),
        )
        values: dict[str, Any] = {
            "status": "delivered",
            "delivered_at": now,
            "next_attempt_at": None,
            "last_error": None,
        }
    else:
        retry_after = parse_retry_after(attempt.retry_after, now)
        next_at = next_step(
            attempts=lease.attempt, now=now, event_created=lease.event.created_at, retry_after=retry_after
        )
        result = "retry" if next_at is not None else "failed"
        condition = and_(ours, WebhookDeliveryRow.status == "pending")
        values = {"status": "pending" if next_at else "failed", "next_attempt_at": next_at, "last_error": attempt.error}
    with broker.uow() as uow:
        recorded = _update(uow.session, condition, last_status=attempt.status, **values)
        uow.commit()
    if not recorded:
        result, next_at = "lost", None
    outcome = Outcome(
        delivery_id=lease.delivery_id,
        event_id=lease.event.id,
        endpoint_id=lease.endpoint_id,
        attempt=lease.attempt,
        result=result,
        status=attempt.status,
        error=attempt.error,
        next_attempt_at=next_at,
        elapsed_ms=attempt.elapsed_ms,
    )
    # One line per outcome, ids only: no URL, no person.
    log.info(
        "webhook delivery %s",
        result,
        extra={
            "delivery_id": lease.delivery_id,
            "event_id": lease.event.id,
            "event_type": lease.event.type,
            "webhook_id": lease.endpoint_id,
            "attempt": lease.attempt,
            "http_status": attempt.status,
            "error": attempt.error,
            "next_attempt_at": next_at.isoformat() if next_at else None,
            "elapsed_ms": attempt.elapsed_ms,
        },
    )
    return outcome
