"""Appending to the audit log inside the transaction of the event it records (DESIGN.md invariant 2).

An append is one insert of the entry (and one of its actor opening): the entry gets an append id but no tree
position, and a trigger puts it in the sequencer's queue (audit_pending). It commits or rolls back with the use
case, so a disclosure is never without its entry. Positions, leaf hashes, subtree hashes and signed checkpoints
are the sequencer's work (broker/services/sequencer.py), which integrates committed entries in batches and
stores each position beside the entry, never rewriting it: the entry's bytes are written once. Appends
therefore share no row: a chain head locked by every disclosure serialised them all on PostgreSQL
(PITFALLS.md).

The statements are prebuilt Core statements run at once in the caller's transaction (`Prepared`), not objects
added to the ORM session: nothing reads these rows back as objects in the same unit of work, and the ORM flush
of them cost more than the rest of an append (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from audit import commit_actor, new_actor_salt
from audit.entry import encode_pending
from broker.adapters.database import Prepared
from broker.adapters.orm import AuditActorRow, AuditEntryRow
from broker.adapters.uow import UnitOfWork
from broker.domain.model import Caller

_ENTRIES = AuditEntryRow.__table__
_INSERT_ENTRY = Prepared(insert(_ENTRIES).returning(_ENTRIES.c.id))
_INSERT_ACTOR = Prepared(insert(AuditActorRow.__table__))


# The encoder `payload_digest` uses, built once: json.dumps with these options builds a new one on every call.
_PAYLOAD_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_digest(payload: object) -> str:
    """SHA-256 (hex) of a disclosed payload: the JSON with sorted keys, no whitespace, UTF-8. Record content may
    hold fractions (hours, rates), which the log's own canonical form refuses; this digest only has to be
    reproducible from the response the recipient received, not be a log entry."""
    return hashlib.sha256(_PAYLOAD_JSON.encode(payload).encode("utf-8")).hexdigest()


def append_entry(uow: UnitOfWork, **fields: Any) -> int:
    """Append one entry (the arguments of `new_entry`) and return its append id (not yet its tree index: the
    sequencer gives that)."""
    return append_pending(uow, new_entry(**fields))


PendingEntry = tuple[dict[str, Any], tuple[str, str] | None]


def new_entry(
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
) -> PendingEntry:
    """An entry to append with `append_pending`, built ahead of its transaction's writes (a disclosure builds its
    own while it decides, before it takes SQLite's write lock). `actor` = (actor id, role) for an actor who is not a
    partner's professional (a person in the portal, the system); the id goes into the leaf only as a salted
    commitment, with a fresh salt."""
    named = caller.actor_id if caller else (actor[0] if actor else None)
    return pending_entry(
        event=event,
        now=now,
        salt=new_actor_salt() if named else None,
        caller=caller,
        actor=actor,
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


def append_pending(uow: UnitOfWork, entry: PendingEntry) -> int:
    """Insert an entry built by `new_entry` (and its actor opening) in `uow`'s transaction; its append id."""
    row, opening = entry
    session = uow.session
    entry_id = int(_INSERT_ENTRY.execute(session, row).fetchone()[0])
    if opening is not None:
        _INSERT_ACTOR.execute(session, {"entry_id": entry_id, "actor_id": opening[0], "salt": opening[1]})
    return entry_id


def pending_entry(
    *,
    event: str,
    now: datetime,
    salt: str | None,
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
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """What `append_entry` inserts for one entry, built without a database, for loads that insert many entries at
    once (`broker bench seed`, broker/seed/): the audit_entries row without its append id, which the database or
    the loader gives, and the actor opening (actor id, salt) kept beside it in audit_actors, None when no actor
    is named. `salt` is the actor commitment's salt (64 hex digits) when an actor is named; a loader that must be
    reproducible passes its own, where `append_entry` draws a fresh one. Same arguments and checks otherwise."""
    actor_id, actor_role = (caller.actor_id, caller.actor_role) if caller else (actor or (None, None))
    if actor_id and not salt:
        raise ValueError("an entry that names an actor needs the salt of its commitment")
    organisation = caller.organisation_id if caller else None
    data, split = encode_pending(
        logged_at=now,
        event=event,
        request_id=caller.request_id if caller else None,
        partner=caller.partner_id if caller else None,
        organisation=organisation,
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
    basis_kind = basis.get("kind") if basis else None
    row = {
        "entry": data,
        "split": split,
        "logged_at": now,
        "event": event,
        "person_id": person_id,
        "organisation": organisation,
        "category": category,
        "purpose": purpose,
        "effect": effect,
        "basis_kind": basis_kind if isinstance(basis_kind, str) else None,
    }
    return row, ((actor_id, salt) if actor_id and salt else None)
