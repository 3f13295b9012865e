"""Reading the audit log: the newest checkpoint, inclusion and consistency proofs (RFC 9162 §2.1.3, §2.1.4),
and searching entries. For the DPO's systems (scope `audit:read`), the DPO workspace and the person's own proof.

Hashes travel as standard base64, as in checkpoints (C2SP tlog-checkpoint). Proofs are built from the stored
subtree hashes in O(log n) reads and are meant to be checked by the reader against a signed checkpoint, not
trusted: `python -m audit verify-entry` and the portal's in-browser check do that.

An entry's bytes are stored once, as appended — without the index member — and its index and leaf hash beside
it (audit_leaves); the final bytes that the leaf hashes are derived where they are read (`final_bytes`).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select

from audit.entry import place_index
from audit.errors import AuditError
from audit.proofs import consistency_nodes, consistency_proof, inclusion_nodes, inclusion_proof
from broker.adapters.orm import AuditActorRow, AuditCheckpointRow, AuditEntryRow, AuditLeafRow
from broker.domain.clock import utc
from broker.domain.errors import InvalidRequestError, NotFoundError
from broker.domain.model import Caller
from broker.services import Broker
from broker.services.audit_log import append_entry
from broker.services.sequencer import load_nodes, origin_of, read_head, read_nodes_and_size, verifier_keys

MAX_PAGE = 500


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _checkpoint_view(row: Any) -> dict[str, Any]:
    return {"tree_size": row.size, "root_hash": b64(bytes(row.root)), "note": row.note, "signed_at": utc(row.signed_at)}


def latest_checkpoint(broker: Broker) -> dict[str, Any]:
    with broker.uow(write=False) as uow:
        row = uow.session.execute(select(AuditCheckpointRow).order_by(AuditCheckpointRow.id.desc()).limit(1)).scalar()
        head = read_head(uow)
    if row is None:
        raise NotFoundError("no checkpoint has been signed yet")
    view = _checkpoint_view(row)
    view["origin"] = origin_of(broker)
    view["verifier_keys"] = verifier_keys(broker)
    view["exported_at"] = utc(head.exported_at) if head is not None and head.exported_at is not None else None
    return view


def inclusion(broker: Broker, index: int, tree_size: int) -> dict[str, Any]:
    if tree_size < 1:
        raise InvalidRequestError("tree_size must be at least 1", field="tree_size")
    if index < 0 or index >= tree_size:
        raise InvalidRequestError(f"index must be between 0 and tree_size - 1 ({tree_size - 1})", field="index")
    wanted = [*inclusion_nodes(index, tree_size), (0, index)]
    with broker.db.one_statement() as connection:
        # The hashes and the log's size in one statement; the size is checked before the hashes are used.
        nodes, size = read_nodes_and_size(connection, wanted)
    if tree_size > size:
        raise InvalidRequestError(f"tree_size must be between 1 and {size}, the log's size", field="tree_size")
    if any(node not in nodes for node in wanted):
        raise AuditError("the log's stored tree is missing nodes of this proof")
    proof = inclusion_proof(index, tree_size, nodes)
    return {
        "index": index,
        "tree_size": tree_size,
        "leaf_hash": b64(nodes[(0, index)]),
        "inclusion_path": [b64(h) for h in proof],
    }


def consistency(broker: Broker, first: int, second: int) -> dict[str, Any]:
    if second < 1:
        raise InvalidRequestError("second must be at least 1", field="second")
    if first < 1 or first > second:
        raise InvalidRequestError("first must be between 1 and second", field="first")
    wanted = consistency_nodes(first, second)
    with broker.db.one_statement() as connection:
        # As for inclusion: the hashes and the log's size in one statement, the size checked first.
        nodes, size = read_nodes_and_size(connection, wanted)
    if second > size:
        raise InvalidRequestError(f"second must be between 1 and {size}, the log's size", field="second")
    if any((int(level), int(idx)) not in nodes for level, idx in wanted):
        raise AuditError("the log's stored tree is missing nodes of this proof")
    proof = consistency_proof(first, second, nodes)
    return {"first": first, "second": second, "consistency_path": [b64(h) for h in proof]}


# -- entries --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryQuery:
    person_id: str | None = None
    organisation: str | None = None
    event: str | None = None
    category: str | None = None
    purpose: str | None = None
    effect: str | None = None
    basis_kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    entry_id: int | None = None
    actor_id: str | None = None
    after: int | None = None  # cursor: the last entry id of the previous page
    limit: int = 100


def final_bytes(entry: bytes, split: int, index: int | None) -> bytes:
    """An entry's canonical bytes (RFC 8785) as the log holds them: once it has its index, the stored pending bytes
    with the index member put in at `split` (`audit.place_index`) — exactly the bytes its leaf hashes and an
    export holds; before that, the pending bytes, without "index". Raises AuditError if the stored offset
    cannot be right (`broker audit verify` names such a row)."""
    data = bytes(entry)
    return data if index is None else place_index(data, split, index)


def shown_bytes(entry: bytes, split: int, index: int | None) -> bytes:
    """`final_bytes` for a page that shows an entry: the stored bytes as they are if an altered offset leaves no
    final form, so that the log can still be looked at (the integrity check names the row)."""
    try:
        return final_bytes(entry, split, index)
    except AuditError:
        return bytes(entry)


def positioned() -> Select[AuditEntryRow, int, bytes]:
    """Entries with their tree index and leaf hash: rows of (AuditEntryRow, idx, leaf_hash), both None while the
    entry awaits the sequencer."""
    return select(AuditEntryRow, AuditLeafRow.idx, AuditLeafRow.leaf_hash).outerjoin(
        AuditLeafRow, AuditLeafRow.entry_id == AuditEntryRow.id
    )


def entry_view(row: AuditEntryRow, index: int | None, leaf_hash: bytes | None) -> dict[str, Any]:
    data = shown_bytes(row.entry, row.split, index)
    return {
        "entry_id": row.id,
        "index": index,
        "leaf_hash": b64(bytes(leaf_hash)) if leaf_hash is not None else None,
        # The canonical bytes themselves, as a string: what the leaf hashes (before sequencing, without "index").
        "canonical": data.decode("utf-8"),
        "entry": json.loads(data),
    }


def filtered(query: EntryQuery) -> Select[AuditEntryRow, int, bytes]:
    """`positioned()` entries that match `query`'s filters."""
    stmt = positioned()
    columns = {
        "person_id": AuditEntryRow.person_id,
        "organisation": AuditEntryRow.organisation,
        "event": AuditEntryRow.event,
        "category": AuditEntryRow.category,
        "purpose": AuditEntryRow.purpose,
        "effect": AuditEntryRow.effect,
        "basis_kind": AuditEntryRow.basis_kind,
        "entry_id": AuditEntryRow.id,
    }
    for name, column in columns.items():
        value = getattr(query, name)
        if value is not None:
            stmt = stmt.where(column == value)
    if query.since is not None:
        stmt = stmt.where(AuditEntryRow.logged_at >= query.since)
    if query.until is not None:
        stmt = stmt.where(AuditEntryRow.logged_at < query.until)
    if query.actor_id is not None:
        stmt = stmt.join(AuditActorRow, AuditActorRow.entry_id == AuditEntryRow.id).where(
            AuditActorRow.actor_id == query.actor_id
        )
    return stmt


