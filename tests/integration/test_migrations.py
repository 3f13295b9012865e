"""The Alembic migrations build exactly the schema the ORM describes, on SQLite and on PostgreSQL, and applying
them again changes nothing. (The rest of the suite builds its tables with `create_all`; this is what keeps the
two from drifting apart.)"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, select, text

from broker.adapters.orm import Base, OrganisationRow
from broker.migrations import alembic_config, upgrade

POSTGRES_URL = os.environ.get("BROKER_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not POSTGRES_URL, reason="BROKER_TEST_POSTGRES_URL not set"),
            ],
        ),
    ]
)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no tables: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert POSTGRES_URL
    schema = f"mig_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(empty_database: str) -> Iterator[Engine]:
    engine = create_engine(empty_database)
    yield engine
    engine.dispose()


def schema_of(engine: Engine) -> dict[str, dict[str, Any]]:
    """Tables → their columns (name, nullability, primary key), indexes and foreign keys, as the database has them."""
    inspector = inspect(engine)
    return {
        table: {
            "columns": {c["name"]: c["nullable"] for c in inspector.get_columns(table)},
            "primary_key": sorted(inspector.get_pk_constraint(table)["constrained_columns"]),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)
            ),
        }
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


def test_there_is_one_line_of_migrations(empty_database: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(empty_database)).get_heads()
    assert len(heads) == 1


def test_upgrade_on_an_empty_database_creates_exactly_the_orm_tables_and_columns(
    empty_database: str, engine: Engine
) -> None:
    upgrade(empty_database)
    schema = schema_of(engine)
    assert set(schema) == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        assert schema[name]["columns"] == {c.name: c.nullable for c in table.columns}, name
        assert schema[name]["primary_key"] == sorted(c.name for c in table.primary_key), name
        expected_indexes = sorted((i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes)
        assert [i for i in schema[name]["indexes"] if i in expected_indexes] == expected_indexes, name
        assert schema[name]["foreign_keys"] == sorted(
            (tuple(c.name for c in fk.columns), fk.referred_table.name, tuple(e.column.name for e in fk.elements))
            for fk in table.foreign_key_constraints
        ), name


def test_autogenerate_finds_no_difference_between_the_migrated_database_and_the_orm(
    empty_database: str, engine: Engine
) -> None:
    upgrade(empty_database)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_database_records_the_head_revision(empty_database: str, engine: Engine) -> None:
    upgrade(empty_database)
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head


def test_upgrading_twice_changes_nothing_and_keeps_the_data(empty_database: str, engine: Engine) -> None:
    upgrade(empty_database)
    before = schema_of(engine)
    with engine.begin() as connection:
        connection.execute(
            OrganisationRow.__table__.insert().values(
                id="kela", name="Kela", org_type="kela", created_at=datetime(2026, 1, 15, tzinfo=UTC)
            )
        )
    upgrade(empty_database)
    assert schema_of(engine) == before
    with engine.connect() as connection:
        assert connection.scalars(select(OrganisationRow.__table__.c.id)).all() == ["kela"]


def test_downgrading_to_base_removes_every_table(empty_database: str, engine: Engine) -> None:
    upgrade(empty_database)
    command.downgrade(alembic_config(empty_database), "base")
    assert schema_of(engine) == {}
    upgrade(empty_database)
    assert set(schema_of(engine)) == set(Base.metadata.tables)
