"""Idempotent writes: the first response to a request sent with an `Idempotency-Key`, kept for its retries
(draft-ietf-httpapi-idempotency-key-header-07; the HTTP side is broker/http/api/idempotency.py).

A retry must never do the work twice (disclose twice, deposit twice), so the stored response is written in the
same transaction as the write it answers: `idempotent_write` opens a write unit of work, looks the key up and
makes the unit of work ambient (broker/adapters/uow.py), so that the use case's own `broker.uow()` joins it as a
savepoint; then `Attempt.store` inserts the response and commits once. A crash before that commit leaves neither
the write nor the response; after it, both. A 4xx answer is stored too (a refused disclosure has committed its
`disclosure:deny` entry, and its retry is replayed rather than decided again); a 5xx or an unexpected error
rolls everything back and leaves the key unused.

Concurrency. Two requests with the same key must not both do the work:
- SQLite: write transactions are serialised by the database's write lock, and the key is looked up under it, so
  the second request sees the first one's committed row (or none, if the first rolled back) and is replayed.
- PostgreSQL: the first request holds a transaction-level advisory lock on the key until it commits; a request
  that cannot take it at once is answered 409 (draft §2.6, "concurrent request"), not kept waiting. A request
  that takes it reads after the holder's commit (READ COMMITTED reads anew per statement) and so finds the row.
  The primary key (client id, key) is the last guard: a second insert fails and rolls its whole transaction back.

Keys are scoped per partner (draft §5: a composite of the client's identity and the key), so partners can
neither collide nor read each other's responses. A key comes back for another request — another method, path,
query, body, or another acting professional — with 422: a professional may not obtain the answer decided for
another one's role (DESIGN.md invariant 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text, tuple_

from broker.adapters.database import Prepared
from broker.adapters.envelope import Sealed, idempotency_aad, open_sealed, seal
from broker.adapters.orm import ConsentRow, IdempotencyKeyRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import IdempotencyKeyInUseError, IdempotencyKeyReusedError, ReplayAfterWithdrawalError
from broker.domain.model import Caller
from broker.services import Broker

__all__ = ["Attempt", "StoredResponse", "idempotent_write", "purge_expired_keys", "request_fingerprint"]

_KEYS = IdempotencyKeyRow.__table__
_FIND = Prepared(
    select(
        _KEYS.c.request_hash,
        _KEYS.c.status,
        _KEYS.c.headers,
        _KEYS.c.kek_id,
        _KEYS.c.wrapped_key,
        _KEYS.c.nonce,
        _KEYS.c.ciphertext,
        _KEYS.c.expires_at,
    ).where(_KEYS.c.client_id == bindparam("client_id"), _KEYS.c.key == bindparam("key"))
)
_FORGET = Prepared(delete(_KEYS).where(_KEYS.c.client_id == bindparam("client_id"), _KEYS.c.key == bindparam("key")))
_INSERT = Prepared(insert(_KEYS))
# PostgreSQL's two-int4 advisory locks are a space apart from the one-bigint lock of the audit sequencer
# (broker/adapters/leader.py). The class is the first 4 bytes of SHA-256("consent-broker/idempotency-key").
_LOCK_CLASS = int.from_bytes(hashlib.sha256(b"consent-broker/idempotency-key").digest()[:4], "big", signed=True)
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:lock_class, :lock_key)")
_FINGERPRINT_LABEL = b"consent-broker/idempotency-fingerprint/v1"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def request_fingerprint(broker: Broker, caller: Caller, method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests "the same" for a key (draft §2.4): the method, path, query and the whole body, and
    the acting professional (id and role) — hex HMAC-SHA256.

    Keyed because a body may hold an identity code (`/persons/resolve`), and a plain hash of so small a space
    could be reversed (DESIGN.md invariant 6). The key is derived from the identity-code index key, which never
    rotates, for this use only."""
    fingerprint_key = hmac.new(broker.keys.hetu_index_key(), _FINGERPRINT_LABEL, hashlib.sha256).digest()
    mac = hmac.new(fingerprint_key, digestmod=hashlib.sha256)
    for part in (caller.actor_id.encode(), caller.actor_role.encode(), method.encode(), path.encode(), query):
        mac.update(len(part).to_bytes(4, "big") + part)  # length-prefixed: no two part lists encode alike
    mac.update(body)
    return mac.hexdigest()


class Attempt:
    """The first request with its key, inside the ambient unit of work, or a retry (`replay` is set)."""

    def __init__(
        self,
        broker: Broker,
        uow: UnitOfWork | None,
        client_id: str,
        key: str,
        fingerprint: str,
        replay: StoredResponse | None = None,
    ) -> None:
        self._broker = broker
        self._uow = uow
        self._client_id = client_id
        self._key = key
        self._fingerprint = fingerprint
        self.replay = replay

    def store(self, response: StoredResponse) -> None:
        """Store the response with the write it answers, and commit both."""
        uow, self._uow = self._uow, None
        if uow is None:
            raise RuntimeError("a replayed request, or one whose response is stored already, stores nothing")
        now = self._broker.clock.now()
        sealed = seal(response.body, idempotency_aad(self._client_id, self._key), self._broker.keys)
        _INSERT.execute(
            uow.session,
            {
                "client_id": self._client_id,
                "key": self._key,
                "request_hash": self._fingerprint,
                "status": response.status,
                "headers": [list(pair) for pair in response.headers],
                "kek_id": sealed.kek_id,
                "wrapped_key": sealed.wrapped_key,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "created_at": now,
                "expires_at": now + timedelta(seconds=self._broker.settings.idempotency_key_ttl),
            },
        )
        uow.commit()