def search_entries(broker: Broker, caller: Caller | None, query: EntryQuery) -> dict[str, Any]:
    """A page of entries, oldest first, and the cursor for the next page (None at the end). The search itself
    is logged: reading the log is processing the personal data in it."""
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    stmt = filtered(query).order_by(AuditEntryRow.id).limit(query.limit + 1)
    if query.after is not None:
        stmt = stmt.where(AuditEntryRow.id > query.after)
    with broker.uow() as uow:
        rows = list(uow.session.execute(stmt))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if caller is not None:
            append_entry(
                uow,
                event="audit:query",
                now=broker.clock.now(),
                caller=caller,
                person_id=query.person_id,
                detail={"filters": _filters(query), "returned": len(rows)},
            )
            uow.commit()
    return {
        "entries": [entry_view(*r) for r in rows],
        "next_cursor": str(rows[-1].AuditEntryRow.id) if more and rows else None,
    }


def entry_at(broker: Broker, caller: Caller | None, index: int) -> dict[str, Any]:
    if index > 2**63 - 1:  # beyond what the index column holds: there is no such entry
        raise NotFoundError(f"no entry at index {index}")
    with broker.uow() as uow:
        found = uow.session.execute(
            select(AuditEntryRow, AuditLeafRow.leaf_hash)
            .join(AuditLeafRow, AuditLeafRow.entry_id == AuditEntryRow.id)
            .where(AuditLeafRow.idx == index)
        ).first()
        if found is None:
            raise NotFoundError(f"no entry at index {index}")
        row = found.AuditEntryRow
        if caller is not None:
            append_entry(
                uow,
                event="audit:query",
                now=broker.clock.now(),
                caller=caller,
                person_id=row.person_id,
                detail={"filters": {"index": index}, "returned": 1},
            )
            uow.commit()
        return entry_view(row, index, found.leaf_hash)


def _filters(query: EntryQuery) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("person_id", "organisation", "event", "category", "purpose", "effect", "basis_kind", "entry_id"):
        value = getattr(query, name)
        if value is not None:
            out[name] = value
    if query.actor_id is not None:
        out["actor"] = True  # which professional was searched for stays out of the leaf, like every actor id
    for name in ("since", "until"):
        value = getattr(query, name)
        if value is not None:
            out[name] = utc(value).isoformat()
    return out


def proof_bundle(broker: Broker, entry_id: int) -> dict[str, Any] | None:
    """Everything needed to check one entry offline: its canonical bytes, index, the newest checkpoint, and the
    inclusion proof against that checkpoint's tree (`python -m audit verify-entry`, the portal's check). None
    while the entry awaits its position."""
    with broker.uow(write=False) as uow:
        found = uow.session.execute(positioned().where(AuditEntryRow.id == entry_id)).first()
        if found is None:
            raise NotFoundError("no such audit entry")
        row, index = found.AuditEntryRow, found.idx
        if index is None:
            return None
        checkpoint = uow.session.execute(
            select(AuditCheckpointRow).order_by(AuditCheckpointRow.id.desc()).limit(1)
        ).scalar()
        if checkpoint is None or checkpoint.size <= index:
            return None
        proof = inclusion_proof(index, checkpoint.size, load_nodes(uow, inclusion_nodes(index, checkpoint.size)))
        return {
            # An altered offset gives the stored bytes, which then fail the reader's check against the signed root.
            "entry": shown_bytes(row.entry, row.split, index).decode("utf-8"),
            "index": index,
            "tree_size": checkpoint.size,
            "inclusion_proof": [b64(h) for h in proof],
            "checkpoint": checkpoint.note,
            "verifier_keys": verifier_keys(broker),
        }
