"""audit log: entries appended without a tree position and sequenced later; stored subtree hashes; signed
checkpoints; disclosures refer to their entry by append id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

Existing entries keep their tree index; their append id is the index + 1 (ids count from 1 in both SQLite and
PostgreSQL), which is also what `disclosures.audit_entry_id` becomes. The subtree hashes of the existing tree are
computed here, so that proofs work for old entries too. Entries are read into memory: logs written before this
revision are the demo's and the test suites', small by construction.
"""

from __future__ import annotations

import json
from hashlib import sha256

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()  # RFC 9162 §2.1.1


def _perfect_nodes(leaves: list[bytes]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    level, current = 0, leaves
    while len(current) > 1:
        level += 1
        current = [_node(current[i], current[i + 1]) for i in range(0, len(current) - 1, 2)]
        rows.extend({"level": level, "idx": i, "hash": h} for i, h in enumerate(current))
    return rows


def upgrade() -> None:
    bind = op.get_bind()
    old_entries = bind.execute(
        sa.text("SELECT idx, entry, leaf_hash, logged_at, event, person_id, organisation FROM audit_entries ORDER BY idx")
    ).all()
    old_actors = bind.execute(sa.text("SELECT idx, actor_id, salt FROM audit_actors")).all()

    op.drop_table('audit_actors')
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_entries_person_id'))
    op.drop_table('audit_entries')

    entries = op.create_table('audit_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('idx', sa.BigInteger(), nullable=True),
    sa.Column('entry', sa.LargeBinary(), nullable=False),
    sa.Column('split', sa.Integer(), nullable=True),
    sa.Column('leaf_hash', sa.LargeBinary(), nullable=True),
    sa.Column('logged_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('person_id', sa.String(length=40), nullable=True),
    sa.Column('organisation', sa.String(length=40), nullable=True),
    sa.Column('category', sa.String(length=40), nullable=True),
    sa.Column('purpose', sa.String(length=40), nullable=True),
    sa.Column('effect', sa.String(length=8), nullable=True),
    sa.Column('basis_kind', sa.String(length=20), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idx')
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entries_pending', ['id'], unique=False,
                              sqlite_where=sa.text('idx IS NULL'), postgresql_where=sa.text('idx IS NULL'))
        batch_op.create_index('ix_audit_entries_organisation_logged', ['organisation', 'logged_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entries_person_id'), ['person_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entries_logged_at'), ['logged_at'], unique=False)

    actors = op.create_table('audit_actors',
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('actor_id', sa.String(length=120), nullable=False),
    sa.Column('salt', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['audit_entries.id'], ),
    sa.PrimaryKeyConstraint('entry_id')
    )
    with op.batch_alter_table('audit_actors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_actors_actor_id'), ['actor_id'], unique=False)

    nodes = op.create_table('audit_nodes',
    sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx')
    )
    op.create_table('audit_checkpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('root', sa.LargeBinary(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('exported_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_checkpoints_size'), ['size'], unique=False)

    op.create_table('audit_verifications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('exported_size', sa.BigInteger(), nullable=True),
    sa.Column('failure_index', sa.BigInteger(), nullable=True),
    sa.Column('failure_kind', sa.String(length=40), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('dpo_reviews',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('rule', sa.String(length=40), nullable=False),
    sa.Column('reviewer', sa.String(length=120), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['audit_entries.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dpo_reviews', schema=None) as batch_op:
        batch_op.create_index('ix_dpo_reviews_entry_rule', ['entry_id', 'rule'], unique=True)

    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exported_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('exported_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audit_entry_id', sa.BigInteger(), nullable=True))
    op.execute("UPDATE disclosures SET audit_entry_id = audit_index + 1")
    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.alter_column('audit_entry_id', existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column('audit_index')

    rows = []
    for idx, data, leaf, logged_at, event, person_id, organisation in old_entries:
        entry = json.loads(bytes(data))
        basis = entry.get("basis")
        rows.append({
            "id": idx + 1, "idx": idx, "entry": bytes(data), "split": None, "leaf_hash": bytes(leaf),
            "logged_at": logged_at, "event": event, "person_id": person_id, "organisation": organisation,
            "category": entry.get("category"), "purpose": entry.get("purpose"), "effect": entry.get("effect"),
            "basis_kind": basis.get("kind") if isinstance(basis, dict) else None,
        })
    if rows:
        op.bulk_insert(entries, rows)
        op.bulk_insert(nodes, _perfect_nodes([row["leaf_hash"] for row in rows]))
    if old_actors:
        op.bulk_insert(actors, [{"entry_id": idx + 1, "actor_id": a, "salt": s} for idx, a, s in old_actors])
    if bind.dialect.name == "postgresql" and rows:
        # Explicit ids do not move the column's sequence; new appends must continue after them.
        op.execute("SELECT setval(pg_get_serial_sequence('audit_entries', 'id'), (SELECT max(id) FROM audit_entries))")


def downgrade() -> None:
    # Entries that were never sequenced have no index in the old layout; the downgrade refuses to drop them.
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM audit_entries WHERE idx IS NULL")).scalar():
        raise RuntimeError("the audit log has entries without a tree position: run the sequencer before downgrading")
    old = bind.execute(
        sa.text("SELECT id, idx, entry, leaf_hash, logged_at, event, person_id, organisation FROM audit_entries")
    ).all()
    ids = {row.id: row.idx for row in old}
    actors = bind.execute(sa.text("SELECT entry_id, actor_id, salt FROM audit_actors")).all()

    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audit_index', sa.BigInteger(), nullable=True))
    for entry_id, idx in ids.items():
        op.execute(sa.text("UPDATE disclosures SET audit_index = :idx WHERE audit_entry_id = :id").bindparams(
            idx=idx, id=entry_id))
    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.alter_column('audit_index', existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column('audit_entry_id')

    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.drop_column('exported_at')
        batch_op.drop_column('exported_size')
    with op.batch_alter_table('dpo_reviews', schema=None) as batch_op:
        batch_op.drop_index('ix_dpo_reviews_entry_rule')
    op.drop_table('dpo_reviews')
    op.drop_table('audit_verifications')
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_checkpoints_size'))
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_nodes')
    with op.batch_alter_table('audit_actors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_actors_actor_id'))
    op.drop_table('audit_actors')
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_entries_logged_at'))
        batch_op.drop_index(batch_op.f('ix_audit_entries_person_id'))
        batch_op.drop_index('ix_audit_entries_organisation_logged')
        batch_op.drop_index('ix_audit_entries_pending')
    op.drop_table('audit_entries')

    entries = op.create_table('audit_entries',
    sa.Column('idx', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('entry', sa.LargeBinary(), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(), nullable=False),
    sa.Column('logged_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('person_id', sa.String(length=40), nullable=True),
    sa.Column('organisation', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('idx')
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entries_person_id'), ['person_id'], unique=False)
    old_actors = op.create_table('audit_actors',
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('actor_id', sa.String(length=120), nullable=False),
    sa.Column('salt', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['idx'], ['audit_entries.idx'], ),
    sa.PrimaryKeyConstraint('idx')
    )
    if old:
        op.bulk_insert(entries, [
            {"idx": r.idx, "entry": r.entry, "leaf_hash": r.leaf_hash, "logged_at": r.logged_at, "event": r.event,
             "person_id": r.person_id, "organisation": r.organisation} for r in old])
    if actors:
        op.bulk_insert(old_actors, [{"idx": ids[a.entry_id], "actor_id": a.actor_id, "salt": a.salt} for a in actors])