@contextlib.contextmanager
def idempotent_write(broker: Broker, client_id: str, key: str, fingerprint: str) -> Iterator[Attempt]:
    """Claim `key` for this request, or find the response stored for it.

    Yields an `Attempt`. With `replay` set, the caller answers with it and does nothing else. Otherwise the block
    runs inside the ambient unit of work — the use case joins it — and calls `Attempt.store` to commit; leaving
    the block without storing (a 5xx) or with an exception rolls back everything, the key included.
    Raises IdempotencyKeyInUseError (409) and IdempotencyKeyReusedError (422)."""
    with broker.uow() as uow:
        now = broker.clock.now()
        found = _claim(uow, client_id, key, now)
        if found is None:
            with uow.ambient():
                yield Attempt(broker, uow, client_id, key, fingerprint)
            return
        # compare_digest: how much of a fingerprint matched says nothing to the caller.
        if not hmac.compare_digest(found.request_hash, fingerprint):
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was first used for another request (method, path, body or acting "
                "professional); use a new key for a new request",
                field="Idempotency-Key",
            )
        replay = _stored(broker, found, client_id, key)
        _require_consents_still_active(uow, replay, now)
    # The unit of work is closed (on SQLite, the write lock released) before the replay is answered.
    yield Attempt(broker, None, client_id, key, fingerprint, replay=replay)


def _consents_behind(response: StoredResponse) -> set[str]:
    """The consents a stored disclosure answer was permitted under: its own basis and each record's."""
    if response.status >= 300:
        return set()
    try:
        body = json.loads(response.body)
    except ValueError:
        return set()
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        return set()  # not a disclosure: nothing of a person's record is sent again
    bases = [body.get("basis")] + [record.get("basis") for record in body["records"] if isinstance(record, dict)]
    return {basis["consent_id"] for basis in bases if isinstance(basis, dict) and basis.get("consent_id")}


def _require_consents_still_active(uow: UnitOfWork, replay: StoredResponse, now: datetime) -> None:
    """A replay re-sends record content. It may do so only while every consent it was permitted under is still
    active: after a withdrawal nothing under that consent leaves the broker again, a retry included (DESIGN.md
    invariant 3). The consents are read in this transaction, as a new disclosure would read them."""
    consent_ids = _consents_behind(replay)
    if not consent_ids:
        return
    rows = uow.session.execute(
        select(ConsentRow.id, ConsentRow.status, ConsentRow.valid_until).where(ConsentRow.id.in_(consent_ids))
    ).all()
    ended = sorted(
        row.id
        for row in rows
        if row.status != "active" or (row.valid_until is not None and utc(row.valid_until) <= now)
    )
    if ended or len(rows) != len(consent_ids):
        raise ReplayAfterWithdrawalError(
            "the disclosure answered under this Idempotency-Key was permitted under consent "
            f"{', '.join(repr(c) for c in ended or sorted(consent_ids))}, which is no longer active; its content "
            "is not sent again. The disclosure stays in the audit log."
        )


def _claim(uow: UnitOfWork, client_id: str, key: str, now: datetime) -> Any | None:
    """Lock the key for this transaction and read its stored response, if it has a live one."""
    if uow.postgres:
        lock_key = int.from_bytes(
            hashlib.sha256(client_id.encode() + b"\x00" + key.encode()).digest()[:4], "big", signed=True
        )
        locked = uow.session.execute(_TRY_LOCK, {"lock_class": _LOCK_CLASS, "lock_key": lock_key}).scalar()
        if not locked:
            # Another transaction holds the key: the first request is still running (or, once in 2^32, another
            # key of the same hash is — a harmless 409 that the retry gets past).
            raise IdempotencyKeyInUseError(
                "a request with this Idempotency-Key is still being processed; retry when it has been answered",
                field="Idempotency-Key",
            )
    found = _FIND.first(uow.session, {"client_id": client_id, "key": key})
    if found is not None and utc(found.expires_at) <= now:
        # Expired but not yet purged: the key is free again (draft §2.3), as if the periodic job had run.
        _FORGET.execute(uow.session, {"client_id": client_id, "key": key})
        return None
    return found


def _stored(broker: Broker, row: Any, client_id: str, key: str) -> StoredResponse:
    """The stored response of a result row of `_FIND`, its body opened."""
    sealed = Sealed(ciphertext=row.ciphertext, nonce=row.nonce, wrapped_key=row.wrapped_key, kek_id=row.kek_id)
    body = open_sealed(sealed, idempotency_aad(client_id, key), broker.keys)
    headers = tuple((str(name), str(value)) for name, value in row.headers)
    return StoredResponse(status=int(row.status), headers=headers, body=body)


def purge_expired_keys(broker: Broker, *, batch_size: int = 500) -> int:
    """Forget stored responses whose time is over (for `broker jobs run`); returns how many were deleted.

    In batches, each its own short transaction: on SQLite a delete holds the write lock that every writer needs."""
    now = broker.clock.now()
    expired = select(_KEYS.c.client_id, _KEYS.c.key).where(_KEYS.c.expires_at <= now).limit(batch_size)
    statement = delete(_KEYS).where(tuple_(_KEYS.c.client_id, _KEYS.c.key).in_(expired))
    done = 0
    while True:
        with broker.uow() as uow:
            deleted: int = uow.session.execute(statement).rowcount  # type: ignore[attr-defined]
            uow.commit()
        done += deleted
        if deleted < batch_size:
            return done
