"""The sequencer: gives appended audit entries their tree positions, signs checkpoints and exports them.

Entries are appended inside the transactions of the events they record, with an append id and no position
(broker/services/audit_log.py). The sequencer — one per deployment, elected (broker/adapters/leader.py) —
takes the committed ones from its queue (audit_pending) in append-id order, a batch at a time (default 256),
and in one transaction per batch: gives each the next gap-free index, hashes its final canonical bytes into the
RFC 9162 tree, inserts the index and leaf hash (audit_leaves) — the entry's own row is never written again —
stores the perfect subtree hashes that became complete (so proofs take O(log n) reads), moves the head, and
signs a checkpoint (C2SP tlog-checkpoint in a C2SP signed-note, Ed25519) of the new tree. After the commit it
hands the newest checkpoint to the sink outside the database. An entry waits at most one interval (default 1 s) plus the
time of the batches ahead of it.

Fail closed (issue #5): if no checkpoint has reached the sink for longer than the anchoring window (default
5 minutes), disclosures are refused with 503 (`AuditUnavailable`), because their entries could then be rolled
back unnoticed. Withdrawing a consent and the portal keep working. A quiet log still re-exports its newest
checkpoint every half window, so a healthy broker never trips the window.

Before its first signature an elected sequencer checks the database against the sink's newest checkpoint: a
database restored from an older copy, or rewritten, would otherwise be signed into a second, forked history.
If the check fails the sequencer stops signing (and so disclosures stop once the window passes) until the DPO
has looked: `broker audit verify` names what differs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError

from audit import EMPTY_ROOT, Frontier
from audit.entry import place_index
from audit.errors import AuditError
from audit.note import (
    Verifier,
    format_checkpoint,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from audit.proofs import consistency_nodes, consistency_proof, verify_consistency
from broker.adapters.checkpoint_sink import CheckpointSink, SinkConflict, SinkError, open_sink
from broker.adapters.database import Prepared, unavailability
from broker.adapters.leader import LeaderLock
from broker.adapters.orm import AuditCheckpointRow, AuditEntryRow, AuditHeadRow, AuditPendingRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import BrokerError
from broker.services import Broker

log = logging.getLogger("broker.sequencer")
_T = TypeVar("_T")

HEAD_ID = 1

_HEAD = AuditHeadRow.__table__
_ENTRIES = AuditEntryRow.__table__
_QUEUE = AuditPendingRow.__table__
_CHECKPOINTS = AuditCheckpointRow.__table__

_HEAD_COLUMNS = (_HEAD.c.size, _HEAD.c.frontier, _HEAD.c.root, _HEAD.c.exported_size, _HEAD.c.exported_at)
_READ_HEAD = Prepared(select(*_HEAD_COLUMNS).where(_HEAD.c.id == HEAD_ID))
_READ_HEAD_FOR_UPDATE = Prepared(select(*_HEAD_COLUMNS).where(_HEAD.c.id == HEAD_ID).with_for_update())
_INSERT_HEAD = Prepared(insert(_HEAD))
_MOVE_HEAD = Prepared(
    update(_HEAD)
    .where(_HEAD.c.id == HEAD_ID, _HEAD.c.size == bindparam("old_size"))
    .values(size=bindparam("size"), frontier=bindparam("frontier"), root=bindparam("root"))
)
# The next batch: the first ids in the queue, each then looked up by its primary key. On PostgreSQL the look-up is
# a LATERAL subquery with LIMIT 1, which the planner cannot turn into a join: without statistics (a new table, a
# bulk load not yet analysed) it joined the queue to the whole log by hashing every entry — 0.5 s for a batch
# of 10,000 from 40,000 entries, a scan of the whole log at national scale. SQLite looks rows up by key anyway.
_PENDING = Prepared(
    select(_ENTRIES.c.id, _ENTRIES.c.entry, _ENTRIES.c.split)
    .select_from(_QUEUE.join(_ENTRIES, _ENTRIES.c.id == _QUEUE.c.entry_id))
    .order_by(_QUEUE.c.entry_id)
    .limit(bindparam("limit"))
)
_PENDING_POSTGRES = (
    "SELECT next.entry_id, stored.entry, stored.split"
    " FROM (SELECT entry_id FROM audit_pending ORDER BY entry_id LIMIT %s) AS next"
    " CROSS JOIN LATERAL (SELECT entry, split FROM audit_entries WHERE id = next.entry_id LIMIT 1) AS stored"
    " ORDER BY next.entry_id"
)
_INSERT_CHECKPOINT = Prepared(insert(_CHECKPOINTS).returning(_CHECKPOINTS.c.id))
_EXPORTED = (
    update(_HEAD)
    .where(_HEAD.c.id == HEAD_ID)
    .values(exported_size=bindparam("exported_size"), exported_at=bindparam("exported_at"))
)


class AuditUnavailable(BrokerError):
    """Disclosures wait: the log's newest entries are not yet anchored outside the database."""

    code = "audit_unavailable"
    status = 503


