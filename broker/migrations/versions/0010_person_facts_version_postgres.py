"""persons.facts_version on PostgreSQL too: the triggers that count changes to what a decision about the person
reads, so that a PostgreSQL disclosure can decide on a snapshot and record its decision in one statement that checks
the version (services/disclosures.py), as SQLite's disclosures do since revision 0009

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Existing persons keep the version they have (0): a version is only ever compared with itself, read before and
after a decision, so where the count starts does not matter.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("consents", "relationships", "representations", "records")


def _function(name: str, persons: str) -> str:
    bump = "UPDATE persons SET facts_version = facts_version + 1 WHERE id IN"
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ "
        f"BEGIN {bump} ({persons}); RETURN NULL; END $$"
    )


# The functions and triggers as this revision creates them (broker/adapters/orm.py, FACTS_VERSION_DDL, at this
# revision).
FUNCTIONS = [
    _function("persons_facts_inserted", "SELECT person_id FROM changed"),
    _function("persons_facts_updated", "SELECT person_id FROM earlier UNION SELECT person_id FROM changed"),
    _function("persons_facts_deleted", "SELECT person_id FROM changed"),
    "CREATE OR REPLACE FUNCTION persons_birth_date_counted() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN NEW.facts_version := OLD.facts_version + 1; RETURN NEW; END $$",
]
TRIGGERS = [
    "CREATE TRIGGER persons_facts_birth_date BEFORE UPDATE OF birth_date ON persons FOR EACH ROW "
    "EXECUTE FUNCTION persons_birth_date_counted()",
    *(
        statement
        for table in TABLES
        for statement in (
            f"CREATE TRIGGER {table}_facts_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS changed "
            "FOR EACH STATEMENT EXECUTE FUNCTION persons_facts_inserted()",
            f"CREATE TRIGGER {table}_facts_update AFTER UPDATE ON {table} REFERENCING OLD TABLE AS earlier "
            "NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION persons_facts_updated()",
            f"CREATE TRIGGER {table}_facts_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS changed "
            "FOR EACH STATEMENT EXECUTE FUNCTION persons_facts_deleted()",
        )
    ),
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in (*FUNCTIONS, *TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS persons_facts_birth_date ON persons")
    for table in TABLES:
        for operation in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_facts_{operation} ON {table}")
    for name in ("persons_facts_inserted", "persons_facts_updated", "persons_facts_deleted", "persons_birth_date_counted"):
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
