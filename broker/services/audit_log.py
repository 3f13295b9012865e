"""Appending to the audit log inside the transaction of the event it records (DESIGN.md invariant 2).

Each entry gets the next gap-free index; the head row keeps the size and the Merkle frontier so that the
running root costs O(log n) per append. On PostgreSQL the head row is locked `FOR UPDATE`, which serialises
appends — simple and correct for v1; issue #5 replaces it with a sequencer that integrates entries in batches.

An append is one read of the head and three writes (entry, actor opening, head): prebuilt Core statements run
at once in the caller's transaction (`Prepared`), not objects added to the ORM session — the log is
append-only, nothing reads these rows back as objects in the same unit of work, and the ORM flush of them cost
more than the rest of an append (docs/benchmarks.md). They commit or roll back with the use case's
transaction exactly as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from audit import Frontier, commit_actor, encode_entry, leaf_hash, new_actor_salt
from broker.adapters.database import Prepared
from broker.adapters.orm import AuditActorRow, AuditEntryRow, AuditHeadRow
from broker.adapters.uow import UnitOfWork
from broker.domain.model import Caller

HEAD_ID = 1

_HEAD = AuditHeadRow.__table__
_READ_HEAD = Prepared(select(_HEAD.c.size, _HEAD.c.frontier).where(_HEAD.c.id == HEAD_ID))
_READ_HEAD_FOR_UPDATE = Prepared(select(_HEAD.c.size, _HEAD.c.frontier).where(_HEAD.c.id == HEAD_ID).with_for_update())
_INSERT_HEAD = Prepared(insert(_HEAD))
_UPDATE_HEAD = Prepared(
    update(_HEAD)
    .where(_HEAD.c.id == HEAD_ID, _HEAD.c.size == bindparam("old_size"))
    .values(size=bindparam("size"), frontier=bindparam("frontier"), root=bindparam("root"))
)
_INSERT_ENTRY = Prepared(insert(AuditEntryRow.__table__))
_INSERT_ACTOR = Prepared(insert(AuditActorRow.__table__))


def payload_digest(payload: object) -> str:
    """SHA-256 (hex) of a disclosed payload: the JSON with sorted keys, no whitespace, UTF-8. Record content may
    hold fractions (hours, rates), which the log's own canonical form refuses; this digest only has to be
    reproducible from the response the recipient received, not be a log entry."""
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _head(uow: UnitOfWork) -> Frontier:
    """The log's frontier as of this transaction; on PostgreSQL the head row stays locked until commit."""
    session = uow.session
    row = (_READ_HEAD_FOR_UPDATE if uow.postgres else _READ_HEAD).first(session)
    if row is None:
        empty = Frontier.empty()
        _INSERT_HEAD.execute(session, {"id": HEAD_ID, "size": 0, "frontier": empty.to_bytes(), "root": empty.root()})
        return empty
    return Frontier.from_bytes(row.size, bytes(row.frontier))


def append_entry(
    uow: UnitOfWork,
    *,
    event: str,
    now: datetime,
    caller: Caller | None = None,
    actor: tuple[str, str] | None = None,
    person_id: str | None = None,
    category: str | None = None,
    purpose: str | None = None,
    effect: str | None = None,
    basis: dict[str, Any] | None = None,
    policy_version: str | None = None,
    record_ids: Sequence[str] = (),
    fields: Sequence[str] = (),
    payload_sha256: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append one entry and return its index. `actor` = (actor id, role) for an actor who is not a partner's
    professional (a person in the portal, the system); the id goes into the leaf only as a salted commitment."""
    frontier = _head(uow)
    index = frontier.size
    actor_id, actor_role = (caller.actor_id, caller.actor_role) if caller else (actor or (None, None))
    salt = new_actor_salt() if actor_id else None
    data = encode_entry(
        index=index,
        logged_at=now,
        event=event,
        request_id=caller.request_id if caller else None,
        partner=caller.partner_id if caller else None,
        organisation=caller.organisation_id if caller else None,
        actor_role=actor_role,
        actor_commitment=commit_actor(actor_id, salt) if actor_id and salt else None,
        person_id=person_id,
        category=category,
        purpose=purpose,
        effect=effect,
        basis=basis,
        policy_version=policy_version,
        record_ids=record_ids,
        fields=fields,
        payload_sha256=payload_sha256,
        detail=detail,
    )
    leaf = leaf_hash(data)
    frontier.append(leaf)
    session = uow.session
    _INSERT_ENTRY.execute(
        session,
        {
            "idx": index,
            "entry": data,
            "leaf_hash": leaf,
            "logged_at": now,
            "event": event,
            "person_id": person_id,
            "organisation": caller.organisation_id if caller else None,
        },
    )
    if actor_id and salt:
        _INSERT_ACTOR.execute(session, {"idx": index, "actor_id": actor_id, "salt": salt})
    moved = _UPDATE_HEAD.execute(
        session,
        {"old_size": index, "size": frontier.size, "frontier": frontier.to_bytes(), "root": frontier.root()},
    )
    if moved.rowcount != 1:  # the head moved under this transaction: never write two leaves at one index
        raise RuntimeError("the audit log head changed during an append")
    return index