class SequencerHalted(Exception):
    """The database does not extend the newest exported checkpoint: rollback, truncation or a rewrite."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    integrated: int
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class RunResult:
    integrated: int
    size: int
    exported: bool


@dataclass(slots=True)
class PlacedBatch:
    """A batch given its positions, before it is written: the rows of audit_leaves (index, entry id, leaf hash)
    and of audit_nodes (level, index, hash) that it adds."""

    leaves: list[tuple[int, int, bytes]] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)


def place_entries(frontier: Frontier, pending: Iterable[tuple[int, bytes, int]]) -> PlacedBatch:
    """Give each pending entry (append id, pending bytes, split offset), in order, the next index of the tree
    `frontier` holds, and append its leaf to it (the frontier is advanced in place). The leaf hashes the final
    bytes, `audit.place_index(pending, split, index)` — exactly `audit.encode_entry`'s bytes (RFC 9162 §2.1.1:
    SHA-256(0x00 || entry)); only the index and the hash are kept, the bytes are derived again when read."""
    placed = PlacedBatch()
    leaves, nodes = placed.leaves, placed.nodes
    for entry_id, data, split in pending:
        index = frontier.size
        leaf = sha256(b"\x00" + place_index(bytes(data), split, index)).digest()
        nodes.extend(frontier.append_collect(leaf))
        leaves.append((index, entry_id, leaf))
    return placed


def read_pending(uow: UnitOfWork, limit: int) -> list[tuple[int, bytes, int]]:
    """The first `limit` queued entries in append-id order: (append id, stored bytes, offset of the index)."""
    if not uow.postgres:
        return [(row.id, bytes(row.entry), row.split) for row in _PENDING.rows(uow.session, {"limit": limit})]
    # Binary results: bytea as text is hex, twice the bytes to send and decode (a batch of 10,000 entries read in
    # about 60 % of the time).
    connection = uow.session.connection()
    return _on_driver(connection, _PENDING_POSTGRES, lambda driver: _fetch_binary(driver, limit))


def _fetch_binary(driver: Any, limit: int) -> list[tuple[int, bytes, int]]:
    with driver.cursor(binary=True) as cursor:
        cursor.execute(_PENDING_POSTGRES, (limit,))
        return [(int(entry_id), bytes(data), int(split)) for entry_id, data, split in cursor.fetchall()]


def write_placed(uow: UnitOfWork, placed: PlacedBatch) -> None:
    """Insert a placed batch's leaves and subtree hashes and take its entries off the queue, in `uow`'s write
    transaction. Raises RuntimeError if an entry was no longer queued (another sequencer placed it).

    Only new rows are written — about 80 bytes an entry beside the entry's own — never the entries' rows: an
    UPDATE rewrites the whole row (and, on PostgreSQL, a new version of it in every index), twice the log's
    write volume for two columns (docs/audit.md, "Storage"). On PostgreSQL the rows go in with COPY, several
    times faster than a statement per row; on SQLite with the driver's executemany, which runs in C."""
    connection = uow.session.connection()
    entry_ids = [entry_id for _index, entry_id, _leaf in placed.leaves]
    if not entry_ids:
        return
    if uow.postgres:
        _copy(connection, "audit_leaves (idx, entry_id, leaf_hash)", placed.leaves)
        _copy(connection, "audit_nodes (level, idx, hash)", placed.nodes)
        taken = connection.exec_driver_sql(
            "DELETE FROM audit_pending WHERE entry_id = ANY(%s::bigint[])", (entry_ids,)
        ).rowcount
    else:
        connection.exec_driver_sql(
            "INSERT INTO audit_leaves (idx, entry_id, leaf_hash) VALUES (?, ?, ?)", placed.leaves
        )
        if placed.nodes:
            connection.exec_driver_sql("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", placed.nodes)
        taken = connection.exec_driver_sql(
            "DELETE FROM audit_pending WHERE entry_id = ?", [(entry_id,) for entry_id in entry_ids]
        ).rowcount
    if taken != len(entry_ids):  # never give one entry two positions (audit_leaves.entry_id is unique too)
        raise RuntimeError("an audit entry left the queue during sequencing")


