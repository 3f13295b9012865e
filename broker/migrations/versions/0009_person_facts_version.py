"""persons.facts_version: on SQLite, a count of changes to what a decision about the person reads, kept by
triggers, so that a disclosure can decide without holding the write lock and commit only if nothing changed

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The triggers as this revision creates them (broker/adapters/orm.py, FACTS_VERSION_DDL, at this revision).
_BUMP = "UPDATE persons SET facts_version = facts_version + 1 WHERE id"
TABLES = ("consents", "relationships", "representations", "records")
TRIGGERS = [
    *(
        statement
        for table in TABLES
        for statement in (
            f"CREATE TRIGGER {table}_facts_insert AFTER INSERT ON {table} BEGIN {_BUMP} = NEW.person_id; END",
            f"CREATE TRIGGER {table}_facts_update AFTER UPDATE ON {table} "
            f"BEGIN {_BUMP} IN (OLD.person_id, NEW.person_id); END",
            f"CREATE TRIGGER {table}_facts_delete AFTER DELETE ON {table} BEGIN {_BUMP} = OLD.person_id; END",
        )
    ),
    "CREATE TRIGGER persons_facts_birth_date AFTER UPDATE OF birth_date ON persons "
    "BEGIN UPDATE persons SET facts_version = facts_version + 1 WHERE id = NEW.id; END",
]
TRIGGER_NAMES = [
    *(f"{table}_facts_{operation}" for table in TABLES for operation in ("insert", "update", "delete")),
    "persons_facts_birth_date",
]


def upgrade() -> None:
    op.add_column("persons", sa.Column("facts_version", sa.Integer(), server_default="0", nullable=False))
    if op.get_bind().dialect.name == "sqlite":
        for statement in TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("persons", schema=None) as batch_op:
        batch_op.drop_column("facts_version")
