"""Appending to the audit log inside the transaction of the event it records (DESIGN.md invariant 2).

Each entry gets the next gap-free index; the head row keeps the size and the Merkle frontier so that the
running root costs O(log n) per append. On PostgreSQL the head row is locked `FOR UPDATE`, which serialises
appends — simple and correct for v1; issue #5 replaces it with a sequencer that integrates entries in batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from audit import Frontier, build_entry, commit_actor, entry_bytes, leaf_hash, new_actor_salt
from broker.adapters.orm import AuditActorRow, AuditEntryRow, AuditHeadRow
from broker.adapters.uow import UnitOfWork
from broker.domain.model import Caller

HEAD_ID = 1


def payload_digest(payload: object) -> str:
    """SHA-256 (hex) of a disclosed payload: the JSON with sorted keys, no whitespace, UTF-8. Record content may
    hold fractions (hours, rates), which the log's own canonical form refuses; this digest only has to be
    reproducible from the response the recipient received, not be a log entry."""
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _head(uow: UnitOfWork) -> AuditHeadRow:
    stmt = select(AuditHeadRow).where(AuditHeadRow.id == HEAD_ID)
    if uow.postgres:
        stmt = stmt.with_for_update()
    head = uow.session.scalars(stmt).one_or_none()
    if head is None:
        empty = Frontier.empty()
        head = AuditHeadRow(id=HEAD_ID, size=0, frontier=empty.to_bytes(), root=empty.root())
        uow.session.add(head)
    return head


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
    head = _head(uow)
    index = head.size
    actor_id, actor_role = (caller.actor_id, caller.actor_role) if caller else (actor or (None, None))
    salt = new_actor_salt() if actor_id else None
    entry = build_entry(
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
    data = entry_bytes(entry)
    leaf = leaf_hash(data)
    frontier = Frontier.from_bytes(head.size, head.frontier)
    frontier.append(leaf)
    head.size = frontier.size
    head.frontier = frontier.to_bytes()
    head.root = frontier.root()
    row = AuditEntryRow(
        idx=index,
        entry=data,
        leaf_hash=leaf,
        logged_at=now,
        event=event,
        person_id=person_id,
        organisation=caller.organisation_id if caller else None,
    )
    if actor_id and salt:
        row.actor = AuditActorRow(idx=index, actor_id=actor_id, salt=salt)
    uow.session.add(row)
    return index