def _copy(connection: Connection, target: str, rows: Sequence[tuple[int, int, bytes]]) -> None:
    """COPY `rows` of (integer, integer, bytes) into `target` (a table and its columns) in the connection's
    transaction. The data is written in COPY's text format in one piece — a bytea as `\\x` and hex, the backslash
    doubled (PostgreSQL documentation, COPY, "Text Format"; bytea "Hex Format") — which takes a few milliseconds
    for 10,000 rows where the driver's row-by-row writing took some 150."""
    if not rows:
        return
    statement = f"COPY {target} FROM STDIN"
    data = "".join(f"{first}\t{second}\t\\\\x{blob.hex()}\n" for first, second, blob in rows).encode("ascii")

    def write(driver: Any) -> None:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(data)

    _on_driver(connection, statement, write)


def _on_driver(connection: Connection, statement: str, work: Callable[[Any], _T]) -> _T:
    """Run `work` with the driver's connection, in `connection`'s transaction. A driver error is raised as
    SQLAlchemy's, as a statement's would be, so that an unusable database is still told apart (`unavailability`)
    and a broken connection is not handed out again."""
    driver: Any = connection.connection.driver_connection
    dialect = connection.dialect
    try:
        return work(driver)
    except dialect.loaded_dbapi.Error as error:
        broken = dialect.is_disconnect(error, driver, None)
        if broken and not connection.invalidated:
            connection.invalidate(error)
        raise DBAPIError.instance(
            statement, None, error, dialect.loaded_dbapi.Error, connection_invalidated=broken
        ) from error


def origin_of(broker: Broker) -> str:
    """The log's name in its checkpoints (C2SP tlog-checkpoint: a schema-less URL, no spaces or "+")."""
    configured = broker.settings.audit_origin
    if configured:
        return configured
    host = broker.settings.issuer.split("://", 1)[-1].rstrip("/")
    return f"{host}/audit-log"


def verifier_keys(broker: Broker) -> list[str]:
    """The note verifier keys of every checkpoint key, oldest first (`verifier.key` in an export)."""
    name = origin_of(broker)
    return [verifier_key(name, key.public_key) for key in broker.keys.log_keys()]


def verifiers(broker: Broker) -> list[Verifier]:
    return [parse_verifier_key(key) for key in verifier_keys(broker)]


def read_head(uow: UnitOfWork, *, for_update: bool = False) -> Any | None:
    return (_READ_HEAD_FOR_UPDATE if for_update and uow.postgres else _READ_HEAD).first(uow.session)


