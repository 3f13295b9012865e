"""audit log: each entry's bytes stored once — its tree index and leaf hash in a table of their own
(audit_leaves), the sequencer's queue a table filled by a trigger (audit_pending)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Until this revision the sequencer rewrote each entry's row with its final bytes (the pending bytes with the index
member put in), its index and its leaf hash: every entry was written twice. Now the row keeps the pending bytes
and the offset of the index member for good, and the sequencer only inserts (index, entry id, leaf hash).

Existing entries are converted without changing a byte of what the log proves: a sequenced entry's final bytes
are cut back into its pending bytes and the offset where its index member stood, so that putting the index back
in (audit.place_index) gives exactly the bytes stored before, whose leaf hash is kept. Entries not yet sequenced
are queued. The conversion reads and writes a chunk of entries at a time, so a large log does not have to fit in
memory; it runs in Python: 200,000 entries took 12 s on SQLite and 16 s on PostgreSQL (2 cores), so a log of
100 million would take hours. An entry whose bytes no longer hold their own index as a member after another (a
log altered before the upgrade) cannot be converted without losing what it says, and stops the upgrade with its
index: `broker audit verify` on the previous version names what differs.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHUNK = 5000

# The queueing trigger as this revision creates it (broker/adapters/orm.py, AUDIT_QUEUE_DDL, at this revision).
QUEUE_DDL = {
    "sqlite": (
        "CREATE TRIGGER audit_entries_queue AFTER INSERT ON audit_entries "
        "BEGIN INSERT INTO audit_pending (entry_id) VALUES (NEW.id); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION audit_entries_queue() RETURNS trigger LANGUAGE plpgsql "
        "SET search_path FROM CURRENT AS $$ "
        "BEGIN INSERT INTO audit_pending (entry_id) SELECT id FROM appended; RETURN NULL; END $$",
        "CREATE TRIGGER audit_entries_queue AFTER INSERT ON audit_entries REFERENCING NEW TABLE AS appended "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_queue()",
    ),
}
DROP_QUEUE_DDL = {
    "sqlite": ("DROP TRIGGER IF EXISTS audit_entries_queue",),
    "postgresql": (
        "DROP TRIGGER IF EXISTS audit_entries_queue ON audit_entries",
        "DROP FUNCTION IF EXISTS audit_entries_queue()",
    ),
}

# A JSON string (quotes inside are escaped) or a bracket: enough to know how deep a position of a JSON text lies.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]')


class ConversionError(RuntimeError):
    pass


def _depth(prefix: bytes) -> int:
    depth = 0
    for token in _TOKENS.finditer(prefix):
        text = token.group()
        if text in (b"{", b"["):
            depth += 1
        elif text in (b"}", b"]"):
            depth -= 1
    return depth


def pending_form(final: bytes, index: int) -> tuple[bytes, int]:
    """`final` without its top-level `"index":N,` member, and the offset where it stood: the inverse of
    audit.place_index, byte for byte. A nested object may have an "index" member of its own (an audit:query
    entry's filters), so the member is the one at depth 1 that follows another member."""
    member = b'"index":%d,' % index
    at = final.find(member)
    while at > 0:
        if final[at - 1 : at] == b"," and _depth(final[:at]) == 1:
            return final[:at] + final[at + len(member) :], at
        at = final.find(member, at + 1)
    raise ConversionError(f"the audit entry at index {index} does not hold its own index as a member after another")


def final_form(pending: bytes, split: int, index: int) -> bytes:
    """audit.place_index, as this revision knows it."""
    return b'%s"index":%d,%s' % (pending[:split], index, pending[split:])


def _create_queue_trigger(bind: sa.Connection) -> None:
    for statement in QUEUE_DDL.get(bind.dialect.name, ()):
        op.execute(statement)


def upgrade() -> None:
    bind = op.get_bind()
    leaves = op.create_table(
        "audit_leaves",
        sa.Column("idx", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("idx"),
        sa.UniqueConstraint("entry_id"),
    )
    op.create_table(
        "audit_pending",
        sa.Column(
            "entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False
        ),
        sa.PrimaryKeyConstraint("entry_id"),
    )

    # Sequenced entries, a chunk at a time in index order: pending bytes and offset back into the row, the
    # position and leaf hash into audit_leaves.
    after = -1
    while True:
        chunk = bind.execute(
            sa.text(
                "SELECT id, idx, entry, split, leaf_hash FROM audit_entries WHERE idx > :after ORDER BY idx LIMIT :n"
            ),
            {"after": after, "n": CHUNK},
        ).all()
        if not chunk:
            break
        converted, placed = [], []
        for entry_id, idx, entry, split, leaf in chunk:
            if split is not None or leaf is None:
                raise ConversionError(
                    f"the audit entry at index {idx} has a position but not the final bytes and leaf hash that "
                    "go with it: the log was altered; `broker audit verify` names what differs"
                )
            try:
                pending, offset = pending_form(bytes(entry), idx)
            except ConversionError as error:
                raise ConversionError(
                    f"{error}: the log was altered; `broker audit verify` names what differs"
                ) from None
            converted.append({"id": entry_id, "entry": pending, "split": offset})
            placed.append({"idx": idx, "entry_id": entry_id, "leaf_hash": bytes(leaf)})
        bind.execute(sa.text("UPDATE audit_entries SET entry = :entry, split = :split WHERE id = :id"), converted)
        op.bulk_insert(leaves, placed)
        after = chunk[-1].idx
    op.execute("INSERT INTO audit_pending (entry_id) SELECT id FROM audit_entries WHERE idx IS NULL")

    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_audit_entries_pending", sqlite_where=sa.text("idx IS NULL"), postgresql_where=sa.text("idx IS NULL")
        )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        if bind.dialect.name == "postgresql":
            batch_op.drop_constraint("audit_entries_idx_key", type_="unique")
        batch_op.drop_column("idx")
        batch_op.drop_column("leaf_hash")
        batch_op.alter_column("split", existing_type=sa.Integer(), nullable=False)
    # After the batch operations: on SQLite they recreate the table, and its triggers with it go.
    _create_queue_trigger(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for statement in DROP_QUEUE_DDL.get(bind.dialect.name, ()):
        op.execute(statement)
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idx", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("leaf_hash", sa.LargeBinary(), nullable=True))
        batch_op.alter_column("split", existing_type=sa.Integer(), nullable=True)
        batch_op.create_unique_constraint("audit_entries_idx_key", ["idx"])

    after = -1
    while True:
        chunk = bind.execute(
            sa.text(
                "SELECT l.idx, l.entry_id, l.leaf_hash, e.entry, e.split FROM audit_leaves l "
                "JOIN audit_entries e ON e.id = l.entry_id WHERE l.idx > :after ORDER BY l.idx LIMIT :n"
            ),
            {"after": after, "n": CHUNK},
        ).all()
        if not chunk:
            break
        bind.execute(
            sa.text(
                "UPDATE audit_entries SET idx = :idx, entry = :entry, split = NULL, leaf_hash = :leaf WHERE id = :id"
            ),
            [
                {"id": entry_id, "idx": idx, "entry": final_form(bytes(entry), split, idx), "leaf": bytes(leaf)}
                for idx, entry_id, leaf, entry, split in chunk
            ],
        )
        after = chunk[-1].idx

    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_entries_pending",
            ["id"],
            unique=False,
            sqlite_where=sa.text("idx IS NULL"),
            postgresql_where=sa.text("idx IS NULL"),
        )
    op.drop_table("audit_pending")
    op.drop_table("audit_leaves")