class Sequencer:
    """Integrates entries, signs and exports checkpoints. Safe to call from any process: only one at a time
    moves the head (the head row is locked, and moved only from the size read)."""

    def __init__(self, broker: Broker, sink: CheckpointSink | None = None) -> None:
        self.broker = broker
        settings = broker.settings
        self.sink = sink or open_sink(
            settings.audit_sink, instance_path=settings.instance_path, ca_file=settings.audit_sink_ca
        )
        self.batch_size = settings.audit_batch_size
        self.origin = origin_of(broker)
        self._checked_sink = False

    # -- integration -------------------------------------------------------------------------------------------

    def integrate_batch(self, now: datetime) -> BatchResult:
        """Give up to one batch of pending entries their positions and sign a checkpoint of the new tree.

        The batch is read and computed — final bytes, leaf and subtree hashes, the signed checkpoint — in a read
        transaction, and only written in the write transaction: on SQLite every disclosure waits while the
        write lock is held, so the hashing and signing stay outside it (docs/benchmarks.md). Only the sequencer
        gives positions, and the write moves the head only from the size that was read (checked again under
        the row lock), so nothing can come between the two."""
        with self.broker.uow(write=False) as uow:
            head = read_head(uow)
            pending = read_pending(uow, self.batch_size) if head is not None else []
        if head is None:
            self._start_log(now)
            return self.integrate_batch(now)
        frontier = Frontier.from_bytes(head.size, bytes(head.frontier))
        old_size = frontier.size
        if not pending:
            return BatchResult(0, old_size, frontier.root())
        placed = place_entries(frontier, pending)
        root = frontier.root()
        note = self._note(frontier.size, root)
        with self.broker.uow() as uow:
            session = uow.session
            current = read_head(uow, for_update=True)
            if current is None or current.size != old_size:  # another sequencer got there first
                raise RuntimeError("the audit log head moved during sequencing")
            write_placed(uow, placed)
            moved = _MOVE_HEAD.execute(
                session, {"old_size": old_size, "size": frontier.size, "frontier": frontier.to_bytes(), "root": root}
            )
            if moved.rowcount != 1:  # never give two entries one index
                raise RuntimeError("the audit log head moved during sequencing")
            self._store_checkpoint(uow, frontier.size, root, note, now)
            uow.commit()
        return BatchResult(len(pending), frontier.size, root)

    def _start_log(self, now: datetime) -> None:
        """A new log: the head, and a first checkpoint of the empty tree (RFC 9162 §2.1.1: MTH({}) = SHA-256())."""
        empty = Frontier.empty()
        with self.broker.uow() as uow:
            if read_head(uow, for_update=True) is None:
                _INSERT_HEAD.execute(
                    uow.session,
                    {"id": HEAD_ID, "size": 0, "frontier": b"", "root": empty.root(), "exported_size": None},
                )
                self._store_checkpoint(uow, 0, empty.root(), self._note(0, empty.root()), now)
                uow.commit()

    def _note(self, size: int, root: bytes) -> str:
        key = self.broker.keys.current_log_key()
        return sign_note(format_checkpoint(self.origin, size, root), self.origin, key.private_key)

    def _store_checkpoint(self, uow: UnitOfWork, size: int, root: bytes, note: str, now: datetime) -> None:
        _INSERT_CHECKPOINT.execute(
            uow.session, {"size": size, "root": root, "note": note, "signed_at": now, "exported_at": None}
        )

    # -- export ------------------------------------------------------------------------------------------------

    def export(self, now: datetime) -> bool:
        """Hand the newest checkpoint to the sink if it is not there yet, or if the last export is older than
        half the anchoring window (a heartbeat for a quiet log). Returns whether anything was exported."""
        with self.broker.uow(write=False) as uow:
            head = read_head(uow)
            newest = uow.session.execute(
                select(AuditCheckpointRow.id, AuditCheckpointRow.size, AuditCheckpointRow.note)
                .order_by(AuditCheckpointRow.id.desc())
                .limit(1)
            ).first()
        if head is None or newest is None:
            return False
        window = self.broker.settings.audit_anchor_window or 300
        fresh = head.exported_at is not None and now - utc(head.exported_at) < timedelta(seconds=window / 2)
        if head.exported_size == newest.size and fresh:
            return False
        if not self._checked_sink:
            self.check_against_sink()
        self.sink.publish(newest.size, newest.note)
        with self.broker.uow() as uow:
            uow.session.execute(
                update(AuditCheckpointRow).where(AuditCheckpointRow.id == newest.id).values(exported_at=now)
            )
            uow.session.execute(_EXPORTED, {"exported_size": newest.size, "exported_at": now})
            uow.commit()
        self.broker.runtime.pop(_GATE, None)
        return True

    def check_against_sink(self) -> None:
        """Raise SequencerHalted unless the database's tree extends the sink's newest checkpoint."""
        text = self.sink.latest()
        self._checked_sink = True
        if text is None:
            return
        try:
            body, _signers = open_note(text, verifiers(self.broker))
            exported = parse_checkpoint(body)
        except AuditError as error:
            self._checked_sink = False
            raise SequencerHalted(f"the sink's newest checkpoint does not verify: {error}") from None
        if exported.origin != self.origin:
            self._checked_sink = False
            raise SequencerHalted(f"the sink holds checkpoints of another log ({exported.origin!r})")
        with self.broker.uow(write=False) as uow:
            head = read_head(uow)
            size = head.size if head else 0
            if exported.size > size:
                self._checked_sink = False
                raise SequencerHalted(
                    f"the database's log has {size} entries but a checkpoint of {exported.size} was exported: "
                    "the database was rolled back or truncated"
                )
            root = bytes(head.root) if head else EMPTY_ROOT
            if exported.size == size:
                consistent = exported.root == root
            elif exported.size == 0:  # every tree extends the empty one (RFC 9162 §2.1.4 needs 0 < first)
                consistent = exported.root == EMPTY_ROOT
            else:
                try:
                    nodes = load_nodes(uow, consistency_nodes(exported.size, size))
                    proof = consistency_proof(exported.size, size, nodes)
                    verify_consistency(exported.size, size, exported.root, root, proof)
                    consistent = True
                except AuditError:  # a proof that fails, or stored hashes that are missing
                    consistent = False
        if not consistent:
            self._checked_sink = False
            raise SequencerHalted(
                f"the database's log does not extend the exported checkpoint of size {exported.size}: "
                "entries before it were changed"
            )

    # -- a whole round -----------------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> RunResult:
        """Integrate everything pending (batch by batch, a checkpoint each), then export. Returns totals."""
        now = now or self.broker.clock.now()
        total = 0
        while True:
            result = self.integrate_batch(now)
            total += result.integrated
            if result.integrated < self.batch_size:
                break
        exported = self.export(now)
        return RunResult(total, result.size, exported)


def load_nodes(uow: UnitOfWork, wanted: Any) -> dict[tuple[int, int], bytes]:
    """Fetch the stored hashes for (level, index) pairs: level 0 from audit_leaves, the rest from
    audit_nodes. A few dozen keys at most (O(log n)), read in one statement. Raises AuditError if any is missing."""
    found, _size = load_nodes_and_size(uow, wanted)
    missing = {(int(level), int(idx)) for level, idx in wanted} - found.keys()
    if missing:
        raise AuditError(f"the log's stored tree is missing {len(missing)} node(s), e.g. {sorted(missing)[0]}")
    return found


def load_nodes_and_size(uow: UnitOfWork, wanted: Any) -> tuple[dict[tuple[int, int], bytes], int]:
    """`read_nodes_and_size` in the unit of work's transaction."""
    return read_nodes_and_size(uow.session.connection(), wanted)


def read_nodes_and_size(connection: Connection, wanted: Any) -> tuple[dict[tuple[int, int], bytes], int]:
    """The stored hashes that exist among `wanted`, and the tree's size from the head (0 for a new log), in one
    statement: a proof on PostgreSQL is then one round trip (broker/services/audit_read.py runs it outside a
    transaction there: one statement sees one snapshot by itself).

    The statement goes to the driver's cursor as plain SQL with one placeholder per key: building the same
    query as a SQLAlchemy expression (an IN and an OR per level) cost most of an inclusion proof's time
    (docs/benchmarks.md, "Audit log"). Only integers are bound."""
    keys = {(int(level), int(idx)) for level, idx in wanted}
    leaves = sorted(idx for level, idx in keys if level == 0)
    by_level: dict[int, list[int]] = {}
    for level, idx in keys:
        if level > 0:
            by_level.setdefault(level, []).append(idx)
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    # The head's size travels as a row of level -1 (its hash column NULL).
    parts, params = [f"SELECT -1, size, NULL FROM audit_head WHERE id = {mark}"], [HEAD_ID]  # noqa: S608  # nosec B608  # only placeholders
    if leaves:
        # The parentheses go with the placeholders: a lone ")" part in the f-string below makes bandit warn that the
        # suppression on that line matched nothing. The text sent is the same.
        marks = "(" + ", ".join([mark] * len(leaves)) + ")"
        parts.append(f"SELECT 0, idx, leaf_hash FROM audit_leaves WHERE idx IN {marks}")  # noqa: S608  # nosec B608
        params += leaves
    if by_level:
        clauses = []
        for level, ids in sorted(by_level.items()):
            clauses.append(f"(level = {mark} AND idx IN ({', '.join([mark] * len(ids))}))")
            params += [level, *ids]
        where = " OR ".join(clauses)
        parts.append(f"SELECT level, idx, hash FROM audit_nodes WHERE {where}")  # noqa: S608  # nosec B608  # placeholders only, see above
    statement = " UNION ALL ".join(parts)

    def fetch(driver: Any) -> list[Any]:
        cursor = driver.cursor()
        try:
            # Only placeholders are put into the text; every value is bound.
            cursor.execute(statement, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    found: dict[tuple[int, int], bytes] = {}
    size = 0
    for level, idx, node in _on_driver(connection, statement, fetch):
        if level == -1:
            size = int(idx)
        elif node is not None:
            found[(int(level), int(idx))] = bytes(node)
    return found, size


# -- the fail-closed gate ----------------------------------------------------------------------------------------

_GATE = "audit_anchored"  # broker.runtime key: (when read, the export time read)
_GATE_TTL = timedelta(seconds=1)


def require_anchored(broker: Broker, uow: UnitOfWork) -> None:
    """Raise AuditUnavailable when the newest export is older than the anchoring window (None: no gate).

    The export time is read from the head at most once a second per process: the window is minutes long, and
    the read would otherwise be one more statement in every disclosure."""
    window = broker.settings.audit_anchor_window
    if window is None:
        return
    now = broker.clock.now()
    cached = broker.runtime.get(_GATE)
    if cached is not None and now - cached[0] < _GATE_TTL and now >= cached[0]:
        exported_at = cached[1]
    else:
        head = read_head(uow)
        exported_at = utc(head.exported_at) if head is not None and head.exported_at is not None else None
        broker.runtime[_GATE] = (now, exported_at)
    if exported_at is None or now - exported_at > timedelta(seconds=window):
        raise AuditUnavailable(
            "the audit log's checkpoints have not reached their store outside the database recently; "
            "disclosures resume when they do (withdrawing a consent still works)"
        )


# -- the thread every broker process runs ------------------------------------------------------------------------


class SequencerThread:
    """Runs the sequencer while this process holds the election lock; otherwise waits its turn."""

    def __init__(self, broker: Broker, *, interval: float | None = None) -> None:
        self.broker = broker
        self.interval = interval if interval is not None else broker.settings.audit_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = LeaderLock(broker.db)
        self.halted: str | None = None
        self.elected = False  # whether this process has been the sequencer at some point
        # Why the database could not be used in the last round (None: it could): an outage is logged once when it
        # starts and once when the sequencer is back, not every round.
        self.database_unavailable: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-sequencer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._lock.release()

    def _run(self) -> None:
        sequencer: Sequencer | None = None
        while not self._stop.is_set():
            try:
                if self._lock.acquire() and self._lock.still_held():
                    if sequencer is None:
                        sequencer = Sequencer(self.broker)
                        sequencer.check_against_sink()
                        self.elected = True
                        log.info("elected audit sequencer")
                    sequencer.run_once()
                    self.halted = None
                    if self.database_unavailable is not None:
                        log.info("audit sequencer resumed: the database is back")
                        self.database_unavailable = None
                else:
                    sequencer = None
            except SequencerHalted as error:
                self.halted = str(error)
                log.error("audit sequencer halted: %s", error)
                sequencer = None
                self._lock.release()
                self._stop.wait(max(self.interval, 30.0))
                continue
            except (SinkError, SinkConflict) as error:
                log.error("checkpoint export failed: %s", error)
            except Exception as error:  # a database error, a full disk: log it and try again next round
                reason = unavailability(error)
                if reason is None:
                    log.exception("audit sequencer round failed")
                elif self.database_unavailable is None:
                    # Entries appended meanwhile wait in the database; they are sequenced when it is back.
                    log.warning("audit sequencer waits for the database", extra={"reason": reason})
                self.database_unavailable = reason
                sequencer = None
            self._stop.wait(self.interval)
